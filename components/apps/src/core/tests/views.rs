use super::*;

#[test]
fn the_app_list_written_as_text_matches_the_app_json_of_each_app() {
    let mut c = core();
    for (id, n) in [("/x", 3), ("/y", 2)] {
        c.deploy(
            BTreeMap::from([(PathId::parse(id), Some(app(id, n, json!({}))))]),
            BTreeSet::new(),
            false,
            Timestamp(2_000),
        )
        .unwrap();
    }
    c.offers(&[offer(1)], Timestamp(2_100));
    let ids = launched(&mut c);
    assert_eq!(ids.len(), 5);
    status(&mut c, &ids[0], "TASK_RUNNING", 2_200);
    let embed = AppEmbed {
        tasks: true,
        last_task_failure: true,
        readiness: true,
    };
    // Twice: the first list renders the texts, the second copies them.
    for _ in 0..2 {
        let listed: Value = serde_json::from_slice(&c.apps_list_json(|_| true, embed)).unwrap();
        let expected: Vec<Value> = c.apps().map(|a| c.app_json(a, true)).collect();
        assert_eq!(listed, json!({ "apps": expected }));
    }
    status(&mut c, &ids[1], "TASK_RUNNING", 2_300);
    let listed: Value = serde_json::from_slice(&c.apps_list_json(|_| true, embed)).unwrap();
    assert_eq!(
        listed["apps"][0]["tasksRunning"], 2,
        "a changed task is rendered anew"
    );
    let running = listed["apps"][0]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["state"] == "TASK_RUNNING")
        .count();
    assert_eq!(running, 2);
}
