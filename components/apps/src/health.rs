//! App-run health checks (HTTP, HTTPS, TCP): the pure per-task state machine (grace period,
//! consecutive failures, when to kill) and the probes. COMMAND and MESOS_* checks are handed
//! to the agent in `TaskInfo.health_check`; their results arrive as `TaskStatus.healthy`.

use std::time::Duration;

use crate::model::{HealthCheck, HealthResult, Timestamp};

/// What one check result means for the task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthOutcome {
    /// Nothing to report (still healthy, or a failure inside the grace period).
    Unchanged,
    BecameHealthy,
    /// A failure was counted (the task may already have been unhealthy).
    Failed,
    /// `maxConsecutiveFailures` reached: kill and replace the task.
    Kill,
}

/// Records one probe result. Failures before the first success within
/// `gracePeriodSeconds` of the task starting are ignored.
pub fn record(
    r: &mut HealthResult,
    check: &HealthCheck,
    ok: bool,
    cause: Option<String>,
    now: Timestamp,
    started_at: Option<Timestamp>,
) -> HealthOutcome {
    if ok {
        let was = r.alive;
        r.alive = true;
        r.consecutive_failures = 0;
        r.first_success.get_or_insert(now);
        r.last_success = Some(now);
        return if was {
            HealthOutcome::Unchanged
        } else {
            HealthOutcome::BecameHealthy
        };
    }
    let started = started_at.unwrap_or(now);
    let in_grace = r.first_success.is_none()
        && (now.millis() - started.millis()) < (check.grace_period_seconds as i64) * 1000;
    if in_grace {
        return HealthOutcome::Unchanged;
    }
    r.alive = false;
    r.consecutive_failures += 1;
    r.last_failure = Some(now);
    r.last_failure_cause = cause;
    if check.max_consecutive_failures > 0
        && r.consecutive_failures >= check.max_consecutive_failures
    {
        HealthOutcome::Kill
    } else {
        HealthOutcome::Failed
    }
}

/// One probe to run.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckJob {
    pub task_id: String,
    pub index: usize,
    pub protocol: String,
    pub host: String,
    pub port: u32,
    pub path: String,
    pub timeout: Duration,
    pub ignore_http1xx: bool,
}

/// Runs one probe: HTTP GET must answer 200–399; TCP must accept a connection. HTTPS is
/// probed as a TCP connect (this build has no TLS client).
pub async fn probe(client: &reqwest::Client, job: &CheckJob) -> Result<(), String> {
    let addr = format!("{}:{}", job.host, job.port);
    match job.protocol.as_str() {
        "HTTP" => {
            let url = format!("http://{addr}{}", job.path);
            let resp = tokio::time::timeout(job.timeout, client.get(&url).send())
                .await
                .map_err(|_| format!("GET {url} timed out"))?
                .map_err(|e| format!("GET {url}: {e}"))?;
            let code = resp.status().as_u16();
            if (200..400).contains(&code) || (job.ignore_http1xx && (100..200).contains(&code)) {
                Ok(())
            } else {
                Err(format!("GET {url} answered {code}"))
            }
        }
        _ => {
            tokio::time::timeout(job.timeout, tokio::net::TcpStream::connect(&addr))
                .await
                .map_err(|_| format!("connect {addr} timed out"))?
                .map_err(|e| format!("connect {addr}: {e}"))?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(grace: u64, max: u32) -> HealthCheck {
        HealthCheck {
            grace_period_seconds: grace,
            max_consecutive_failures: max,
            ..HealthCheck::default()
        }
    }

    #[test]
    fn failures_in_grace_period_are_ignored_until_first_success() {
        let c = check(10, 2);
        let mut r = HealthResult::default();
        let start = Timestamp(0);
        assert_eq!(
            record(&mut r, &c, false, None, Timestamp(5_000), Some(start)),
            HealthOutcome::Unchanged
        );
        assert_eq!(r.consecutive_failures, 0);
        assert_eq!(
            record(&mut r, &c, true, None, Timestamp(6_000), Some(start)),
            HealthOutcome::BecameHealthy
        );
        assert_eq!(
            record(
                &mut r,
                &c,
                false,
                Some("boom".into()),
                Timestamp(7_000),
                Some(start)
            ),
            HealthOutcome::Failed
        );
        assert!(!r.alive);
        assert_eq!(
            record(&mut r, &c, false, None, Timestamp(8_000), Some(start)),
            HealthOutcome::Kill
        );
    }

    #[test]
    fn consecutive_failures_after_grace_kill_and_success_resets() {
        let c = check(0, 3);
        let mut r = HealthResult::default();
        for _ in 0..2 {
            assert_eq!(
                record(&mut r, &c, false, None, Timestamp(1), Some(Timestamp(0))),
                HealthOutcome::Failed
            );
        }
        assert_eq!(
            record(&mut r, &c, true, None, Timestamp(2), Some(Timestamp(0))),
            HealthOutcome::BecameHealthy
        );
        assert_eq!(r.consecutive_failures, 0);
        let c0 = check(0, 0);
        for _ in 0..5 {
            assert_eq!(
                record(&mut r, &c0, false, None, Timestamp(3), None),
                HealthOutcome::Failed,
                "0 = never kill"
            );
        }
    }
}
