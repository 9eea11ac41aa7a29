use super::*;
use crate::readiness;

#[test]
fn a_restart_waits_for_the_new_tasks_readiness_before_killing_old_ones() {
    let mut c = core();
    let id = PathId::parse("/rd");
    let extra = json!({
        "portDefinitions": [{"port": 0, "name": "http-api"}],
        "readinessChecks": [{"name": "warm", "path": "/ready", "portName": "http-api",
            "intervalSeconds": 5, "timeoutSeconds": 1, "httpStatusCodesForReady": [200, 204],
            "preserveLastResponse": true}],
    });
    c.deploy(
        BTreeMap::from([(id.clone(), Some(app("/rd", 1, extra)))]),
        BTreeSet::new(),
        false,
        Timestamp(2_000),
    )
    .unwrap();
    c.offers(&[offer(1)], Timestamp(2_000));
    let first = launched(&mut c).remove(0);
    assert!(
        c.due_readiness_checks(Timestamp(2_050)).is_empty(),
        "not running yet"
    );
    status(&mut c, &first, "TASK_RUNNING", 2_100);
    assert_eq!(c.deployments().len(), 1, "running is not ready");
    let jobs = c.due_readiness_checks(Timestamp(2_100));
    assert_eq!(jobs.len(), 1);
    let port = c.task(&first).unwrap().ports[0];
    assert_eq!(jobs[0].url(), format!("http://h1:{port}/ready"));
    assert!(
        c.due_readiness_checks(Timestamp(2_200)).is_empty(),
        "in flight"
    );
    let answer = |status: u16| {
        Ok(readiness::HttpResponse {
            status,
            content_type: "text/plain".into(),
            body: "warming".into(),
        })
    };
    c.readiness_result(&first, 0, answer(503), Timestamp(2_300));
    let d = c.deployment_json(&c.deployments()[0]);
    let results = &d["currentActions"][0]["readinessCheckResults"];
    assert_eq!(
        results,
        &json!([{"name": "warm", "taskId": first, "ready": false,
            "lastResponse": {"status": 503, "contentType": "text/plain", "body": "warming"}}])
    );
    assert!(c.due_readiness_checks(Timestamp(7_299)).is_empty());
    assert_eq!(c.due_readiness_checks(Timestamp(7_300)).len(), 1);
    c.readiness_result(&first, 0, answer(204), Timestamp(7_400));
    assert!(c.deployments().is_empty(), "ready: the start finished");
    // A restart keeps the old task until the new one is ready.
    c.deploy(
        BTreeMap::new(),
        BTreeSet::from([id.clone()]),
        false,
        Timestamp(8_000),
    )
    .unwrap();
    c.offers(&[offer(2)], Timestamp(8_000));
    let second = launched(&mut c).remove(0);
    status(&mut c, &second, "TASK_RUNNING", 8_100);
    assert!(
        !c.calls
            .iter()
            .map(OutCall::value)
            .any(|x| x["type"] == "KILL"),
        "old task kept"
    );
    let jobs = c.due_readiness_checks(Timestamp(8_100));
    assert_eq!(jobs.len(), 1, "only the new task is probed: {jobs:?}");
    assert_eq!(jobs[0].task_id, second.as_str());
    c.readiness_result(
        &second,
        0,
        Err("connection refused".into()),
        Timestamp(8_200),
    );
    assert!(
        !c.calls
            .iter()
            .map(OutCall::value)
            .any(|x| x["type"] == "KILL")
    );
    c.readiness_result(&second, 0, answer(200), Timestamp(13_200));
    assert!(
        c.calls
            .iter()
            .map(OutCall::value)
            .any(|x| x["type"] == "KILL" && x["kill"]["task_id"]["value"] == first.as_str()),
        "the old task goes once the new one is ready"
    );
    status(&mut c, &first, "TASK_KILLED", 13_300);
    assert!(c.deployments().is_empty());
    let app_json = c.app_json(c.app(&id).unwrap(), false);
    assert_eq!(app_json["readinessCheckResults"][0]["ready"], true);
}
