//! Command tasks without a container: a child process in its own process group, with the
//! sandbox as working directory and its stdout/stderr written to the sandbox files.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use futures::future::BoxFuture;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::sync::watch;

use super::{
    ContainerError, ContainerRef, Containerizer, LaunchError, LaunchSpec, Launched, Reattached,
    Termination,
};

const POLL: Duration = Duration::from_millis(200);

type Exit = watch::Receiver<Option<Termination>>;

/// Runs command tasks as processes under the agent.
#[derive(Default)]
pub struct ProcessContainerizer {
    /// Exit watchers by container id. Never held across an await.
    exits: Mutex<HashMap<String, Exit>>,
}

impl ProcessContainerizer {
    pub fn new() -> Self {
        Self::default()
    }

    fn exit_watch(&self, container: &ContainerRef) -> Option<Exit> {
        self.exits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&container.container_id)
            .cloned()
    }

    /// Watches a pid that is not our child (after an agent restart) by polling `/proc`.
    fn watch_foreign(&self, container: &ContainerRef, pid: u32) -> Exit {
        let (tx, rx) = watch::channel(None);
        tokio::spawn(async move {
            while pid_alive(pid) {
                tokio::time::sleep(POLL).await;
            }
            let _ = tx.send(Some(Termination {
                exit_code: None,
                signal: None,
                oom_killed: false,
                note: Some(
                    "exit status unknown: the process ended while the agent was restarting".into(),
                ),
            }));
        });
        self.exits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(container.container_id.clone(), rx.clone());
        rx
    }
}

pub(crate) fn pid_alive(pid: u32) -> bool {
    // A zombie still has a /proc entry; its state letter is Z.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// When `pid` started, in clock ticks after boot (field 22 of `/proc/<pid>/stat`): with the
/// pid it identifies a process across pid reuse.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    // `rest` starts at field 3 (the state).
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

fn signal_group(pid: u32, signal: Signal) {
    if let Ok(p) = i32::try_from(pid) {
        let _ = killpg(Pid::from_raw(p), signal);
    }
}

impl Containerizer for ProcessContainerizer {
    fn launch<'a>(
        &'a self,
        container: &'a ContainerRef,
        spec: &'a LaunchSpec,
    ) -> BoxFuture<'a, Result<Launched, LaunchError>> {
        Box::pin(async move {
            let LaunchSpec::Process(spec) = spec else {
                return Err(LaunchError::Unsupported(
                    "the process containerizer only runs command tasks".into(),
                ));
            };
            let Some((program, args)) = spec.argv.split_first() else {
                return Err(LaunchError::Spawn("empty command".into()));
            };
            let open = |name: &str| {
                std::fs::File::create(container.sandbox.join(name))
                    .map_err(|e| LaunchError::Spawn(format!("cannot create sandbox {name}: {e}")))
            };
            let (stdout, stderr) = (open("stdout")?, open("stderr")?);
            let mut cmd = tokio::process::Command::new(program);
            cmd.args(args)
                .current_dir(&container.sandbox)
                .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .stdin(Stdio::null())
                .stdout(stdout)
                .stderr(stderr)
                .process_group(0)
                .kill_on_drop(false);
            let mut child = cmd
                .spawn()
                .map_err(|e| LaunchError::Spawn(format!("{program}: {e}")))?;
            let pid = child.id();
            let (tx, rx) = watch::channel(None);
            tokio::spawn(async move {
                let term = match child.wait().await {
                    Ok(status) => {
                        use std::os::unix::process::ExitStatusExt;
                        Termination {
                            exit_code: status.code().map(i64::from),
                            signal: status.signal(),
                            oom_killed: false,
                            note: None,
                        }
                    }
                    Err(e) => Termination {
                        exit_code: None,
                        signal: None,
                        oom_killed: false,
                        note: Some(format!("cannot wait for the process: {e}")),
                    },
                };
                let _ = tx.send(Some(term));
            });
            self.exits
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(container.container_id.clone(), rx);
            Ok(Launched {
                network_infos: Vec::new(),
                pid,
                ip: None,
            })
        })
    }

    fn reattach<'a>(
        &'a self,
        container: &'a ContainerRef,
    ) -> BoxFuture<'a, Result<Reattached, ContainerError>> {
        Box::pin(async move {
            match container.pid {
                Some(pid) if pid_alive(pid) => {
                    self.watch_foreign(container, pid);
                    Ok(Reattached::Running(Launched {
                        network_infos: Vec::new(),
                        pid: Some(pid),
                        ip: None,
                    }))
                }
                _ => Ok(Reattached::Exited(Termination {
                    exit_code: None,
                    signal: None,
                    oom_killed: false,
                    note: Some(
                        "exit status unknown: the process ended while the agent was down".into(),
                    ),
                })),
            }
        })
    }

    fn wait<'a>(
        &'a self,
        container: &'a ContainerRef,
    ) -> BoxFuture<'a, Result<Termination, ContainerError>> {
        Box::pin(async move {
            let mut rx = match self.exit_watch(container) {
                Some(rx) => rx,
                None => match container.pid {
                    Some(pid) => self.watch_foreign(container, pid),
                    None => return Err(ContainerError::NotFound(container.container_id.clone())),
                },
            };
            let term = rx
                .wait_for(Option::is_some)
                .await
                .map_err(|_| ContainerError::Other("process watcher ended".into()))?
                .clone()
                .expect("waited for Some");
            Ok(term)
        })
    }

    fn kill<'a>(
        &'a self,
        container: &'a ContainerRef,
        grace: Duration,
    ) -> BoxFuture<'a, Result<(), ContainerError>> {
        Box::pin(async move {
            let Some(pid) = container.pid else {
                return Ok(());
            };
            signal_group(pid, Signal::SIGTERM);
            let ended = async {
                match self.exit_watch(container) {
                    Some(mut rx) => {
                        let _ = rx.wait_for(Option::is_some).await;
                    }
                    None => {
                        while pid_alive(pid) {
                            tokio::time::sleep(POLL).await;
                        }
                    }
                }
            };
            if tokio::time::timeout(grace, ended).await.is_err() {
                signal_group(pid, Signal::SIGKILL);
            }
            Ok(())
        })
    }

    fn destroy<'a>(
        &'a self,
        container: &'a ContainerRef,
    ) -> BoxFuture<'a, Result<(), ContainerError>> {
        Box::pin(async move {
            if let Some(pid) = container.pid {
                // Leftovers of the group (e.g. background children) go too.
                signal_group(pid, Signal::SIGKILL);
            }
            self.exits
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&container.container_id);
            Ok(())
        })
    }

    fn update<'a>(
        &'a self,
        _container: &'a ContainerRef,
        _cpus: f64,
        _mem_mb: f64,
    ) -> BoxFuture<'a, Result<(), ContainerError>> {
        // Process tasks are not isolated; there is nothing to resize.
        Box::pin(async { Ok(()) })
    }

    fn exec<'a>(
        &'a self,
        container: &'a ContainerRef,
        argv: Vec<String>,
        env: Vec<(String, String)>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<i64, ContainerError>> {
        Box::pin(async move {
            let Some((program, args)) = argv.split_first() else {
                return Err(ContainerError::Other("empty command".into()));
            };
            let mut cmd = tokio::process::Command::new(program);
            cmd.args(args)
                .current_dir(&container.sandbox)
                .envs(env)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true);
            let run = async { cmd.status().await };
            match tokio::time::timeout(timeout, run).await {
                Ok(Ok(status)) => Ok(status.code().map(i64::from).unwrap_or(-1)),
                Ok(Err(e)) => Err(ContainerError::Other(e.to_string())),
                Err(_) => Err(ContainerError::Other(format!(
                    "command timed out after {timeout:?}"
                ))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_start_time_is_stable_and_tells_processes_apart() {
        let me = std::process::id();
        let t = process_start_time(me).expect("our own start time");
        assert_eq!(process_start_time(me), Some(t));
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let other = process_start_time(child.id()).expect("child start time");
        assert!(other >= t);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(process_start_time(child.id()), None);
        assert_eq!(process_start_time(u32::MAX), None);
    }
}
