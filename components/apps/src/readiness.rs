//! Readiness checks (Marathon's `readinessChecks`), pure: where a task's check is probed,
//! what an answer means, and when a task counts as ready for a deployment step. A task is
//! ready once every check has answered one of `httpStatusCodesForReady`; after that the task
//! is not probed again (readiness gates deployments, unlike health which is watched forever).
//! The probe itself lives in [`crate::health`].

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::model::{NetMode, PortSpec, ReadinessCheck};

/// An HTTP answer as Marathon reports it in `lastResponse`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpResponse {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// The latest result of one readiness check of one task (stored with the task).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ReadinessResult {
    pub name: String,
    pub ready: bool,
    pub last_response: Option<HttpResponse>,
}

/// What a probe saw: an answer, or why there was none (refused, timed out, ...).
pub type ProbeOutcome = Result<HttpResponse, String>;

/// The result an outcome gives: ready if the status is one of `httpStatusCodesForReady`; the
/// response is kept only with `preserveLastResponse`.
pub fn record(check: &ReadinessCheck, outcome: &ProbeOutcome) -> ReadinessResult {
    let ready = outcome
        .as_ref()
        .is_ok_and(|r| check.http_status_codes_for_ready.contains(&r.status));
    ReadinessResult {
        name: check.name.clone(),
        ready,
        last_response: if check.preserve_last_response {
            outcome.as_ref().ok().cloned()
        } else {
            None
        },
    }
}

/// Whether check `index` still needs probing (no result yet, or not ready).
pub fn needs_probe(results: &[ReadinessResult], index: usize) -> bool {
    results.get(index).is_none_or(|r| !r.ready)
}

/// A task is ready when every check has answered ready (trivially without checks).
pub fn task_ready(checks: &[ReadinessCheck], results: &[ReadinessResult]) -> bool {
    (0..checks.len()).all(|i| !needs_probe(results, i))
}

/// Where to probe check `check` of a task: `(host, port)`. The port named `portName` is the
/// task's host port for it; on container networks without a host port it is the container
/// port at the task's IP. `None` if the name is unknown or the task has no such port yet.
pub fn target(
    check: &ReadinessCheck,
    specs: &[PortSpec],
    mode: NetMode,
    host: &str,
    host_ports: &[u32],
    ips: &[String],
) -> Option<(String, u32)> {
    let index = specs
        .iter()
        .position(|s| s.name.as_deref() == Some(check.port_name.as_str()))?;
    let spec = &specs[index];
    let ip = ips.first();
    match (spec.host_port, mode) {
        (Some(_), _) => {
            // Host ports are assigned in spec order to the specs that have one.
            let n = specs[..index]
                .iter()
                .filter(|s| s.host_port.is_some())
                .count();
            let port = *host_ports.get(n)?;
            let host = match (mode, ip) {
                (NetMode::Container, Some(ip)) => ip.clone(),
                _ => host.to_string(),
            };
            Some((host, port))
        }
        (None, NetMode::Container | NetMode::Bridge) => Some((ip?.clone(), spec.container_port?)),
        (None, NetMode::Host) => None,
    }
}

/// One probe to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadinessJob {
    pub task_id: capstan_types::TaskId,
    pub index: usize,
    pub https: bool,
    pub host: String,
    pub port: u32,
    pub path: String,
    pub timeout: std::time::Duration,
}

impl ReadinessJob {
    pub fn new(
        task_id: &capstan_types::TaskId,
        index: usize,
        check: &ReadinessCheck,
        host: String,
        port: u32,
    ) -> ReadinessJob {
        ReadinessJob {
            task_id: task_id.clone(),
            index,
            https: check.protocol == "HTTPS",
            host,
            port,
            path: path_of(check),
            timeout: std::time::Duration::from_secs(check.timeout_seconds.max(1)),
        }
    }

    pub fn url(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{host}:{}{}", self.port, self.path)
    }
}

fn path_of(check: &ReadinessCheck) -> String {
    if check.path.starts_with('/') {
        check.path.clone()
    } else {
        format!("/{}", check.path)
    }
}

/// One `readinessCheckResults` entry: `{name, taskId, ready, lastResponse?}`.
pub fn result_json(task_id: &str, r: &ReadinessResult) -> Value {
    let mut j = json!({"name": r.name, "taskId": task_id, "ready": r.ready});
    if let Some(resp) = &r.last_response {
        j["lastResponse"] = json!(resp);
    }
    j
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn check(codes: &[u16], preserve: bool) -> ReadinessCheck {
        ReadinessCheck {
            http_status_codes_for_ready: codes.to_vec(),
            preserve_last_response: preserve,
            ..ReadinessCheck::default()
        }
    }

    fn resp(status: u16) -> ProbeOutcome {
        Ok(HttpResponse {
            status,
            content_type: "text/plain".into(),
            body: "b".into(),
        })
    }

    #[test]
    fn a_task_is_ready_only_on_a_listed_status_code() {
        let table: [(&[u16], ProbeOutcome, bool); 6] = [
            (&[200], resp(200), true),
            (&[200], resp(503), false),
            (&[200], resp(204), false),
            (&[200, 204], resp(204), true),
            (&[503], resp(503), true),
            (&[200], Err("connection refused".into()), false),
        ];
        for (codes, outcome, ready) in table {
            let r = record(&check(codes, false), &outcome);
            assert_eq!(r.ready, ready, "codes {codes:?}, outcome {outcome:?}");
            assert_eq!(r.name, "readinessCheck");
            assert_eq!(r.last_response, None, "not preserved by default");
        }
    }

    #[test]
    fn the_last_response_is_kept_only_when_asked() {
        let r = record(&check(&[200], true), &resp(503));
        assert_eq!(r.last_response.as_ref().map(|x| x.status), Some(503));
        assert_eq!(
            result_json("t1", &r),
            json!({"name": "readinessCheck", "taskId": "t1", "ready": false,
                "lastResponse": {"status": 503, "contentType": "text/plain", "body": "b"}})
        );
        let r = record(&check(&[200], true), &Err("timed out".into()));
        assert_eq!(r.last_response, None);
        assert_eq!(
            result_json("t1", &r),
            json!({"name": "readinessCheck", "taskId": "t1", "ready": false})
        );
    }

    #[test]
    fn every_check_must_have_answered_ready() {
        let two = [check(&[200], false), check(&[200], false)];
        let ok = ReadinessResult {
            ready: true,
            ..ReadinessResult::default()
        };
        let no = ReadinessResult::default();
        let table: [(&[ReadinessCheck], Vec<ReadinessResult>, bool); 5] = [
            (&[], vec![], true),
            (&two, vec![], false),
            (&two, vec![ok.clone()], false),
            (&two, vec![ok.clone(), no.clone()], false),
            (&two, vec![ok.clone(), ok.clone()], true),
        ];
        for (checks, results, ready) in table {
            assert_eq!(task_ready(checks, &results), ready, "{results:?}");
        }
        assert!(needs_probe(&[ok.clone(), no], 1));
        assert!(!needs_probe(&[ok], 0));
    }

    fn spec(name: &str, host_port: Option<u32>, container_port: Option<u32>) -> PortSpec {
        PortSpec {
            name: Some(name.into()),
            protocol: "tcp".into(),
            host_port,
            container_port,
            service_port: 0,
            labels: BTreeMap::new(),
        }
    }

    #[test]
    fn the_port_name_picks_the_host_port_or_the_container_port() {
        let rc = |name: &str| ReadinessCheck {
            port_name: name.into(),
            ..ReadinessCheck::default()
        };
        let ips = vec!["10.0.0.9".to_string()];
        let host_specs = [
            spec("admin", Some(0), None),
            spec("http-api", Some(0), None),
        ];
        let mixed = [
            spec("metrics", None, Some(9100)),
            spec("http-api", Some(0), Some(80)),
        ];
        let table = [
            (
                rc("http-api"),
                &host_specs[..],
                NetMode::Host,
                vec![31000, 31001],
                Some(("h1".to_string(), 31001)),
            ),
            (
                rc("admin"),
                &host_specs[..],
                NetMode::Host,
                vec![31000, 31001],
                Some(("h1".into(), 31000)),
            ),
            (rc("http-api"), &host_specs[..], NetMode::Host, vec![], None),
            (rc("nope"), &host_specs[..], NetMode::Host, vec![1, 2], None),
            (
                rc("http-api"),
                &mixed[..],
                NetMode::Bridge,
                vec![31005],
                Some(("h1".into(), 31005)),
            ),
            (
                rc("metrics"),
                &mixed[..],
                NetMode::Container,
                vec![31005],
                Some(("10.0.0.9".into(), 9100)),
            ),
            (
                rc("http-api"),
                &mixed[..],
                NetMode::Container,
                vec![31005],
                Some(("10.0.0.9".into(), 31005)),
            ),
        ];
        for (c, specs, mode, ports, want) in table {
            assert_eq!(
                target(&c, specs, mode, "h1", &ports, &ips),
                want,
                "{} {mode:?}",
                c.port_name
            );
        }
    }

    #[test]
    fn urls_use_the_scheme_and_path_of_the_check() {
        let mut c = ReadinessCheck {
            path: "ready".into(),
            ..ReadinessCheck::default()
        };
        assert_eq!(
            ReadinessJob::new(&"t".into(), 0, &c, "h".into(), 80).url(),
            "http://h:80/ready"
        );
        c.protocol = "HTTPS".into();
        c.path = "/v1/ready?x=1".into();
        let job = ReadinessJob::new(&"t".into(), 0, &c, "::1".into(), 443);
        assert!(job.https);
        assert_eq!(job.url(), "https://[::1]:443/v1/ready?x=1");
    }
}
