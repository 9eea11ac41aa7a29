//! The typed client against `capstan apps`: every call the coming components make.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::anyhow;
use capstan_marathon::{
    AppEmbed, Client, ClientError, Group, KillTasks, Killed, ListApps, PathId, TaskState,
};

use crate::support::{Env, WAIT, sleeper};

#[tokio::test]
async fn an_app_is_created_read_listed_scaled_updated_and_deleted_through_the_client() {
    let mut env = Env::start().await;
    let c = &env.client;
    let id = PathId::parse("/it/web");
    let mut def = sleeper("/it/web", 1);
    def.labels = BTreeMap::from([("tier".to_string(), "front".to_string())]);

    let created = c.create_app(&def).await.expect("created");
    assert_eq!(created.app.definition.id, id);
    assert_eq!(created.app.definition.cmd.as_deref(), Some("sleep 1000"));
    assert!(!created.deployment_id.is_empty());
    assert!(
        created
            .app
            .deployments
            .iter()
            .any(|d| d.id == created.deployment_id),
        "{:?}",
        created.app.deployments
    );
    // Marathon's defaults come back filled in.
    assert_eq!(created.app.definition.networks[0].mode, "host");
    assert!(created.app.definition.version.is_some());

    let app = env.wait_running(&id, 1).await;
    let task = &app.tasks.as_deref().expect("tasks")[0];
    assert_eq!(task.app_id, id);
    assert_eq!(task.state, TaskState::Running);
    assert_eq!(task.host, "127.0.0.1");
    assert_eq!(app.tasks_running, 1);

    let all = c
        .list_apps(&ListApps::embedding(&[AppEmbed::Tasks]))
        .await
        .expect("listed");
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].tasks.as_ref().map(Vec::len), Some(1));
    let plain = c.list_apps(&ListApps::default()).await.expect("listed");
    assert_eq!(plain[0].tasks, None);
    let by_label = ListApps {
        label: Some("tier==front".into()),
        ..ListApps::default()
    };
    assert_eq!(c.list_apps(&by_label).await.expect("listed").len(), 1);
    let by_other_label = ListApps {
        label: Some("tier==back".into()),
        ..ListApps::default()
    };
    assert!(
        c.list_apps(&by_other_label)
            .await
            .expect("listed")
            .is_empty()
    );

    let scaled = c.scale_app(&id, 2, false).await.expect("scaled");
    assert!(!scaled.deployment_id.is_empty());
    env.wait_running(&id, 2).await;
    assert_eq!(c.app_tasks(&id).await.expect("tasks").len(), 2);
    assert_eq!(c.list_tasks().await.expect("tasks").len(), 2);

    // A full update replaces the definition and restarts the tasks with the new version.
    let mut changed = c.get_app(&id).await.expect("read").definition;
    changed.cmd = Some("sleep 2000".into());
    let updated = c.update_app(&changed, false).await.expect("updated");
    let app = capstan_testkit::wait_until("tasks of the new version", WAIT, async || {
        let app = c.get_app(&id).await?;
        let tasks = app.tasks.clone().unwrap_or_default();
        let current = tasks
            .iter()
            .filter(|t| t.state == TaskState::Running && t.version == Some(updated.version))
            .count();
        if current == 2 && tasks.len() == 2 && app.deployments.is_empty() {
            Ok(app)
        } else {
            Err(anyhow!("{current} of {} on the new version", tasks.len()))
        }
    })
    .await
    .expect("the update rolls out");
    assert_eq!(app.definition.cmd.as_deref(), Some("sleep 2000"));
    assert_eq!(app.definition.instances, 2);

    let versions = c.app_versions(&id).await.expect("versions");
    assert_eq!(versions.first(), Some(&updated.version));
    let first = *versions.last().expect("the first version");
    let old = c.app_version(&id, first).await.expect("old version");
    assert_eq!(old.cmd.as_deref(), Some("sleep 1000"));
    assert_eq!(old.instances, 1);

    let restarted = c.restart_app(&id, false).await.expect("restarted");
    assert!(!restarted.deployment_id.is_empty());
    env.wait_no_deployments().await;

    c.delete_app(&id, false).await.expect("deleted");
    capstan_testkit::wait_until("the app to be gone", WAIT, async || {
        matches!(c.get_app(&id).await, Err(ClientError::NotFound { .. }))
    })
    .await
    .expect("the app is gone");
    assert!(
        c.list_apps(&ListApps::default())
            .await
            .expect("listed")
            .is_empty()
    );
    env.stop().await;
}

#[tokio::test]
async fn an_invalid_definition_is_a_422_with_violations_naming_the_fields() {
    let mut env = Env::start().await;
    let c = &env.client;
    let mut bad = sleeper("/Bad", 1);
    bad.cpus = 0.0;
    let err = c.create_app(&bad).await.expect_err("invalid");
    assert_eq!(err.status(), Some(422), "{err}");
    let paths: Vec<&str> = err.violations().iter().map(|v| v.path.as_str()).collect();
    assert!(paths.contains(&"/id"), "{paths:?}");
    assert!(paths.contains(&"/cpus"), "{paths:?}");
    assert_eq!(
        err.body().map(|b| b.message.as_str()),
        Some("Object is not valid")
    );
    assert!(err.to_string().contains("/cpus: got 0"), "{err}");

    // Nothing was stored.
    assert!(
        c.list_apps(&ListApps::default())
            .await
            .expect("listed")
            .is_empty()
    );

    // A partial update is validated too.
    let id = PathId::parse("/ok");
    c.create_app(&sleeper("/ok", 1)).await.expect("created");
    env.wait_running(&id, 1).await;
    let err = c
        .update_app_fields(&id, &serde_json::json!({"instances": -1}), false)
        .await
        .expect_err("invalid");
    let paths: Vec<&str> = err.violations().iter().map(|v| v.path.as_str()).collect();
    assert_eq!(paths, ["/instances"], "{err}");
    assert!(matches!(
        c.get_app(&PathId::parse("/missing")).await,
        Err(ClientError::NotFound { .. })
    ));
    env.stop().await;
}

#[tokio::test]
async fn a_change_to_an_app_locked_by_a_deployment_is_a_409_until_forced() {
    let mut env = Env::start().await;
    let c = &env.client;
    // No offers: the deployment that starts the app cannot finish.
    env.master.with(|s| s.paused_offers = true);
    let id = PathId::parse("/locked");
    let created = c.create_app(&sleeper("/locked", 1)).await.expect("created");

    let err = c.scale_app(&id, 3, false).await.expect_err("locked");
    match &err {
        ClientError::Conflict {
            deployments, body, ..
        } => {
            assert_eq!(deployments, std::slice::from_ref(&created.deployment_id));
            assert!(body.message.contains("locked"), "{}", body.message);
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(err.status(), Some(409));
    assert!(matches!(
        c.delete_app(&id, false).await,
        Err(ClientError::Conflict { .. })
    ));
    // Creating it again is a conflict that names no deployment.
    match c.create_app(&sleeper("/locked", 1)).await {
        Err(ClientError::Conflict { deployments, .. }) => assert!(deployments.is_empty()),
        other => panic!("expected a conflict, got {other:?}"),
    }

    let ds = c.list_deployments().await.expect("deployments");
    let d = ds
        .iter()
        .find(|d| d.id == created.deployment_id)
        .expect("the create's deployment");
    assert_eq!(d.affected_apps, std::slice::from_ref(&id));
    assert!(d.total_steps >= 1);

    let forced = c.scale_app(&id, 2, true).await.expect("forced");
    assert_ne!(forced.deployment_id, created.deployment_id);
    assert_eq!(c.get_app(&id).await.expect("read").definition.instances, 2);

    // A forced cancel stops the deployment where it is.
    assert_eq!(
        c.cancel_deployment(&forced.deployment_id, true)
            .await
            .expect("cancelled"),
        None
    );
    assert!(matches!(
        c.cancel_deployment("no-such-deployment", true).await,
        Err(ClientError::NotFound { .. })
    ));
    env.master.with(|s| s.paused_offers = false);
    env.stop().await;
}

#[tokio::test]
async fn tasks_are_killed_by_app_by_id_and_with_scaling() {
    let mut env = Env::start().await;
    let c = &env.client;
    let id = PathId::parse("/k");
    c.create_app(&sleeper("/k", 2)).await.expect("created");
    let app = env.wait_running(&id, 2).await;
    let first = app.tasks.expect("tasks")[0].id.clone();

    match c
        .kill_task(&id, &first, &KillTasks::default())
        .await
        .expect("killed")
    {
        Killed::Tasks(t) => assert_eq!(t.iter().map(|t| &t.id).collect::<Vec<_>>(), [&first]),
        other => panic!("expected the killed task, got {other:?}"),
    }
    // The killed task is replaced.
    capstan_testkit::wait_until("a replacement", WAIT, async || {
        let app = c.get_app(&id).await?;
        let tasks = app.tasks.unwrap_or_default();
        let ok = tasks.len() == 2
            && tasks
                .iter()
                .all(|t| t.id != first && t.state == TaskState::Running);
        if ok {
            Ok(())
        } else {
            Err(anyhow!("{tasks:?}"))
        }
    })
    .await
    .expect("replaced");

    let ids: Vec<String> = c
        .app_tasks(&id)
        .await
        .expect("tasks")
        .into_iter()
        .map(|t| t.id)
        .collect();
    let scale = KillTasks {
        scale: true,
        ..KillTasks::default()
    };
    match c.kill_tasks(&ids[..1], &scale).await.expect("killed") {
        Killed::Deployment(d) => assert!(!d.deployment_id.is_empty()),
        other => panic!("expected a deployment, got {other:?}"),
    }
    let app = env.wait_running(&id, 1).await;
    assert_eq!(app.definition.instances, 1);

    match c.kill_app_tasks(&id, &scale).await.expect("killed") {
        Killed::Deployment(_) => {}
        other => panic!("expected a deployment, got {other:?}"),
    }
    let app = env.wait_running(&id, 0).await;
    assert_eq!(app.definition.instances, 0);
    env.stop().await;
}

#[tokio::test]
async fn groups_info_leader_and_events_speak_the_shared_types() {
    let mut env = Env::start().await;
    let c = &env.client;
    let info = c.info().await.expect("info");
    assert_eq!(info.name, "marathon");
    let leader = c.leader().await.expect("leader");
    assert_eq!(info.leader.as_deref(), Some(leader.as_str()));

    let mut events = c
        .events(&["event_stream_attached", "deployment_success"])
        .await
        .expect("subscribed");
    let attached = next_event(&mut events).await;
    assert_eq!(attached.event_type, "event_stream_attached");
    assert!(attached.timestamp().is_some());

    let group = Group {
        id: PathId::parse("/g"),
        apps: vec![sleeper("/g/a", 1)],
        groups: vec![Group {
            id: PathId::parse("/g/inner"),
            apps: vec![sleeper("/g/inner/b", 1)],
            ..Group::default()
        }],
        ..Group::default()
    };
    let d = c.put_group(&group, false).await.expect("group deployed");
    // The deployment's success arrives on the stream.
    loop {
        let e = next_event(&mut events).await;
        assert_eq!(e.event_type, "deployment_success");
        if e.data["id"] == d.deployment_id.as_str() {
            break;
        }
    }
    let got = c.get_group(&PathId::parse("/g")).await.expect("group");
    assert_eq!(got.apps.len(), 1);
    assert_eq!(got.apps[0].id, PathId::parse("/g/a"));
    assert_eq!(got.groups[0].id, PathId::parse("/g/inner"));
    assert_eq!(got.groups[0].apps[0].id, PathId::parse("/g/inner/b"));
    assert!(got.version.is_some());
    let root = c.get_group(&PathId::root()).await.expect("root");
    assert_eq!(root.groups[0].id, PathId::parse("/g"));
    assert!(matches!(
        c.create_group(&group, false).await,
        Err(ClientError::Conflict { .. })
    ));

    c.delete_group(&PathId::parse("/g"), false)
        .await
        .expect("deleted");
    env.wait_no_deployments().await;
    assert!(matches!(
        c.get_group(&PathId::parse("/g")).await,
        Err(ClientError::NotFound { .. })
    ));
    env.stop().await;
}

#[tokio::test]
async fn a_server_that_does_not_answer_is_a_transport_error_with_its_cause() {
    let port = capstan_testkit::free_port().expect("a free port");
    let c = Client::new(format!("http://127.0.0.1:{port}/"));
    let err = c.info().await.expect_err("nothing listens");
    assert!(matches!(err, ClientError::Transport { .. }), "{err:?}");
    assert_eq!(err.status(), None);
    assert!(std::error::Error::source(&err).is_some());
    assert!(
        err.to_string()
            .starts_with(&format!("GET http://127.0.0.1:{port}/v2/info"))
    );
}

async fn next_event(events: &mut capstan_marathon::EventStream) -> capstan_marathon::Event {
    tokio::time::timeout(Duration::from_secs(20), events.next_event())
        .await
        .expect("an event in time")
        .expect("the stream is open")
        .expect("a decodable event")
}
