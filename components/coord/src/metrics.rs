//! Prometheus metrics: raft progress, per-operation request latencies and refused peer
//! requests (with a rate-limited log of them).

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Operations timed by the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Get,
    List,
    Put,
    Delete,
    Txn,
    Watch,
    LeaseGrant,
    LeaseKeepAlive,
    LeaseRevoke,
}

const OPS: [(Op, &str); 9] = [
    (Op::Get, "get"),
    (Op::List, "list"),
    (Op::Put, "put"),
    (Op::Delete, "delete"),
    (Op::Txn, "txn"),
    (Op::Watch, "watch"),
    (Op::LeaseGrant, "lease_grant"),
    (Op::LeaseKeepAlive, "lease_keepalive"),
    (Op::LeaseRevoke, "lease_revoke"),
];

/// Bucket upper bounds in seconds.
const BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
    errors: AtomicU64,
}

#[derive(Default)]
pub(crate) struct Metrics {
    pub leader_changes: AtomicU64,
    ops: [Histogram; OPS.len()],
    /// Members-only requests refused for a missing or wrong peer token.
    peer_refused: AtomicU64,
    last_refusal_log: Mutex<Option<Instant>>,
    /// Requests refused in strict mode for their (missing or lesser) node certificate.
    certificate_refused: AtomicU64,
    last_certificate_log: Mutex<Option<Instant>>,
}

/// Raft numbers sampled when rendering.
pub(crate) struct RaftSample {
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_log_index: u64,
    pub is_leader: bool,
    pub revision: u64,
    pub keys: usize,
}

impl Metrics {
    /// Counts a members-only request refused for its peer token (`wrong`: one was sent);
    /// logs it at most every 10 s, so a flood of them does not flood the log.
    pub(crate) fn peer_refused(&self, path: &str, from: &str, wrong: bool) {
        let n = self.peer_refused.fetch_add(1, Ordering::Relaxed) + 1;
        let Ok(mut last) = self.last_refusal_log.lock() else {
            return;
        };
        if last.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            *last = Some(Instant::now());
            tracing::warn!(
                path,
                from,
                wrong_token = wrong,
                refused_so_far = n,
                "Refused a members-only request without the cluster's peer token"
            );
        }
    }

    /// Counts a request refused in strict mode for its certificate (`who`: the node that
    /// presented one, or `anonymous`); logs it at most every 10 s.
    pub(crate) fn certificate_refused(&self, path: &str, from: &str, who: &str) {
        let n = self.certificate_refused.fetch_add(1, Ordering::Relaxed) + 1;
        let Ok(mut last) = self.last_certificate_log.lock() else {
            return;
        };
        if last.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            *last = Some(Instant::now());
            tracing::warn!(
                path,
                from,
                principal = who,
                refused_so_far = n,
                "Refused a request without the node certificate it needs"
            );
        }
    }

    pub(crate) fn observe(&self, op: Op, elapsed: Duration, ok: bool) {
        let i = OPS.iter().position(|(o, _)| *o == op).unwrap_or(0);
        let h = &self.ops[i];
        let secs = elapsed.as_secs_f64();
        for (b, bound) in h.buckets.iter().zip(BUCKETS) {
            if secs <= bound {
                b.fetch_add(1, Ordering::Relaxed);
            }
        }
        h.count.fetch_add(1, Ordering::Relaxed);
        h.sum_micros.fetch_add(
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        if !ok {
            h.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn render(&self, s: &RaftSample) -> String {
        let mut out = String::new();
        let gauge = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        gauge(&mut out, "capstan_coord_term", "Current raft term.", s.term);
        gauge(
            &mut out,
            "capstan_coord_commit_index",
            "Raft commit index.",
            s.commit_index,
        );
        gauge(
            &mut out,
            "capstan_coord_applied_index",
            "Last log index applied to the state machine.",
            s.applied_index,
        );
        gauge(
            &mut out,
            "capstan_coord_last_log_index",
            "Last log index stored.",
            s.last_log_index,
        );
        gauge(
            &mut out,
            "capstan_coord_is_leader",
            "1 if this member leads.",
            u64::from(s.is_leader),
        );
        gauge(
            &mut out,
            "capstan_coord_revision",
            "Key-value revision.",
            s.revision,
        );
        gauge(
            &mut out,
            "capstan_coord_keys",
            "Number of keys.",
            s.keys as u64,
        );
        let _ = writeln!(
            out,
            "# HELP capstan_coord_leader_changes_total Leader changes seen by this member.\n# TYPE capstan_coord_leader_changes_total counter\ncapstan_coord_leader_changes_total {}",
            self.leader_changes.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP capstan_coord_peer_refused_total Members-only requests refused for a missing or wrong peer token.\n# TYPE capstan_coord_peer_refused_total counter\ncapstan_coord_peer_refused_total {}",
            self.peer_refused.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP capstan_coord_certificate_refused_total Requests refused in strict mode for a missing or lesser node certificate.\n# TYPE capstan_coord_certificate_refused_total counter\ncapstan_coord_certificate_refused_total {}",
            self.certificate_refused.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP capstan_coord_request_duration_seconds API request latency.\n# TYPE capstan_coord_request_duration_seconds histogram"
        );
        for ((_, name), h) in OPS.iter().zip(&self.ops) {
            for (b, bound) in h.buckets.iter().zip(BUCKETS) {
                let _ = writeln!(
                    out,
                    "capstan_coord_request_duration_seconds_bucket{{op=\"{name}\",le=\"{bound}\"}} {}",
                    b.load(Ordering::Relaxed)
                );
            }
            let count = h.count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "capstan_coord_request_duration_seconds_bucket{{op=\"{name}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "capstan_coord_request_duration_seconds_sum{{op=\"{name}\"}} {}",
                h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
            );
            let _ = writeln!(
                out,
                "capstan_coord_request_duration_seconds_count{{op=\"{name}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP capstan_coord_request_errors_total API requests answered with an error.\n# TYPE capstan_coord_request_errors_total counter"
        );
        for ((_, name), h) in OPS.iter().zip(&self.ops) {
            let _ = writeln!(
                out,
                "capstan_coord_request_errors_total{{op=\"{name}\"}} {}",
                h.errors.load(Ordering::Relaxed)
            );
        }
        out
    }
}
