//! The cluster's container policy: what a task may ask of the host it runs on. Two daemons
//! enforce it from the same rules — apps refuses a definition up front (422 naming the field)
//! and the agent refuses the task itself (`TASK_ERROR`), because any framework can reach an
//! agent through the master without passing apps. It lives here so the two can never disagree.
//!
//! Least privilege by default: no privileged containers, no added capabilities, and no host
//! path outside the task's own sandbox unless the operator lists it. The Docker socket and the
//! host's root are refused whatever the list says, unless privileged containers are allowed
//! (they are root on the host anyway). The rules are pure: paths are judged as written,
//! lexically, never by looking at the host's file system.

use std::path::{Component, Path};

use serde::{Deserialize, Serialize};

/// Host paths that give a container the host whatever the allow list says: the host's root
/// and the container engine's API.
const ALWAYS_REFUSED: &[&str] = &[
    "/",
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/var/run/docker",
    "/run/docker",
    "/run/containerd",
    "/var/run/containerd",
    "/proc",
    "/sys",
    "/dev",
];

/// What containers may ask of their host (`cluster.containers`, copied into the agent's
/// `docker` section and apps' `container_policy`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContainerPolicy {
    /// Privileged containers and added capabilities (`--cap-add`).
    pub allow_privileged: bool,
    /// Absolute host paths (and everything under them) that volumes and `file://` fetches may
    /// name. A relative host path lies inside the task's sandbox and is always allowed.
    pub allowed_host_paths: Vec<String>,
}

impl ContainerPolicy {
    /// Whether a volume (or a fetch) may use `host_path`; the error says why not.
    pub fn check_host_path(&self, host_path: &str) -> Result<(), String> {
        let path = Path::new(host_path);
        if path.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(format!("host path `{host_path}` may not contain '..'"));
        }
        if !path.is_absolute() {
            // Inside the task's sandbox.
            return Ok(());
        }
        let refused = ALWAYS_REFUSED
            .iter()
            .any(|r| same_path(path, Path::new(r)) || (*r != "/" && path.starts_with(r)));
        if refused && !self.allow_privileged {
            return Err(format!(
                "host path `{host_path}` would give the container the host; only allowed \
                 when the cluster allows privileged containers"
            ));
        }
        if self.allow_privileged
            || self
                .allowed_host_paths
                .iter()
                .any(|allowed| path.starts_with(allowed))
        {
            return Ok(());
        }
        Err(if self.allowed_host_paths.is_empty() {
            format!(
                "host path `{host_path}` is not allowed: the cluster's container policy allows \
                 no host paths (cluster.containers.allowed_host_paths)"
            )
        } else {
            format!(
                "host path `{host_path}` is not under an allowed host path ({})",
                self.allowed_host_paths.join(", ")
            )
        })
    }

    /// Whether a privileged container may run.
    pub fn check_privileged(&self) -> Result<(), String> {
        if self.allow_privileged {
            Ok(())
        } else {
            Err(
                "privileged containers are not allowed by the cluster's container policy \
                 (cluster.containers.allow_privileged)"
                    .to_owned(),
            )
        }
    }

    /// Whether a container may add capabilities.
    pub fn check_added_capabilities(&self) -> Result<(), String> {
        if self.allow_privileged {
            Ok(())
        } else {
            Err(
                "adding capabilities is not allowed by the cluster's container policy \
                 (cluster.containers.allow_privileged)"
                    .to_owned(),
            )
        }
    }

    /// Problems with the policy itself, as `(field, message)` under the policy's section.
    pub fn problems(&self) -> Vec<(String, String)> {
        self.allowed_host_paths
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let path = Path::new(p);
                let why = if !path.is_absolute() {
                    "must be an absolute path"
                } else if path.components().any(|c| matches!(c, Component::ParentDir)) {
                    "may not contain '..'"
                } else if same_path(path, Path::new("/")) {
                    "may not be `/` (that is the host: allow privileged containers instead)"
                } else {
                    return None;
                };
                Some((format!("allowed_host_paths[{i}]"), why.to_owned()))
            })
            .collect()
    }
}

/// `a` and `b` name the same path once `.` and repeated or trailing slashes are ignored.
fn same_path(a: &Path, b: &Path) -> bool {
    a.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .eq(b.components().filter(|c| !matches!(c, Component::CurDir)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allowed: &[&str], privileged: bool) -> ContainerPolicy {
        ContainerPolicy {
            allow_privileged: privileged,
            allowed_host_paths: allowed.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn host_paths_are_judged_against_the_allow_list() {
        let p = policy(&["/srv/data", "/var/lib/app/"], false);
        let cases: &[(&str, bool)] = &[
            ("conf", true),
            ("./conf/x", true),
            ("/srv/data", true),
            ("/srv/data/", true),
            ("/srv/data/sub/file", true),
            ("/var/lib/app/x", true),
            ("/srv/database", false),
            ("/srv", false),
            ("/etc", false),
            ("/etc/shadow", false),
            ("/", false),
            ("//", false),
            ("/srv/data/../../etc", false),
            ("../outside", false),
            ("/var/run/docker.sock", false),
            ("/proc/1/root", false),
        ];
        for (path, ok) in cases {
            assert_eq!(p.check_host_path(path).is_ok(), *ok, "{path}");
        }
    }

    #[test]
    fn the_host_root_and_the_engine_socket_need_privileged_even_when_listed() {
        let listed = policy(&["/var/run", "/run"], false);
        assert!(listed.check_host_path("/var/run/docker.sock").is_err());
        assert!(listed.check_host_path("/run/containerd/x").is_err());
        assert!(listed.check_host_path("/var/run/app.sock").is_ok());
        let privileged = policy(&[], true);
        for path in ["/", "/var/run/docker.sock", "/etc/shadow"] {
            assert!(privileged.check_host_path(path).is_ok(), "{path}");
        }
        assert!(privileged.check_host_path("/a/../etc").is_err());
    }

    #[test]
    fn the_default_allows_only_the_sandbox_and_says_where_to_change_it() {
        let p = ContainerPolicy::default();
        assert!(p.check_host_path("data").is_ok());
        let err = p.check_host_path("/tmp").unwrap_err();
        assert!(
            err.contains("cluster.containers.allowed_host_paths"),
            "{err}"
        );
        assert!(p.check_privileged().is_err());
        assert!(p.check_added_capabilities().is_err());
        assert!(policy(&[], true).check_privileged().is_ok());
    }

    #[test]
    fn a_policy_lists_only_absolute_paths_below_the_root() {
        assert!(policy(&["/srv", "/var/lib/x"], false).problems().is_empty());
        let fields: Vec<String> = policy(&["/srv", "rel", "/a/../b", "/"], false)
            .problems()
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        assert_eq!(
            fields,
            [
                "allowed_host_paths[1]",
                "allowed_host_paths[2]",
                "allowed_host_paths[3]"
            ]
        );
    }
}
