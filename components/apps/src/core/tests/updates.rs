use super::*;

#[test]
fn a_failed_task_is_relaunched_only_after_its_backoff_delay() {
    let mut c = core();
    c.deploy(
        BTreeMap::from([(
            PathId::parse("/a"),
            Some(app(
                "/a",
                1,
                json!({"backoffSeconds": 2, "backoffFactor": 2}),
            )),
        )]),
        BTreeSet::new(),
        false,
        Timestamp(2_000),
    )
    .unwrap();
    c.offers(&[offer(1)], Timestamp(2_000));
    let first = launched(&mut c);
    assert_eq!(first.len(), 1);
    status(&mut c, &first[0], "TASK_FAILED", 3_000);
    c.offers(&[offer(2)], Timestamp(4_000));
    assert!(
        c.calls
            .iter()
            .map(OutCall::value)
            .any(|x| x["type"] == "DECLINE")
    );
    assert!(launched(&mut c).is_empty(), "still inside the 2 s delay");
    c.offers(&[offer(3)], Timestamp(5_001));
    let second = launched(&mut c);
    assert_eq!(second.len(), 1);
    status(&mut c, &second[0], "TASK_FAILED", 5_100);
    c.offers(&[offer(4)], Timestamp(8_000));
    assert!(
        launched(&mut c).is_empty(),
        "second failure doubles the delay to 4 s"
    );
    c.offers(&[offer(5)], Timestamp(9_200));
    assert_eq!(launched(&mut c).len(), 1);
}

#[test]
fn a_task_stuck_in_staging_is_killed_and_replaced_after_the_launch_timeout() {
    let mut c = core();
    c.deploy(
        BTreeMap::from([(PathId::parse("/st"), Some(app("/st", 1, json!({}))))]),
        BTreeSet::new(),
        false,
        Timestamp(2_000),
    )
    .unwrap();
    c.offers(&[offer(1)], Timestamp(2_000));
    let first = launched(&mut c).remove(0);
    c.tick(Timestamp(2_000 + 299_000));
    assert!(
        !c.calls
            .iter()
            .map(OutCall::value)
            .any(|x| x["type"] == "KILL")
    );
    c.tick(Timestamp(2_000 + 300_000));
    assert!(
        c.calls
            .iter()
            .map(OutCall::value)
            .any(|x| x["type"] == "KILL" && x["kill"]["task_id"]["value"] == first.as_str())
    );
    c.offers(&[offer(2)], Timestamp(2_000 + 300_100));
    assert_eq!(
        launched(&mut c).len(),
        1,
        "replacement launched while the stuck task is killed"
    );
}

#[test]
fn tasks_are_indexed_by_app_through_launches_kills_and_terminal_updates() {
    let mut c = core();
    let a = PathId::parse("/ia");
    c.deploy(
        BTreeMap::from([(a.clone(), Some(app("/ia", 2, json!({}))))]),
        BTreeSet::new(),
        false,
        Timestamp(2_000),
    )
    .unwrap();
    c.offers(&[offer(1)], Timestamp(2_000));
    let ids = launched(&mut c);
    assert_eq!(c.tasks_of(&a).count(), 2);
    status(&mut c, &ids[0], "TASK_FAILED", 2_100);
    assert_eq!(c.tasks_of(&a).count(), 1);
    assert_eq!(
        c.app(&a).unwrap().launch.queued,
        1,
        "the failed task is queued again"
    );
    c.kill_tasks(
        &[ids[1].clone().into()],
        false,
        true,
        false,
        Timestamp(2_200),
    )
    .unwrap();
    assert_eq!(c.tasks_of(&a).count(), 0);
    assert_eq!(c.app(&a).unwrap().launch.queued, 2);
    assert!(
        c.tasks()
            .all(|t| c.tasks_of(&t.app_id).any(|x| x.id == t.id))
    );
}

#[test]
fn tasks_the_master_could_not_vouch_for_are_reconciled_again_every_few_seconds() {
    let mut c = core();
    c.deploy(
        BTreeMap::from([(PathId::parse("/u"), Some(app("/u", 1, json!({}))))]),
        BTreeSet::new(),
        false,
        Timestamp(2_000),
    )
    .unwrap();
    c.offers(&[offer(1)], Timestamp(2_000));
    let task = launched(&mut c).remove(0);
    status(&mut c, &task, "TASK_RUNNING", 2_100);
    let reconciles = |c: &mut Core| -> Vec<Value> {
        let out = c
            .calls
            .iter()
            .map(OutCall::value)
            .filter(|x| x["type"] == "RECONCILE")
            .collect();
        c.calls.clear();
        out
    };
    c.tick(Timestamp(10_000));
    assert!(
        reconciles(&mut c).is_empty(),
        "a running task is not asked about"
    );
    // The master restarted and its agent has not re-registered yet.
    status(&mut c, &task, "TASK_UNKNOWN", 11_000);
    c.tick(Timestamp(11_000));
    let asked = reconciles(&mut c);
    assert_eq!(asked.len(), 1);
    assert_eq!(
        asked[0]["reconcile"]["tasks"][0]["task_id"]["value"],
        task.as_str()
    );
    c.tick(Timestamp(12_000));
    assert!(
        reconciles(&mut c).is_empty(),
        "not more often than every 5 s"
    );
    c.tick(Timestamp(16_000));
    assert_eq!(reconciles(&mut c).len(), 1);
    status(&mut c, &task, "TASK_RUNNING", 16_500);
    c.tick(Timestamp(30_000));
    assert!(
        reconciles(&mut c).is_empty(),
        "running again: no more questions"
    );
}
