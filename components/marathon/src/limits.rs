//! Upper bounds of the numbers and sizes of an app definition. Marathon's only limits are its
//! JVM types; Capstan picks bounds that no real cluster reaches, so that every conversion after
//! validation is exact: `instances` fits the planner's `u32`, any `…Seconds` times 1000 fits the
//! `i64` milliseconds of [`crate::Timestamp`] (and a `std::time::Duration`), a port fits
//! `u16`, and a stored definition stays far below coord's 1 MiB value limit.

use std::io;

use serde::Serialize;

use crate::app::{AppDefinition, UnreachableStrategy, Violation};

/// Most instances of one app (the planner counts in `u32`).
pub const MAX_INSTANCES: i64 = 1_000_000;
/// Most CPUs of one task.
pub const MAX_CPUS: f64 = 1_000_000.0;
/// Most memory of one task, in MiB (about 954 TiB).
pub const MAX_MEM_MIB: f64 = 1e9;
/// Most disk of one task, in MiB (about 954 TiB).
pub const MAX_DISK_MIB: f64 = 1e9;
/// Most GPUs of one task.
pub const MAX_GPUS: u32 = 100_000;
/// The highest TCP/UDP port.
pub const MAX_PORT: u32 = 65_535;
/// Longest first launch delay (`backoffSeconds`, Marathon's default is 1): one day.
pub const MAX_BACKOFF_SECONDS: u64 = 86_400;
/// Largest growth factor of the launch delay (`backoffFactor`, default 1.15).
pub const MAX_BACKOFF_FACTOR: f64 = 100.0;
/// Longest duration any other `…Seconds` field may name (`maxLaunchDelaySeconds`, health and
/// readiness check timings, `taskKillGracePeriodSeconds`, `unreachableStrategy`): ten years,
/// 3.2 × 10¹¹ ms, far from overflowing `i64` milliseconds even when added to "now".
pub const MAX_DURATION_SECONDS: u64 = 10 * 365 * 86_400;
/// Most consecutive failures a health check may tolerate before its task is killed.
pub const MAX_CONSECUTIVE_FAILURES: u32 = 1_000_000;
/// Largest app definition, as its stored JSON. coord refuses values over 1 MiB, and the
/// definition is also written as each of its versions and inside the deployments that change
/// it (with the original next to the target), so half of that leaves headroom.
pub const MAX_APP_DEFINITION_BYTES: usize = 512 * 1024;

fn too_big(
    path: impl Into<String>,
    got: impl std::fmt::Display,
    max: impl std::fmt::Display,
) -> Violation {
    Violation::new(path, format!("got {got}, expected at most {max}"))
}

/// Counts bytes written and fails once `limit` is passed, so an oversized definition is not
/// rendered completely just to be measured.
struct Counter {
    written: usize,
    limit: usize,
}

impl io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written = self.written.saturating_add(buf.len());
        if self.written > self.limit {
            return Err(io::Error::other("limit passed"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// True if `value` written as JSON takes more than `limit` bytes.
pub fn json_exceeds(value: &impl Serialize, limit: usize) -> bool {
    let mut c = Counter { written: 0, limit };
    serde_json::to_writer(&mut c, value).is_err()
}

/// Every number of `def` above its bound, every port out of range, and a definition too large
/// to store.
pub(crate) fn violations(def: &AppDefinition) -> Vec<Violation> {
    let mut v = Vec::new();
    if def.instances > MAX_INSTANCES {
        v.push(too_big("/instances", def.instances, MAX_INSTANCES));
    }
    for (path, got, max) in [
        ("/cpus", def.cpus, MAX_CPUS),
        ("/mem", def.mem, MAX_MEM_MIB),
        ("/disk", def.disk, MAX_DISK_MIB),
        ("/backoffFactor", def.backoff_factor, MAX_BACKOFF_FACTOR),
    ] {
        // NaN is reported by the lower-bound checks.
        if got > max {
            v.push(too_big(path, got, max));
        }
    }
    if def.gpus > MAX_GPUS {
        v.push(too_big("/gpus", def.gpus, MAX_GPUS));
    }
    if def.backoff_seconds > MAX_BACKOFF_SECONDS {
        v.push(too_big(
            "/backoffSeconds",
            def.backoff_seconds,
            MAX_BACKOFF_SECONDS,
        ));
    }
    let mut durations: Vec<(String, u64)> = vec![(
        "/maxLaunchDelaySeconds".into(),
        def.max_launch_delay_seconds,
    )];
    if let Some(g) = def.task_kill_grace_period_seconds {
        durations.push(("/taskKillGracePeriodSeconds".into(), g));
    }
    if let UnreachableStrategy::Enabled {
        inactive_after_seconds,
        expunge_after_seconds,
    } = def.unreachable_strategy
    {
        durations.push((
            "/unreachableStrategy/inactiveAfterSeconds".into(),
            inactive_after_seconds,
        ));
        durations.push((
            "/unreachableStrategy/expungeAfterSeconds".into(),
            expunge_after_seconds,
        ));
    }
    for (i, hc) in def.health_checks.iter().enumerate() {
        let path = format!("/healthChecks({i})");
        for (name, secs) in [
            ("gracePeriodSeconds", hc.grace_period_seconds),
            ("intervalSeconds", hc.interval_seconds),
            ("timeoutSeconds", hc.timeout_seconds),
            ("delaySeconds", hc.delay_seconds),
        ] {
            durations.push((format!("{path}/{name}"), secs));
        }
        if hc.max_consecutive_failures > MAX_CONSECUTIVE_FAILURES {
            v.push(too_big(
                format!("{path}/maxConsecutiveFailures"),
                hc.max_consecutive_failures,
                MAX_CONSECUTIVE_FAILURES,
            ));
        }
        if let Some(port) = hc.port
            && port > MAX_PORT
        {
            v.push(too_big(format!("{path}/port"), port, MAX_PORT));
        }
    }
    for (i, rc) in def.readiness_checks.iter().enumerate() {
        let path = format!("/readinessChecks({i})");
        durations.push((format!("{path}/intervalSeconds"), rc.interval_seconds));
        durations.push((format!("{path}/timeoutSeconds"), rc.timeout_seconds));
    }
    for (path, secs) in durations {
        if secs > MAX_DURATION_SECONDS {
            v.push(too_big(path, secs, MAX_DURATION_SECONDS));
        }
    }
    for (i, pd) in def.port_definitions.iter().flatten().enumerate() {
        if pd.port > MAX_PORT {
            v.push(too_big(
                format!("/portDefinitions({i})/port"),
                pd.port,
                MAX_PORT,
            ));
        }
    }
    let mappings = def
        .container
        .iter()
        .flat_map(|c| c.port_mappings.iter().flatten());
    for (i, pm) in mappings.enumerate() {
        for (name, port) in [
            ("containerPort", Some(pm.container_port)),
            ("hostPort", pm.host_port),
            ("servicePort", Some(pm.service_port)),
        ] {
            if let Some(port) = port
                && port > MAX_PORT
            {
                v.push(too_big(
                    format!("/container/portMappings({i})/{name}"),
                    port,
                    MAX_PORT,
                ));
            }
        }
    }
    if json_exceeds(def, MAX_APP_DEFINITION_BYTES) {
        v.push(Violation::new(
            "/",
            format!(
                "The app definition is larger than {MAX_APP_DEFINITION_BYTES} bytes as JSON \
                 (MAX_APP_DEFINITION_BYTES)"
            ),
        ));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PathId;
    use serde_json::{Value, json};

    fn paths(v: Value) -> Vec<String> {
        let mut a: AppDefinition = serde_json::from_value(v).expect("typed");
        a.normalize(&PathId::root());
        a.validate().into_iter().map(|v| v.path).collect()
    }

    #[test]
    fn numbers_above_their_bounds_are_violations_naming_the_field() {
        let base = json!({"id": "/a", "cmd": "x"});
        let table: Vec<(Value, &[&str])> = vec![
            (json!({}), &[]),
            (json!({"instances": MAX_INSTANCES}), &[]),
            (json!({"instances": MAX_INSTANCES + 1}), &["/instances"]),
            (json!({"instances": 4_294_967_297_i64}), &["/instances"]),
            (json!({"instances": i64::MAX}), &["/instances"]),
            (
                json!({"cpus": MAX_CPUS, "mem": MAX_MEM_MIB, "disk": MAX_DISK_MIB}),
                &[],
            ),
            (json!({"cpus": 1e308}), &["/cpus"]),
            (json!({"mem": 1e308}), &["/mem"]),
            (json!({"disk": 1e308}), &["/disk"]),
            (json!({"gpus": MAX_GPUS + 1}), &["/gpus"]),
            (json!({"backoffSeconds": MAX_BACKOFF_SECONDS}), &[]),
            (json!({"backoffSeconds": u64::MAX}), &["/backoffSeconds"]),
            (
                json!({"maxLaunchDelaySeconds": u64::MAX}),
                &["/maxLaunchDelaySeconds"],
            ),
            (json!({"backoffFactor": 1e308}), &["/backoffFactor"]),
            (json!({"backoffFactor": MAX_BACKOFF_FACTOR}), &[]),
            (
                json!({"taskKillGracePeriodSeconds": u64::MAX}),
                &["/taskKillGracePeriodSeconds"],
            ),
            (
                json!({"unreachableStrategy": {"inactiveAfterSeconds": 1, "expungeAfterSeconds": u64::MAX}}),
                &["/unreachableStrategy/expungeAfterSeconds"],
            ),
            (
                json!({"healthChecks": [{"protocol": "TCP", "intervalSeconds": u64::MAX,
                    "timeoutSeconds": u64::MAX, "gracePeriodSeconds": u64::MAX,
                    "delaySeconds": u64::MAX, "maxConsecutiveFailures": u32::MAX}]}),
                &[
                    "/healthChecks(0)/maxConsecutiveFailures",
                    "/healthChecks(0)/gracePeriodSeconds",
                    "/healthChecks(0)/intervalSeconds",
                    "/healthChecks(0)/timeoutSeconds",
                    "/healthChecks(0)/delaySeconds",
                ],
            ),
            (
                json!({"healthChecks": [{"protocol": "MESOS_HTTP", "port": 70000}]}),
                &["/healthChecks(0)/port"],
            ),
            (
                json!({"portDefinitions": [{"port": 80}, {"port": 70000}]}),
                &["/portDefinitions(1)/port"],
            ),
            (json!({"portDefinitions": [{"port": MAX_PORT}]}), &[]),
            (json!({"ports": [0, 70000]}), &["/portDefinitions(1)/port"]),
            (
                json!({"container": {"type": "DOCKER", "docker": {"image": "capstan/http"},
                    "portMappings": [{"containerPort": 80, "hostPort": 70000, "servicePort": 70001},
                                     {"containerPort": 70002}]},
                    "networks": [{"mode": "container/bridge"}]}),
                &[
                    "/container/portMappings(0)/hostPort",
                    "/container/portMappings(0)/servicePort",
                    "/container/portMappings(1)/containerPort",
                ],
            ),
            (
                json!({"container": {"type": "DOCKER", "docker": {"image": "capstan/http",
                    "network": "BRIDGE", "portMappings": [{"containerPort": 80, "hostPort": 70000}]}}}),
                &["/container/portMappings(0)/hostPort"],
            ),
        ];
        for (extra, want) in table {
            let mut app = base.clone();
            for (k, v) in extra.as_object().expect("object") {
                app[k] = v.clone();
            }
            assert_eq!(paths(app), want, "{extra}");
        }
    }

    #[test]
    fn readiness_check_durations_are_bounded() {
        let got = paths(json!({"id": "/r", "cmd": "x",
            "portDefinitions": [{"port": 0, "name": "http-api"}],
            "readinessChecks": [{"intervalSeconds": u64::MAX, "timeoutSeconds": 10}]}));
        assert_eq!(got, ["/readinessChecks(0)/intervalSeconds"]);
    }

    #[test]
    fn a_definition_over_the_size_limit_is_a_violation_of_the_whole() {
        let fits = "a".repeat(MAX_APP_DEFINITION_BYTES - 1024);
        assert!(paths(json!({"id": "/a", "cmd": fits})).is_empty());
        let over = "a".repeat(MAX_APP_DEFINITION_BYTES);
        assert_eq!(paths(json!({"id": "/a", "cmd": over})), ["/"]);
        let many_labels: serde_json::Map<String, Value> = (0..20_000)
            .map(|i| (format!("label-{i:05}"), json!("value-of-the-label")))
            .collect();
        assert_eq!(
            paths(json!({"id": "/a", "cmd": "x", "labels": many_labels})),
            ["/"]
        );
        assert!(!json_exceeds(&json!("ab"), 4));
        assert!(json_exceeds(&json!("abcd"), 4));
    }
}
