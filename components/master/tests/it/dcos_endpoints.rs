//! The Mesos endpoints the dcos CLI and the router use beyond `/master/state`:
//! `/master/state-summary` (and `/state-summary`) in Mesos' summary shape, and the old
//! form-encoded `POST /master/teardown` (and `/master/shutdown`) that `dcos service shutdown`
//! sends without a Content-Type.

use capstan_master::Config;
use serde_json::{Value, json};

use crate::common::*;

/// Every state-summary per-state count, as Mesos writes them.
const COUNTS: [&str; 10] = [
    "TASK_STAGING",
    "TASK_STARTING",
    "TASK_RUNNING",
    "TASK_KILLING",
    "TASK_FINISHED",
    "TASK_KILLED",
    "TASK_FAILED",
    "TASK_LOST",
    "TASK_ERROR",
    "TASK_UNREACHABLE",
];

fn assert_counts(v: &Value, running: u64, what: &str) {
    for c in COUNTS {
        let want = if c == "TASK_RUNNING" { running } else { 0 };
        assert_eq!(v[c], want, "{what} {c}: {v}");
    }
}

#[tokio::test]
async fn dcos_state_summary_lists_agents_and_frameworks_with_task_counts() -> anyhow::Result<()> {
    let m = Master::start().await;
    let agent = m.agent("a1");
    let aid = agent.wait_subscribed(WAIT).await?;
    let mut info = framework_info("web", &["MULTI_ROLE"], 0.0);
    info["webui_url"] = json!("http://10.0.0.7:8080");
    info["hostname"] = json!("sched-host");
    let mut s = Sched::subscribe(&m, info).await?;
    let idle = Sched::subscribe(&m, framework_info("idle", &[], 0.0)).await?;
    let offer = s.offer().await?;
    s.launch(&offer, "t1", "serve").await;
    s.expect_update("t1", "TASK_RUNNING").await?;

    let state = m.get("/master/state").await?;
    for path in ["/master/state-summary", "/state-summary"] {
        let sum = m.get(path).await?;
        assert_eq!(sum["hostname"], state["hostname"], "{path}");
        assert!(sum.get("cluster").is_none(), "no cluster name configured");

        let slaves = sum["slaves"].as_array().expect("slaves");
        assert_eq!(slaves.len(), 1);
        let a = &slaves[0];
        assert_eq!(a["id"], aid.as_str());
        assert_eq!(a["hostname"], "a1");
        assert_eq!(a["pid"], "slave(1)@127.0.0.1:5051");
        assert_eq!(a["port"], 5051);
        assert_eq!(a["active"], true);
        assert!(a["registered_time"].is_number());
        assert!(a["attributes"].is_object());
        assert_eq!(a["resources"]["cpus"], 4.0);
        assert_eq!(a["used_resources"]["cpus"], 0.1);
        assert!(a["offered_resources"].is_object());
        assert!(a["unreserved_resources"].is_object());
        assert_counts(a, 1, "agent");
        assert_eq!(a["framework_ids"], json!([s.framework_id]));

        let fws = sum["frameworks"].as_array().expect("frameworks");
        assert_eq!(fws.len(), 2);
        let web = fws
            .iter()
            .find(|f| f["id"] == s.framework_id.as_str())
            .expect("web framework");
        assert_eq!(web["name"], "web");
        assert_eq!(web["webui_url"], "http://10.0.0.7:8080");
        assert_eq!(web["hostname"], "sched-host");
        assert_eq!(web["active"], true);
        assert_eq!(web["connected"], true);
        assert_eq!(web["capabilities"], json!([{"type": "MULTI_ROLE"}]));
        assert_eq!(web["used_resources"]["cpus"], 0.1);
        assert!(web["offered_resources"].is_object());
        assert!(web.get("pid").is_none(), "HTTP frameworks have no pid");
        assert!(web.get("tasks").is_none(), "a summary, not the full state");
        assert_counts(web, 1, "framework");
        assert_eq!(web["slave_ids"], json!([aid]));

        let other = fws
            .iter()
            .find(|f| f["id"] == idle.framework_id.as_str())
            .expect("idle framework");
        assert_eq!(other["webui_url"], "", "unset webui_url is an empty string");
        assert_eq!(other["slave_ids"], json!([]));
        assert_counts(other, 0, "idle framework");
    }
    // The full state carries webui_url too, "" when unset, under every alias.
    for path in ["/master/state", "/master/state.json", "/state.json"] {
        let st = m.get(path).await?;
        let fws = st["frameworks"].as_array().expect("frameworks");
        let url = |id: &str| {
            fws.iter()
                .find(|f| f["id"] == id)
                .map(|f| f["webui_url"].clone())
        };
        assert_eq!(
            url(&s.framework_id),
            Some(json!("http://10.0.0.7:8080")),
            "{path}"
        );
        assert_eq!(url(&idle.framework_id), Some(json!("")), "{path}");
    }
    Ok(())
}

#[tokio::test]
async fn dcos_state_summary_names_the_cluster_when_configured() -> anyhow::Result<()> {
    let m = Master::start_with(Config {
        cluster: Some("prod-east".into()),
        ..Config::for_tests()
    })
    .await;
    let sum = m.get("/master/state-summary").await?;
    assert_eq!(sum["cluster"], "prod-east");
    assert_eq!(sum["slaves"], json!([]));
    assert_eq!(sum["frameworks"], json!([]));
    let r = m
        .client
        .post(format!("{}/master/state-summary", m.base))
        .send()
        .await?;
    assert_eq!(r.status(), 405);
    Ok(())
}

/// `POST` of a raw body, with the given Content-Type or none (reqwest adds none for a raw
/// string body, as python-requests does for the dcos CLI's).
async fn post_form(
    m: &Master,
    path: &str,
    body: &str,
    content_type: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let mut req = m
        .client
        .post(format!("{}{path}", m.base))
        .body(body.to_string());
    if let Some(ct) = content_type {
        req = req.header("Content-Type", ct);
    }
    let r = req.send().await?;
    let status = r.status().as_u16();
    Ok((status, r.text().await?))
}

async fn is_completed(m: &Master, fid: &str) -> bool {
    m.get("/master/state").await.is_ok_and(|st| {
        let has = |k: &str| {
            st[k]
                .as_array()
                .is_some_and(|a| a.iter().any(|f| f["id"] == fid))
        };
        has("completed_frameworks") && !has("frameworks")
    })
}

#[tokio::test]
async fn dcos_teardown_with_an_untyped_form_body_removes_the_framework() -> anyhow::Result<()> {
    let m = Master::start().await;
    let agent = m.agent("a1");
    agent.wait_subscribed(WAIT).await?;
    let mut s = Sched::subscribe(&m, framework_info("doomed", &[], 3600.0)).await?;
    let offer = s.offer().await?;
    s.launch(&offer, "t1", "serve").await;
    s.expect_update("t1", "TASK_RUNNING").await?;

    let (status, body) = post_form(
        &m,
        "/master/teardown",
        &format!("frameworkId={}", s.framework_id),
        None,
    )
    .await?;
    assert_eq!((status, body.as_str()), (200, ""));
    s.events
        .expect("the framework's ERROR", is_type("ERROR"))
        .await?;
    assert!(is_completed(&m, &s.framework_id).await);
    let st = m.get("/master/state").await?;
    let done = st["completed_frameworks"]
        .as_array()
        .and_then(|a| a.iter().find(|f| f["id"] == s.framework_id.as_str()))
        .cloned()
        .expect("completed framework");
    assert_eq!(done["completed_tasks"][0]["state"], "TASK_KILLED");
    let sum = m.get("/master/state-summary").await?;
    assert_eq!(sum["frameworks"], json!([]));

    // A second teardown of the same id: no longer registered.
    let (status, body) = post_form(
        &m,
        "/master/teardown",
        &format!("frameworkId={}", s.framework_id),
        None,
    )
    .await?;
    assert_eq!(
        (status, body.as_str()),
        (400, "No framework found with specified ID")
    );
    Ok(())
}

#[tokio::test]
async fn dcos_teardown_accepts_a_form_content_type_and_the_old_shutdown_name() -> anyhow::Result<()>
{
    let m = Master::start().await;
    let a = Sched::subscribe(&m, framework_info("a", &[], 0.0)).await?;
    let b = Sched::subscribe(&m, framework_info("b", &[], 0.0)).await?;
    let form = Some("application/x-www-form-urlencoded");
    let (status, _) = post_form(
        &m,
        "/master/teardown",
        &format!("frameworkId={}", a.framework_id),
        form,
    )
    .await?;
    assert_eq!(status, 200);
    // Percent-encoded, among other fields: decoded as a form.
    let encoded = b.framework_id.replace('-', "%2D");
    let (status, _) = post_form(
        &m,
        "/master/shutdown",
        &format!("x=1&frameworkId={encoded}"),
        None,
    )
    .await?;
    assert_eq!(status, 200);
    assert!(is_completed(&m, &a.framework_id).await);
    assert!(is_completed(&m, &b.framework_id).await);
    Ok(())
}

#[tokio::test]
async fn dcos_teardown_rejects_bad_requests_like_mesos() -> anyhow::Result<()> {
    let m = Master::start().await;
    let s = Sched::subscribe(&m, framework_info("kept", &[], 0.0)).await?;
    let cases = [
        (
            "",
            "Missing 'frameworkId' query parameter in the request body",
        ),
        (
            "framework_id=x",
            "Missing 'frameworkId' query parameter in the request body",
        ),
        ("frameworkId=nope", "No framework found with specified ID"),
        ("frameworkId=", "No framework found with specified ID"),
    ];
    for (body, want) in cases {
        let (status, text) = post_form(&m, "/master/teardown", body, None).await?;
        assert_eq!((status, text.as_str()), (400, want), "body {body:?}");
    }
    let (status, text) = post_form(&m, "/master/teardown", "frameworkId=%zz", None).await?;
    assert_eq!(status, 400);
    assert!(text.starts_with("Unable to decode query string"), "{text}");
    let r = m
        .client
        .get(format!("{}/master/teardown", m.base))
        .send()
        .await?;
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    // Nothing was torn down.
    let sum = m.get("/master/state-summary").await?;
    assert_eq!(sum["frameworks"][0]["id"], s.framework_id.as_str());
    Ok(())
}

/// The real `dcos` CLI (PyPI `dcoscli` 0.6.1, unmodified) pointed straight at the master
/// (`core.mesos_master_url`): `dcos service` reads `/master/state.json`, and
/// `dcos service shutdown` posts the untyped teardown form.
#[tokio::test]
async fn dcos_cli_lists_and_shuts_down_a_service_against_the_master() -> anyhow::Result<()> {
    let m = Master::start().await;
    let s = Sched::subscribe(&m, framework_info("svc", &[], 3600.0)).await?;
    let mut cli = capstan_testkit::python::DcosCli::new().await?;
    cli.env("DCOS_URL", m.base.as_str())
        .env("DCOS_MESOS_MASTER_URL", m.base.as_str());

    let out = cli.run(&["service", "--json"]).await?.ok()?;
    let listed: Value = serde_json::from_str(&out.stdout)?;
    assert!(
        listed
            .as_array()
            .is_some_and(|a| a.iter().any(|f| f["id"] == s.framework_id.as_str())),
        "{listed}"
    );
    cli.run(&["service", "shutdown", &s.framework_id])
        .await?
        .ok()?;
    assert!(is_completed(&m, &s.framework_id).await);
    let out = cli.run(&["service", "shutdown", "no-such-id"]).await?;
    assert!(!out.status.success(), "{out:?}");
    Ok(())
}
