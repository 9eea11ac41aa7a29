//! Prometheus metrics of the l4lb port (`GET /metrics`, text format 0.0.4): the VIP table's
//! size (VIPs, backends), the stream follower, the data plane's rule updates with their
//! latency, and the userspace proxy's connections.
//!
//! A rule update's latency runs from the moment the follower received the first event of the
//! batch that changed the table to the moment the data plane had applied that table: what a
//! client waits for between "the master said so" and "new connections obey it". Updates that
//! arrive while one is being applied are folded into the next, measured from the earliest.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use capstan_types::vip::{Protocol, VipTable};
use tokio::time::Instant;

use crate::follower::FollowStatus;
use crate::proxy::ProxyStats;

/// Bucket upper bounds of the rule-update latency, in seconds.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (b, bound) in self.buckets.iter().zip(BUCKETS) {
            if secs <= bound {
                b.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
}

/// The daemon's counters, shared by the follower, the data plane and the HTTP API.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Tables the data plane applied.
    rule_updates: AtomicU64,
    /// VIPs a data-plane update could not program (for example an address that is not local).
    rule_update_errors: AtomicU64,
    latency: Histogram,
    /// VIP listeners (userspace) or programmed VIP addresses right now.
    programmed: AtomicU64,
    /// When the oldest table change not yet applied was received.
    pending_since: Mutex<Option<Instant>>,
}

impl Metrics {
    /// A table change caused by events received at `received` was published.
    pub fn table_changed(&self, received: Instant) {
        if let Ok(mut p) = self.pending_since.lock() {
            p.get_or_insert(received);
        }
    }

    /// The data plane applied the current table: `programmed` VIP addresses are in service,
    /// `errors` could not be.
    pub fn rules_applied(&self, programmed: usize, errors: usize) {
        self.rule_updates.fetch_add(1, Ordering::Relaxed);
        self.rule_update_errors
            .fetch_add(errors as u64, Ordering::Relaxed);
        self.programmed.store(programmed as u64, Ordering::Relaxed);
        let since = self.pending_since.lock().ok().and_then(|mut p| p.take());
        if let Some(since) = since {
            self.latency.observe(since.elapsed());
        }
    }

    /// How many tables the data plane applied.
    pub fn rule_updates(&self) -> u64 {
        self.rule_updates.load(Ordering::Relaxed)
    }

    /// The metrics in Prometheus text format.
    pub fn render(
        &self,
        table: &VipTable,
        follow: &FollowStatus,
        proxy: Option<&ProxyStats>,
    ) -> String {
        let mut out = String::new();
        let mut vips = [0u64; 2];
        let mut backends = [0u64; 2];
        for (key, vip) in &table.vips {
            let i = usize::from(key.protocol == Protocol::Udp);
            vips[i] += 1;
            backends[i] += vip.backends.len() as u64;
        }
        header(&mut out, "vips", "gauge", "VIPs in the table.");
        for (i, proto) in ["tcp", "udp"].iter().enumerate() {
            let _ = writeln!(out, "capstan_l4lb_vips{{protocol=\"{proto}\"}} {}", vips[i]);
        }
        header(
            &mut out,
            "backends",
            "gauge",
            "Backends taking new connections, summed over the VIPs.",
        );
        for (i, proto) in ["tcp", "udp"].iter().enumerate() {
            let _ = writeln!(
                out,
                "capstan_l4lb_backends{{protocol=\"{proto}\"}} {}",
                backends[i]
            );
        }
        let pending = self
            .pending_since
            .lock()
            .map(|p| p.is_some())
            .unwrap_or(false);
        let simple: [(&str, &str, &str, u64); 8] = [
            (
                "unallocated_vips",
                "gauge",
                "Named VIPs without an address (their range is full).",
                table.unallocated.len() as u64,
            ),
            (
                "programmed_addresses",
                "gauge",
                "VIP addresses the data plane serves right now.",
                self.programmed.load(Ordering::Relaxed),
            ),
            (
                "subscribed",
                "gauge",
                "1 while the leading master's event stream is open.",
                u64::from(follow.subscribed),
            ),
            (
                "subscriptions_total",
                "counter",
                "Subscriptions to the master's event stream (each a full reconcile).",
                follow.subscriptions,
            ),
            (
                "table_updates_total",
                "counter",
                "Recomputations of the VIP table that changed it.",
                follow.table_updates,
            ),
            (
                "rule_updates_total",
                "counter",
                "VIP tables applied to the data plane.",
                self.rule_updates.load(Ordering::Relaxed),
            ),
            (
                "rules_pending",
                "gauge",
                "1 while a changed table waits for the data plane (always 0 once it caught up).",
                u64::from(pending),
            ),
            (
                "rule_update_errors_total",
                "counter",
                "VIP addresses a data-plane update could not program.",
                self.rule_update_errors.load(Ordering::Relaxed),
            ),
        ];
        for (name, kind, help, v) in simple {
            header(&mut out, name, kind, help);
            let _ = writeln!(out, "capstan_l4lb_{name} {v}");
        }
        let name = "rule_update_duration_seconds";
        header(
            &mut out,
            name,
            "histogram",
            "From the master's event to the data plane applying the changed table.",
        );
        let h = &self.latency;
        for (b, bound) in h.buckets.iter().zip(BUCKETS) {
            let _ = writeln!(
                out,
                "capstan_l4lb_{name}_bucket{{le=\"{bound}\"}} {}",
                b.load(Ordering::Relaxed)
            );
        }
        let count = h.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "capstan_l4lb_{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "capstan_l4lb_{name}_sum {}",
            h.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9
        );
        let _ = writeln!(out, "capstan_l4lb_{name}_count {count}");
        if let Some(p) = proxy {
            header(
                &mut out,
                "connections_total",
                "counter",
                "Connections accepted on a VIP, by outcome (forwarded to a backend, or closed because none took it).",
            );
            for (result, v) in [
                ("forwarded", p.forwarded.load(Ordering::Relaxed)),
                ("refused", p.refused.load(Ordering::Relaxed)),
            ] {
                let _ = writeln!(
                    out,
                    "capstan_l4lb_connections_total{{result=\"{result}\"}} {v}"
                );
            }
            header(
                &mut out,
                "connections_accepted_total",
                "counter",
                "Connections accepted on a VIP.",
            );
            let _ = writeln!(
                out,
                "capstan_l4lb_connections_accepted_total {}",
                p.accepted.load(Ordering::Relaxed)
            );
            header(
                &mut out,
                "connections_open",
                "gauge",
                "Proxied connections open right now.",
            );
            let _ = writeln!(
                out,
                "capstan_l4lb_connections_open {}",
                p.open.load(Ordering::Relaxed)
            );
        }
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(
        out,
        "# HELP capstan_l4lb_{name} {help}\n# TYPE capstan_l4lb_{name} {kind}"
    );
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use capstan_types::vip::{Backend, Vip, VipAddr, VipKey};

    use super::*;

    fn value<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
    }

    #[test]
    fn the_table_the_follower_and_the_updates_are_counted() {
        let m = Metrics::default();
        let mut table = VipTable::default();
        let backends: BTreeSet<Backend> = [1, 2, 3]
            .map(|p| Backend {
                ip: "127.0.0.1".parse().unwrap(),
                port: p,
            })
            .into();
        table.vips.insert(
            VipKey {
                vip: VipAddr::Named {
                    name: "a.marathon.l4lb.thisdcos.directory".into(),
                    port: 80,
                },
                protocol: Protocol::Tcp,
            },
            Vip {
                backends,
                ..Vip::default()
            },
        );
        m.table_changed(Instant::now());
        m.table_changed(Instant::now());
        let follow0 = FollowStatus::default();
        let before = m.render(&table, &follow0, None);
        assert_eq!(value(&before, "capstan_l4lb_rules_pending"), Some("1"));
        m.rules_applied(1, 0);
        m.rules_applied(1, 2);
        let follow = FollowStatus {
            subscribed: true,
            subscriptions: 2,
            table_updates: 5,
        };
        let stats = ProxyStats::default();
        stats.forwarded.store(7, Ordering::Relaxed);
        let text = m.render(&table, &follow, Some(&stats));
        assert_eq!(
            value(&text, "capstan_l4lb_vips{protocol=\"tcp\"}"),
            Some("1")
        );
        assert_eq!(
            value(&text, "capstan_l4lb_backends{protocol=\"tcp\"}"),
            Some("3")
        );
        assert_eq!(value(&text, "capstan_l4lb_subscribed"), Some("1"));
        assert_eq!(value(&text, "capstan_l4lb_table_updates_total"), Some("5"));
        assert_eq!(value(&text, "capstan_l4lb_rule_updates_total"), Some("2"));
        assert_eq!(value(&text, "capstan_l4lb_rules_pending"), Some("0"));
        assert_eq!(
            value(&text, "capstan_l4lb_rule_update_errors_total"),
            Some("2")
        );
        // Two changes folded into one applied update: one latency sample.
        assert_eq!(
            value(&text, "capstan_l4lb_rule_update_duration_seconds_count"),
            Some("1")
        );
        assert_eq!(
            value(
                &text,
                "capstan_l4lb_rule_update_duration_seconds_bucket{le=\"+Inf\"}"
            ),
            Some("1")
        );
        assert_eq!(
            value(
                &text,
                "capstan_l4lb_connections_total{result=\"forwarded\"}"
            ),
            Some("7")
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, v) = line.rsplit_once(' ').expect("series value");
            assert!(v.parse::<f64>().is_ok(), "{line}");
        }
        assert!(
            !m.render(&table, &follow, None)
                .contains("capstan_l4lb_connections_total"),
            "no proxy, no connection series"
        );
    }
}
