//! One supervisor per task: launches (or reattaches to) its container, runs its health
//! checks, kills it on request, waits for it to end, removes it, and reports every step to
//! the task manager. It survives a Docker engine restart: while the engine is down it waits,
//! then looks at the container again instead of failing the task.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use capstan_proto::mesos::v1::container_info::docker_info;
use capstan_proto::mesos::v1::{NetworkInfo, TaskInfo, TaskState, network_info, task_status};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::containerizer::{
    ContainerError, ContainerRef, Containerizer, LaunchSpec, Launched, Reattached, Termination,
};
use crate::manager::{EventSender, TaskEvent};
use crate::{fetcher, health};

/// How the supervisor starts.
pub enum Mode {
    Launch(Box<LaunchSpec>),
    /// After an agent restart: find the container the checkpoint names.
    Reattach,
}

pub struct SupervisorCtx {
    pub task_id: String,
    pub container: ContainerRef,
    pub info: TaskInfo,
    pub containerizer: Arc<dyn Containerizer>,
    pub docker_up: watch::Receiver<bool>,
    pub events: EventSender,
    pub kill_rx: watch::Receiver<Option<Duration>>,
    pub advertise_ip: IpAddr,
    /// Which host files `file://` URIs may fetch.
    pub policy: capstan_types::ContainerPolicy,
}

enum Outcome {
    Exited(Termination),
    Missing,
    LaunchFailed(String),
}

/// Aborts the wrapped task when dropped (so aborting a supervisor stops its checker too).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

const RETRY: Duration = Duration::from_secs(1);

pub async fn supervise(mut ctx: SupervisorCtx, mode: Mode) {
    let cz = ctx.containerizer.clone();
    let mut c = ctx.container.clone();
    let mut killing = false;

    // 1. Get a running container.
    let reattaching = matches!(mode, Mode::Reattach);
    let launched = match mode {
        Mode::Launch(spec) => {
            send(&ctx, TaskEvent::Starting).await;
            let uris = ctx
                .info
                .command
                .as_ref()
                .map(|c| c.uris.as_slice())
                .unwrap_or_default();
            match fetcher::fetch_all(uris, &c.sandbox, &ctx.policy).await {
                Err(e) => Err(Outcome::LaunchFailed(e.to_string())),
                Ok(()) => match cz.launch(&c, &spec).await {
                    Ok(l) => {
                        if let Some(pid) = l.pid {
                            send(&ctx, TaskEvent::Pid(pid)).await;
                        }
                        Ok(l)
                    }
                    Err(e) => Err(Outcome::LaunchFailed(e.to_string())),
                },
            }
        }
        Mode::Reattach => loop {
            match cz.reattach(&c).await {
                Ok(Reattached::Running(l)) => break Ok(l),
                Ok(Reattached::Exited(t)) => break Err(Outcome::Exited(t)),
                Ok(Reattached::Missing) => break Err(Outcome::Missing),
                Err(e) => {
                    warn!(task_id = %ctx.task_id, error = %capstan_runtime::Chain(&e), "Cannot reattach yet; retrying");
                    engine_back(&mut ctx.docker_up).await;
                }
            }
        },
    };

    let outcome = match launched {
        Err(o) => o,
        Ok(launched) => {
            let launched = with_host_address(launched, &ctx.info, ctx.advertise_ip);
            c.pid = launched.pid.or(c.pid);
            let event = if reattaching {
                TaskEvent::Reattached(launched.clone())
            } else {
                TaskEvent::Running(launched.clone())
            };
            send(&ctx, event).await;
            // Health checks run for as long as this supervisor does.
            let _checker = ctx.info.health_check.clone().map(|hc| {
                AbortOnDrop(tokio::spawn(health::run(
                    hc,
                    ctx.task_id.clone(),
                    c.clone(),
                    launched.clone(),
                    ctx.info.clone(),
                    cz.clone(),
                    ctx.events.clone(),
                )))
            });
            let mut kill_task: Option<AbortOnDrop> = None;
            loop {
                let res = {
                    let wait = cz.wait(&c);
                    tokio::pin!(wait);
                    loop {
                        tokio::select! {
                            r = &mut wait => break r,
                            changed = ctx.kill_rx.changed(), if !killing => {
                                if changed.is_err() {
                                    killing = true;
                                    continue;
                                }
                                let Some(grace) = *ctx.kill_rx.borrow_and_update() else { continue };
                                killing = true;
                                send(&ctx, TaskEvent::Killing).await;
                                let (cz2, c2) = (cz.clone(), c.clone());
                                kill_task = Some(AbortOnDrop(tokio::spawn(async move {
                                    if let Err(e) = cz2.kill(&c2, grace).await {
                                        warn!(container = %c2.container_id, error = %capstan_runtime::Chain(&e), "Kill failed");
                                    }
                                })));
                            }
                        }
                    }
                };
                match res {
                    Ok(t) => break Outcome::Exited(t),
                    Err(ContainerError::NotFound(_)) => break Outcome::Missing,
                    Err(e) => {
                        warn!(task_id = %ctx.task_id, error = %capstan_runtime::Chain(&e), "Lost track of the container; waiting for the engine");
                        engine_back(&mut ctx.docker_up).await;
                        match cz.reattach(&c).await {
                            Ok(Reattached::Running(_)) | Err(_) => {
                                if killing && kill_task.is_none() {
                                    killing = false;
                                }
                                continue;
                            }
                            Ok(Reattached::Exited(t)) => break Outcome::Exited(t),
                            Ok(Reattached::Missing) => break Outcome::Missing,
                        }
                    }
                }
            }
        }
    };

    // 2. Remove what is left before reporting, so a terminal state means "nothing left".
    //    If the engine is down, report now and keep trying in the background.
    let mut removed = cz.destroy(&c).await.is_ok();
    let (state, reason, message) = terminal_status(&outcome, killing);
    info!(task_id = %ctx.task_id, state = state.as_str_name(), "Supervisor done");
    send(
        &ctx,
        TaskEvent::Terminal {
            state,
            reason,
            message,
        },
    )
    .await;
    while !removed {
        engine_back(&mut ctx.docker_up).await;
        match cz.destroy(&c).await {
            Ok(()) => removed = true,
            Err(e) => {
                warn!(task_id = %ctx.task_id, error = %capstan_runtime::Chain(&e), "Cannot remove the container yet; retrying")
            }
        }
    }
}

/// Host-networked tasks (HOST, or no container) are reachable on the agent's IP; report it
/// like Mesos does, so DNS and load balancers have an address.
fn with_host_address(mut launched: Launched, info: &TaskInfo, ip: IpAddr) -> Launched {
    let network = info
        .container
        .as_ref()
        .and_then(|c| c.docker.as_ref())
        .map(|d| d.network());
    let host = matches!(network, None | Some(docker_info::Network::Host));
    if launched.network_infos.is_empty() && host {
        let protocol = if ip.is_ipv6() {
            network_info::Protocol::IPv6
        } else {
            network_info::Protocol::IPv4
        };
        launched.network_infos.push(NetworkInfo {
            ip_addresses: vec![network_info::IpAddress {
                protocol: Some(protocol as i32),
                ip_address: Some(ip.to_string()),
            }],
            ..Default::default()
        });
    }
    launched
}

fn terminal_status(
    outcome: &Outcome,
    killed: bool,
) -> (TaskState, Option<task_status::Reason>, String) {
    use task_status::Reason;
    match outcome {
        Outcome::LaunchFailed(msg) if killed => (
            TaskState::TaskKilled,
            Some(Reason::TaskKilledDuringLaunch),
            format!("Task killed during launch: {msg}"),
        ),
        Outcome::LaunchFailed(msg) => (
            TaskState::TaskFailed,
            Some(Reason::ContainerLaunchFailed),
            msg.clone(),
        ),
        Outcome::Missing => (
            TaskState::TaskFailed,
            Some(Reason::ExecutorTerminated),
            "Container disappeared while the agent was not watching it".to_owned(),
        ),
        Outcome::Exited(t) if t.oom_killed => (
            TaskState::TaskFailed,
            Some(Reason::ContainerLimitationMemory),
            t.describe(),
        ),
        Outcome::Exited(t) if killed => (
            TaskState::TaskKilled,
            None,
            format!("Task killed: {}", t.describe()),
        ),
        Outcome::Exited(t) if t.succeeded() => (TaskState::TaskFinished, None, t.describe()),
        Outcome::Exited(t) => (
            TaskState::TaskFailed,
            Some(Reason::CommandExecutorFailed),
            t.describe(),
        ),
    }
}

async fn send(ctx: &SupervisorCtx, event: TaskEvent) {
    ctx.events
        .send(&ctx.task_id, &ctx.container.container_id, event)
        .await;
}

/// Waits until the engine answers again (at least [`RETRY`]).
async fn engine_back(up: &mut watch::Receiver<bool>) {
    tokio::time::sleep(RETRY).await;
    let _ = up.wait_for(|u| *u).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exited(code: i64, oom: bool) -> Outcome {
        Outcome::Exited(Termination {
            exit_code: Some(code),
            signal: None,
            oom_killed: oom,
            note: None,
        })
    }

    #[test]
    fn terminations_map_to_mesos_states_and_reasons() {
        use task_status::Reason;
        let cases = [
            (
                exited(0, false),
                false,
                TaskState::TaskFinished,
                None,
                "status 0",
            ),
            (
                exited(3, false),
                false,
                TaskState::TaskFailed,
                Some(Reason::CommandExecutorFailed),
                "status 3",
            ),
            (
                exited(137, true),
                false,
                TaskState::TaskFailed,
                Some(Reason::ContainerLimitationMemory),
                "Memory",
            ),
            (
                exited(143, false),
                true,
                TaskState::TaskKilled,
                None,
                "killed",
            ),
            (
                Outcome::LaunchFailed("Failed to obtain image x".into()),
                false,
                TaskState::TaskFailed,
                Some(Reason::ContainerLaunchFailed),
                "image x",
            ),
            (
                Outcome::Missing,
                false,
                TaskState::TaskFailed,
                Some(Reason::ExecutorTerminated),
                "disappeared",
            ),
        ];
        for (outcome, killed, state, reason, needle) in cases {
            let (s, r, m) = terminal_status(&outcome, killed);
            assert_eq!((s, r), (state, reason));
            assert!(m.contains(needle), "{m}");
        }
    }
}
