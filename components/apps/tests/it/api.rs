//! The v2 REST API against apps with a fake master.

use reqwest::Method;
use serde_json::json;

use crate::fake_master::FakeMaster;
use crate::support::{Apps, WAIT, task_ids};
use capstan_testkit::wait_until;

#[tokio::test]
async fn creating_an_app_returns_201_with_marathon_defaults_and_runs_its_tasks() {
    let master = FakeMaster::start(2).await;
    let apps = Apps::start(&master).await;
    let (status, headers, app) = apps
        .req(Method::POST, "/v2/apps", Some(json!({"id": "/prod/web", "cmd": "sleep 1000", "cpus": 0.1, "mem": 32, "instances": 2, "labels": {"DCOS_SERVICE_NAME": "web"}})))
        .await;
    assert_eq!(status, 201, "{app}");
    assert!(headers.get("Marathon-Deployment-Id").is_some());
    assert_eq!(headers.get("location").unwrap(), "/prod/web");
    assert_eq!(app["id"], "/prod/web");
    assert_eq!(app["backoffFactor"], 1.15);
    assert_eq!(
        app["portDefinitions"][0]["port"], 10000,
        "first service port"
    );
    assert_eq!(app["tasksRunning"], 0);
    assert_eq!(app["deployments"].as_array().unwrap().len(), 1);
    let app = apps.wait_running("/prod/web", 2).await;
    let task = &app["tasks"][0];
    assert_eq!(task["appId"], "/prod/web");
    assert_eq!(task["servicePorts"], json!([10000]));
    assert!(
        task["id"]
            .as_str()
            .unwrap()
            .starts_with("prod_web.instance-")
    );
    assert_eq!(task["ipAddresses"][0]["ipAddress"], "127.0.0.1");
    // The TaskInfo the master got, as Marathon builds it.
    let (_, launched) = master.live_tasks().into_iter().next().unwrap();
    let info = launched.info;
    assert_eq!(info["name"], "web.prod");
    assert_eq!(info["discovery"]["name"], "web.prod");
    assert_eq!(info["discovery"]["visibility"], "FRAMEWORK");
    assert_eq!(
        info["discovery"]["labels"]["labels"][0]["key"],
        "DCOS_SERVICE_NAME"
    );
    let env: std::collections::BTreeMap<String, String> =
        info["command"]["environment"]["variables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    v["name"].as_str().unwrap().to_string(),
                    v["value"].as_str().unwrap().to_string(),
                )
            })
            .collect();
    assert_eq!(env["MARATHON_APP_ID"], "/prod/web");
    assert_eq!(env["PORT0"], env["PORT"]);
    assert_eq!(env["PORTS"], env["PORT0"]);
    assert!(env["PORT0"].parse::<u32>().unwrap() >= 31000);
    assert_eq!(env["HOST"], "127.0.0.1");
    assert_eq!(env["MARATHON_APP_LABEL_DCOS_SERVICE_NAME"], "web");
    let tinfo: capstan_proto::mesos::v1::TaskInfo =
        capstan_proto::from_json(&info).expect("valid TaskInfo");
    assert!(tinfo.command.unwrap().shell.unwrap());
    // Every UPDATE with a uuid was acknowledged.
    wait_until("acknowledgements", WAIT, async || {
        master.calls_of("ACKNOWLEDGE").len() >= 4
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn invalid_input_is_rejected_with_marathon_error_shapes() {
    let master = FakeMaster::start(1).await;
    let apps = Apps::start(&master).await;
    let (s, v) = apps.post("/v2/apps", json!({"id": "/Bad", "cmd": "x", "cpus": -1, "upgradeStrategy": {"minimumHealthCapacity": 2}})).await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["message"], "Object is not valid");
    let paths: Vec<&str> = v["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&"/id")
            && paths.contains(&"/cpus")
            && paths.contains(&"/upgradeStrategy/minimumHealthCapacity"),
        "{paths:?}"
    );
    let (s, v) = apps
        .post("/v2/apps", json!({"id": "/a", "cmd": "x", "cpus": "lots"}))
        .await;
    // A JSON type error is 400 "Invalid JSON" with the path, as in Marathon.
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["message"], "Invalid JSON");
    assert_eq!(v["details"][0]["path"], "/cpus");
    let resp = apps
        .http
        .post(format!("{}/v2/apps", apps.url))
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let (s, _) = apps
        .post(
            "/v2/apps",
            json!({"id": "/a", "cmd": "sleep 1", "instances": 0}),
        )
        .await;
    assert_eq!(s, 201);
    let (s, v) = apps
        .post("/v2/apps", json!({"id": "/a", "cmd": "sleep 1"}))
        .await;
    assert_eq!(s, 409);
    assert_eq!(v["message"], "An app with id [/a] already exists.");
    let (s, v) = apps
        .req(Method::GET, "/v2/apps/nope", None)
        .await
        .into_first_and_last();
    assert_eq!(s, 404);
    assert_eq!(v["message"], "App '/nope' does not exist");
    // Nothing stored by rejected requests.
    assert_eq!(
        apps.get("/v2/apps").await["apps"].as_array().unwrap().len(),
        1
    );
}

trait FirstLast {
    fn into_first_and_last(self) -> (u16, serde_json::Value);
}

impl FirstLast for (u16, reqwest::header::HeaderMap, serde_json::Value) {
    fn into_first_and_last(self) -> (u16, serde_json::Value) {
        (self.0, self.2)
    }
}

#[tokio::test]
async fn scale_restart_kill_and_delete_follow_deployments() {
    let master = FakeMaster::start(2).await;
    let apps = Apps::start(&master).await;
    apps.post(
        "/v2/apps",
        json!({"id": "web", "cmd": "sleep 1000", "cpus": 0.1, "mem": 16, "instances": 1}),
    )
    .await;
    apps.wait_running("/web", 1).await;
    // Partial update, as marathon-python's scale_app does; `True`/`False` booleans.
    let (s, h, v) = apps
        .req(
            Method::PUT,
            "/v2/apps//web?force=False",
            Some(json!({"instances": 3})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(v["deploymentId"].is_string() && v["version"].is_string());
    assert_eq!(
        h.get("Marathon-Deployment-Id").unwrap().to_str().unwrap(),
        v["deploymentId"]
    );
    let app = apps.wait_running("/web", 3).await;
    let before = task_ids(&app);
    assert_ne!(
        app["versionInfo"]["lastScalingAt"], app["versionInfo"]["lastConfigChangeAt"],
        "a scale is not a config change"
    );
    // Restart replaces every task.
    let (s, v) = apps.post("/v2/apps/web/restart", json!({})).await;
    assert_eq!(s, 200, "{v}");
    let app = apps.wait_running("/web", 3).await;
    let after = task_ids(&app);
    assert!(
        before.iter().all(|t| !after.contains(t)),
        "restart replaced all tasks"
    );
    // Kill one task with scale=true: instances drop to 2, no replacement.
    let (s, v) = apps
        .delete(&format!("/v2/apps/web/tasks/{}?scale=true", after[0]))
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(v["deploymentId"].is_string());
    let app = apps.wait_running("/web", 2).await;
    assert_eq!(app["instances"], 2);
    // Kill without scale: replaced.
    let victim = task_ids(&app)[0].clone();
    let (s, v) = apps
        .post("/v2/tasks/delete", json!({"ids": [victim]}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["tasks"][0]["id"], victim);
    wait_until("replacement", WAIT, async || {
        let app = apps.get("/v2/apps/web").await;
        let ids = task_ids(&app["app"]);
        ids.len() == 2 && !ids.contains(&victim) && app["app"]["tasksRunning"] == 2
    })
    .await
    .unwrap();
    // Versions: create + scale + restart + scale = 4, newest first; each can be read back.
    let versions = apps.get("/v2/apps/web/versions").await["versions"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(versions.len(), 4, "{versions:?}");
    let oldest = versions.last().unwrap().as_str().unwrap().to_string();
    let v1 = apps.get(&format!("/v2/apps/web/versions/{oldest}")).await;
    assert_eq!(v1["instances"], 1);
    // Roll back to the first version.
    let (s, v) = apps.put("/v2/apps/web", json!({"version": oldest})).await;
    assert_eq!(s, 200, "{v}");
    apps.wait_running("/web", 1).await;
    // Delete kills everything.
    let (s, v) = apps.delete("/v2/apps/web").await;
    assert_eq!(s, 200, "{v}");
    apps.wait_no_deployments().await;
    wait_until("tasks killed", WAIT, async || {
        master.live_tasks().is_empty()
    })
    .await
    .unwrap();
    let (s, _, _) = apps.req(Method::GET, "/v2/apps/web", None).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn a_locked_app_answers_409_unless_forced_and_deployments_can_be_rolled_back() {
    let master = FakeMaster::start(1).await;
    master.with(|s| s.paused_offers = true);
    let apps = Apps::start(&master).await;
    let (s, _) = apps
        .post(
            "/v2/apps",
            json!({"id": "/slow", "cmd": "sleep 1000", "cpus": 0.1, "mem": 16, "instances": 1}),
        )
        .await;
    assert_eq!(s, 201);
    let (s, v) = apps.put("/v2/apps/slow", json!({"instances": 2})).await;
    assert_eq!(s, 409, "{v}");
    assert!(v["message"].as_str().unwrap().contains("locked"));
    assert_eq!(v["deployments"].as_array().unwrap().len(), 1);
    let (s, v) = apps
        .put("/v2/apps/slow?force=true", json!({"instances": 2}))
        .await;
    assert_eq!(s, 200, "{v}");
    let deps = apps.get("/v2/deployments").await;
    assert_eq!(
        deps.as_array().unwrap().len(),
        1,
        "the forced deployment replaced the first"
    );
    let d = &deps[0];
    assert_eq!(d["affectedApps"], json!(["/slow"]));
    assert_eq!(d["currentActions"][0]["action"], "ScaleApplication");
    // DELETE without force = roll back (a new deployment back to 1 instance).
    let id = d["id"].as_str().unwrap().to_string();
    let (s, v) = apps.delete(&format!("/v2/deployments/{id}")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(apps.get("/v2/apps/slow").await["app"]["instances"], 1);
    let deps = apps.get("/v2/deployments").await;
    let id = deps[0]["id"].as_str().unwrap().to_string();
    let (s, _, body) = apps
        .req(
            Method::DELETE,
            &format!("/v2/deployments/{id}?force=true"),
            None,
        )
        .await;
    assert_eq!(s, 202);
    assert_eq!(body, json!(""));
    assert!(
        apps.get("/v2/deployments")
            .await
            .as_array()
            .unwrap()
            .is_empty()
    );
    // The queue says why nothing launches yet (no offers at all) and has the delay block.
    let q = apps.get("/v2/queue").await;
    let item = &q["queue"][0];
    assert_eq!(item["count"], 1);
    assert!(
        item.get("role").is_none(),
        "marathon-python rejects `role` in queue items"
    );
    assert_eq!(item["delay"]["overdue"], true);
    master.with(|s| s.paused_offers = false);
    apps.wait_running("/slow", 1).await;
}

#[tokio::test]
async fn queue_explains_which_resource_or_constraint_ruled_out_how_many_agents() {
    let master = FakeMaster::start(2).await;
    let apps = Apps::start(&master).await;
    apps.post(
        "/v2/apps",
        json!({"id": "/big", "cmd": "x", "cpus": 100, "mem": 16}),
    )
    .await;
    apps.post("/v2/apps", json!({"id": "/picky", "cmd": "x", "cpus": 0.1, "mem": 16, "constraints": [["rack", "LIKE", "r9"]]})).await;
    let q = wait_until("reasons for both apps", WAIT, async || {
        let q = apps.get("/v2/queue?embed=lastUnusedOffers").await;
        let ok = q["queue"].as_array().is_some_and(|items| {
            items.len() == 2
                && items.iter().all(|i| {
                    i["lastUnusedOffers"]
                        .as_array()
                        .is_some_and(|o| o.len() == 2)
                })
        });
        ok.then_some(q)
    })
    .await
    .unwrap();
    let find = |id: &str| {
        q["queue"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["app"]["id"] == id)
            .unwrap()
            .clone()
    };
    let declined = |item: &serde_json::Value, reason: &str| {
        item["processedOffersSummary"]["rejectSummaryLastOffers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["reason"] == reason)
            .unwrap()["declined"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(declined(&find("/big"), "InsufficientCpus"), 2);
    assert_eq!(declined(&find("/picky"), "UnfulfilledConstraint"), 2);
    assert_eq!(
        find("/big")["lastUnusedOffers"][0]["reason"],
        json!(["InsufficientCpus"])
    );
}

#[tokio::test]
async fn failed_tasks_restart_with_backoff_and_report_the_last_failure() {
    let master = FakeMaster::start(1).await;
    let apps = Apps::start(&master).await;
    apps.post("/v2/apps", json!({"id": "/crash", "cmd": "fail now", "cpus": 0.1, "mem": 16, "backoffSeconds": 1, "backoffFactor": 2})).await;
    let app = wait_until("a second launch after the backoff", WAIT, async || {
        let launches = master.calls_of("ACCEPT").len();
        let app = apps.get("/v2/apps/crash").await["app"].clone();
        (launches >= 2 && app["lastTaskFailure"]["state"] == "TASK_FAILED").then_some(app)
    })
    .await
    .unwrap();
    assert_eq!(app["lastTaskFailure"]["appId"], "/crash");
    let q = apps.get("/v2/queue").await;
    assert_eq!(q["queue"][0]["app"]["id"], "/crash");
    // Resetting the delay is allowed.
    let (s, _, _) = apps
        .req(Method::DELETE, "/v2/queue//crash/delay", None)
        .await;
    assert_eq!(s, 204);
}

#[tokio::test]
async fn tasks_endpoints_filter_by_status_and_speak_text() {
    let master = FakeMaster::start(1).await;
    let apps = Apps::start(&master).await;
    apps.post(
        "/v2/apps",
        json!({"id": "/t", "cmd": "sleep 1000", "cpus": 0.1, "mem": 16, "instances": 2}),
    )
    .await;
    apps.wait_running("/t", 2).await;
    assert_eq!(
        apps.get("/v2/tasks?status=running").await["tasks"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        apps.get("/v2/tasks?status=staging").await["tasks"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let text = apps
        .http
        .get(format!("{}/v2/apps/t/tasks", apps.url))
        .header("accept", "text/plain")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let fields: Vec<&str> = text.lines().next().unwrap().split('\t').collect();
    assert_eq!(fields[0], "t");
    assert_eq!(fields[1], "10000");
    assert!(fields[2].starts_with("127.0.0.1:"));
    let (s, v) = apps.delete("/v2/apps/t/tasks?scale=False&wipe=False").await;
    assert_eq!(s, 200);
    assert_eq!(v["tasks"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn groups_deploy_dependencies_first_and_can_be_scaled_and_deleted() {
    let master = FakeMaster::start(2).await;
    let apps = Apps::start(&master).await;
    let (s, v) = apps
        .post(
            "/v2/groups",
            json!({"id": "/shop", "groups": [
                {"id": "db", "apps": [{"id": "pg", "cmd": "sleep 1000", "cpus": 0.1, "mem": 16}]},
                {"id": "fe", "dependencies": ["/shop/db"], "apps": [{"id": "web", "cmd": "sleep 1000", "cpus": 0.1, "mem": 16, "instances": 2}]}
            ]}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let deps = apps.get("/v2/deployments").await;
    let steps = &deps[0]["steps"];
    let actions: Vec<String> = steps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s["actions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| {
                    format!(
                        "{} {}",
                        a["action"].as_str().unwrap(),
                        a["app"].as_str().unwrap()
                    )
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    assert_eq!(
        actions,
        [
            "StartApplication /shop/db/pg,StartApplication /shop/fe/web",
            "ScaleApplication /shop/db/pg",
            "ScaleApplication /shop/fe/web"
        ]
    );
    apps.wait_running("/shop/fe/web", 2).await;
    apps.wait_no_deployments().await;
    // The database was started before the web tier.
    let launches: Vec<String> = master
        .calls_of("ACCEPT")
        .iter()
        .flat_map(|c| {
            c["accept"]["operations"][0]["launch"]["task_infos"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["name"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(launches.first().map(String::as_str), Some("pg.db.shop"));
    let g = apps.get("/v2/groups/shop").await;
    assert_eq!(g["id"], "/shop");
    assert_eq!(g["groups"].as_array().unwrap().len(), 2);
    assert_eq!(apps.get("/v2/groups").await["id"], "/");
    let (s, v) = apps.put("/v2/groups/shop", json!({"scaleBy": 2})).await;
    assert_eq!(s, 200, "{v}");
    apps.wait_running("/shop/fe/web", 4).await;
    let (s, v) = apps.delete("/v2/groups/shop").await;
    assert_eq!(s, 200, "{v}");
    apps.wait_no_deployments().await;
    assert!(
        apps.get("/v2/apps").await["apps"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let (s, _, _) = apps.req(Method::GET, "/v2/groups/shop", None).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn info_leader_ping_metrics_and_list_filters_answer_like_marathon() {
    let master = FakeMaster::start(1).await;
    let apps = Apps::start(&master).await;
    let info = wait_until("framework id", WAIT, async || {
        let i = apps.get("/v2/info").await;
        i["frameworkId"].is_string().then_some(i)
    })
    .await
    .unwrap();
    assert_eq!(info["name"], "marathon");
    assert_eq!(info["marathon_config"]["framework_name"], "marathon");
    assert_eq!(info["marathon_config"]["failover_timeout"], 604_800);
    let leader = apps.get("/v2/leader").await;
    assert_eq!(leader["leader"], info["leader"]);
    let resp = apps
        .http
        .get(format!("{}/ping", apps.url))
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("X-Marathon-Leader").is_some());
    assert_eq!(resp.text().await.unwrap(), "pong");
    assert!(apps.get("/metrics").await["gauges"].is_object());
    apps.post(
        "/v2/apps",
        json!({"id": "/x/a", "cmd": "sleep 1", "instances": 0, "labels": {"env": "prod"}}),
    )
    .await;
    apps.post(
        "/v2/apps",
        json!({"id": "/y/b", "cmd": "other", "instances": 0, "labels": {"env": "dev"}}),
    )
    .await;
    let ids = |v: serde_json::Value| {
        v["apps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(apps.get("/v2/apps?label=env==prod").await), ["/x/a"]);
    assert_eq!(ids(apps.get("/v2/apps?id=y").await), ["/y/b"]);
    assert_eq!(ids(apps.get("/v2/apps?cmd=sleep").await), ["/x/a"]);
    let (s, v) = apps.delete("/v2/leader").await;
    assert_eq!(
        (s, v["message"].as_str()),
        (200, Some("Leadership abdicated"))
    );
}

#[tokio::test]
async fn event_stream_sends_filtered_marathon_events_as_sse() {
    let master = FakeMaster::start(1).await;
    let apps = Apps::start(&master).await;
    let resp = apps
        .http
        .get(format!("{}/v2/events?event_type=status_update_event&event_type=deployment_success&event_type=event_stream_attached", apps.url))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut stream = resp.bytes_stream();
    apps.post(
        "/v2/apps",
        json!({"id": "/ev", "cmd": "sleep 1000", "cpus": 0.1, "mem": 16}),
    )
    .await;
    let mut text = String::new();
    let mut seen = std::collections::BTreeSet::new();
    tokio::time::timeout(WAIT, async {
        use futures::StreamExt;
        while let Some(Ok(chunk)) = stream.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(pos) = text.find("\n\n") {
                let block: String = text.drain(..pos + 2).collect();
                let mut lines = block.lines();
                let ev = lines
                    .next()
                    .unwrap()
                    .strip_prefix("event: ")
                    .unwrap()
                    .to_string();
                let data: serde_json::Value =
                    serde_json::from_str(lines.next().unwrap().strip_prefix("data: ").unwrap())
                        .unwrap();
                assert_eq!(data["eventType"], ev.as_str());
                assert!(data["timestamp"].is_string());
                seen.insert(ev);
            }
            if seen.contains("deployment_success") && seen.contains("status_update_event") {
                break;
            }
        }
    })
    .await
    .expect("events arrive");
    assert!(seen.contains("event_stream_attached"));
    assert!(!seen.contains("deployment_info"), "filtered out");
    let (s, _, _) = apps.req(Method::GET, "/v2/events", None).await;
    assert_eq!(s, 406, "needs Accept: text/event-stream");
}
