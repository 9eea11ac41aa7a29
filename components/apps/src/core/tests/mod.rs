//! Direct unit tests of [`Core`], one file per concern, driven with chosen `Timestamp`s
//! and asserted on the outboxes (`calls`, `store_ops`) and the JSON views — no sockets.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::*;
use crate::mesos::OutCall;
use crate::model::{AppDefinition, PathId, Timestamp};

mod checks;
mod deployments;
mod offers;
mod updates;
mod views;

/// An offer as the master's JSON.
fn offer_json(n: u32) -> Value {
    json!({
        "id": {"value": format!("O{n}")}, "framework_id": {"value": "F"}, "agent_id": {"value": format!("S{}", n % 2)},
        "hostname": format!("h{}", n % 2),
        "resources": [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": 4.0}},
            {"name": "mem", "type": "SCALAR", "scalar": {"value": 4096.0}},
            {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 31000, "end": 31100}]}}
        ]
    })
}

/// An offer's JSON decoded as the driver decodes it.
fn typed(v: Value) -> capstan_proto::mesos::v1::Offer {
    capstan_proto::from_json(&v).unwrap()
}

fn offer(n: u32) -> capstan_proto::mesos::v1::Offer {
    typed(offer_json(n))
}

fn app(id: &str, instances: i64, extra: Value) -> AppDefinition {
    let mut v = json!({"id": id, "cmd": "run", "cpus": 0.1, "mem": 16, "instances": instances});
    for (k, x) in extra.as_object().cloned().unwrap_or_default() {
        v[k] = x;
    }
    let mut a: AppDefinition = serde_json::from_value(v).unwrap();
    a.normalize(&PathId::root());
    a
}

fn core() -> Core {
    let mut c = Core::new(
        CoreConfig::default(),
        EventBus::default(),
        Snapshot::default(),
    );
    c.subscribed(&"F".into(), Timestamp(1_000));
    c.calls.clear();
    c
}

fn launched(c: &mut Core) -> Vec<String> {
    let ids = c
        .calls
        .iter()
        .map(OutCall::value)
        .filter(|x| x["type"] == "ACCEPT")
        .flat_map(|x| {
            x["accept"]["operations"][0]["launch"]["task_infos"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|t| t["task_id"]["value"].as_str().unwrap().to_string())
        .collect();
    c.calls.clear();
    ids
}

fn status(c: &mut Core, id: &str, state: &str, at: i64) {
    c.update(
        &capstan_proto::from_json(
            &json!({"task_id": {"value": id}, "state": state, "agent_id": {"value": "S0"}}),
        )
        .unwrap(),
        Timestamp(at),
    );
}
