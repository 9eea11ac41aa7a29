//! Seed 001 (2013): `http POST :8080/v1/apps/start id=multidis instances=2 mem=512 cpus=1
//! executor=/var/lib/mesos/executors/docker cmd='johncosta/redis'` and `http GET /v1/endpoints`.

use capstan_testkit::wait_until;
use serde_json::json;

use crate::fake_master::FakeMaster;
use crate::support::{Apps, WAIT};

#[tokio::test]
async fn seed_001_httpie_start_answers_204_and_endpoints_list_both_redis_tasks() {
    let master = FakeMaster::start(1).await;
    let apps = Apps::start(&master).await;
    // HTTPie sends every `key=value` as a JSON string.
    let resp = apps
        .http
        .post(format!("{}/v1/apps/start", apps.url))
        .header("content-type", "application/json")
        .header("accept", "application/json, */*")
        .body(
            json!({"id": "multidis", "instances": "2", "mem": "512", "cpus": "1",
            "executor": "/var/lib/mesos/executors/docker", "cmd": "johncosta/redis"})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let app = apps.wait_running("/multidis", 2).await;
    assert_eq!(app["instances"], 2);
    assert_eq!(app["mem"], 512);
    assert_eq!(app["container"]["docker"]["image"], "johncosta/redis");
    let (_, t) = master.live_tasks().remove(0);
    assert_eq!(t.info["container"]["docker"]["image"], "johncosta/redis");
    assert!(
        t.info["command"].get("value").is_none(),
        "the image's own command runs"
    );
    let body = wait_until("endpoints", WAIT, async || {
        let r = apps
            .http
            .get(format!("{}/v1/endpoints", apps.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
        let text = r.text().await.unwrap();
        (text.matches("127.0.0.1:").count() == 2).then_some(text)
    })
    .await
    .unwrap();
    let line = body.lines().next().unwrap();
    let fields: Vec<&str> = line.split(' ').collect();
    assert_eq!(fields[0], "multidis");
    assert_eq!(fields[1], "10000");
    assert!(
        fields[2].starts_with("127.0.0.1:31") && fields[3].starts_with("127.0.0.1:31"),
        "{line}"
    );
    assert!(line.ends_with(' '));
    let json_form: serde_json::Value = apps
        .http
        .get(format!("{}/v1/endpoints", apps.url))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(json_form[0]["instances"].as_array().unwrap().len(), 2);
}
