use super::*;

#[test]
fn scaling_down_kills_the_surplus_and_kills_are_not_counted_as_failures() {
    let mut c = core();
    let id = PathId::parse("/s");
    c.deploy(
        BTreeMap::from([(id.clone(), Some(app("/s", 3, json!({}))))]),
        BTreeSet::new(),
        false,
        Timestamp(2_000),
    )
    .unwrap();
    let mut ids = Vec::new();
    for (i, t) in [2_000, 3_000, 4_000].into_iter().enumerate() {
        c.offers(&[offer(i as u32)], Timestamp(t));
        let l = launched(&mut c);
        ids.extend(l.clone());
        if i == 0 {
            assert_eq!(l.len(), 3, "all three fit the first offer");
        } else {
            assert!(l.is_empty());
        }
    }
    for id in &ids {
        status(&mut c, id, "TASK_RUNNING", 5_000);
    }
    assert!(c.deployments().is_empty());
    let mut def = c.app(&id).unwrap().def.clone();
    def.instances = 1;
    def.version = None;
    def.version_info = None;
    c.calls.clear();
    c.deploy(
        BTreeMap::from([(id.clone(), Some(def))]),
        BTreeSet::new(),
        false,
        Timestamp(6_000),
    )
    .unwrap();
    let kills: Vec<String> = c
        .calls
        .iter()
        .map(OutCall::value)
        .filter(|x| x["type"] == "KILL")
        .map(|x| x["kill"]["task_id"]["value"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kills.len(), 2);
    for k in &kills {
        status(&mut c, k, "TASK_KILLED", 7_000);
    }
    assert!(c.deployments().is_empty(), "scale-down finished");
    assert_eq!(c.tasks().count(), 1);
    assert_eq!(
        c.app(&id).unwrap().launch.failures,
        0,
        "kills we asked for are not failures"
    );
}

#[test]
fn a_restart_never_drops_below_minimum_health_capacity() {
    let mut c = core();
    let id = PathId::parse("/r");
    let strategy =
        json!({"upgradeStrategy": {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0}});
    c.deploy(
        BTreeMap::from([(id.clone(), Some(app("/r", 4, strategy)))]),
        BTreeSet::new(),
        false,
        Timestamp(2_000),
    )
    .unwrap();
    c.offers(&[offer(1)], Timestamp(2_000));
    for t in launched(&mut c) {
        status(&mut c, &t, "TASK_RUNNING", 2_100);
    }
    c.deploy(
        BTreeMap::new(),
        BTreeSet::from([id.clone()]),
        false,
        Timestamp(3_000),
    )
    .unwrap();
    let mut now = 3_000;
    for round in 0..20 {
        // Kills complete, offers arrive, new tasks start.
        let kills: Vec<String> = c
            .calls
            .iter()
            .map(OutCall::value)
            .filter(|x| x["type"] == "KILL")
            .map(|x| x["kill"]["task_id"]["value"].as_str().unwrap().to_string())
            .collect();
        c.calls.retain(|x| x.kind != "KILL");
        for k in kills {
            status(&mut c, &k, "TASK_KILLED", now);
        }
        let running = c
            .tasks()
            .filter(|t| t.is_running() && t.kill_requested.is_none())
            .count();
        assert!(
            running >= 2 || round == 0,
            "round {round}: only {running} running"
        );
        assert!(
            c.tasks().filter(|t| !t.is_terminal()).count() <= 4,
            "maximumOverCapacity 0"
        );
        now += 100;
        c.offers(&[offer(round + 10)], Timestamp(now));
        for t in launched(&mut c) {
            status(&mut c, &t, "TASK_RUNNING", now);
        }
        if c.deployments().is_empty() {
            break;
        }
    }
    assert!(c.deployments().is_empty(), "restart finished");
    let cfg = c
        .app(&id)
        .unwrap()
        .def
        .version_info
        .as_ref()
        .unwrap()
        .last_config_change_at;
    assert!(c.tasks().all(|t| t.config_version == cfg));
    assert_eq!(c.tasks().count(), 4);
}
