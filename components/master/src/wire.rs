//! Small wire helpers: RecordIO framing, Mesos JSON navigation, status construction.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use serde_json::{Value, json};

/// Frames one record: `<len>\n<bytes>` (the shared framing of `capstan_proto::recordio`).
pub fn recordio(payload: &[u8]) -> Bytes {
    Bytes::from(capstan_proto::recordio::encode_to_vec(payload))
}

pub fn recordio_json(v: &Value) -> Bytes {
    recordio(&serde_json::to_vec(v).expect("JSON values serialize"))
}

/// Seconds since the epoch, fractional.
pub fn wall() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `{"value": "x"}` → `"x"`.
pub fn id_value(v: Option<&Value>) -> Option<String> {
    v?.get("value")?.as_str().map(String::from)
}

pub fn id_json(s: &str) -> Value {
    json!({ "value": s })
}

pub fn new_uuid_b64() -> String {
    base64::engine::general_purpose::STANDARD.encode(uuid::Uuid::new_v4().as_bytes())
}

pub fn str_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the state named `state` is terminal (unknown names are not).
pub fn is_terminal(state: &str) -> bool {
    capstan_types::TaskState::is_terminal_name(state)
}

/// States only PARTITION_AWARE frameworks may see; the others get TASK_LOST.
pub fn downgrade_state(state: &str, partition_aware: bool) -> &str {
    match state {
        "TASK_UNREACHABLE"
        | "TASK_DROPPED"
        | "TASK_GONE"
        | "TASK_GONE_BY_OPERATOR"
        | "TASK_UNKNOWN"
            if !partition_aware =>
        {
            "TASK_LOST"
        }
        s => s,
    }
}

/// A master-generated TaskStatus (no uuid: it must not be acknowledged), stamped now.
pub fn master_status(
    task_id: &str,
    state: &str,
    agent_id: Option<&str>,
    reason: Option<&str>,
    message: Option<&str>,
) -> Value {
    master_status_at(wall(), task_id, state, agent_id, reason, message)
}

/// [`master_status`] with the given timestamp (seconds since the epoch).
pub fn master_status_at(
    timestamp: f64,
    task_id: &str,
    state: &str,
    agent_id: Option<&str>,
    reason: Option<&str>,
    message: Option<&str>,
) -> Value {
    let mut s = json!({
        "task_id": id_json(task_id),
        "state": state,
        "source": "SOURCE_MASTER",
        "timestamp": timestamp,
    });
    if let Some(a) = agent_id {
        s["agent_id"] = id_json(a);
    }
    if let Some(r) = reason {
        s["reason"] = json!(r);
    }
    if let Some(m) = message {
        s["message"] = json!(m);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_types_must_be_present_strings_naming_a_call_of_the_api() {
        let ok = |api, v: Value| call_type(api, &v).map(str::to_string);
        assert_eq!(
            ok(Api::Scheduler, json!({"type": "SUBSCRIBE"})),
            Ok("SUBSCRIBE".into())
        );
        assert_eq!(
            ok(Api::Operator, json!({"type": "GET_QUOTA"})),
            Ok("GET_QUOTA".into())
        );
        assert_eq!(ok(Api::Agent, json!({"type": "PONG"})), Ok("PONG".into()));
        assert_eq!(
            ok(Api::Scheduler, json!({"type": "UNKNOWN"})),
            Ok("UNKNOWN".into()),
            "the enum's UNKNOWN is well-formed (answered 501 like Mesos)"
        );
        for missing in [json!({}), json!({"type": null})] {
            assert_eq!(
                ok(Api::Scheduler, missing),
                Err("Expecting 'type' to be present".into())
            );
        }
        for v in [json!(1), json!(true), json!([]), json!({"a": 1})] {
            let e = ok(Api::Operator, json!({"type": v})).unwrap_err();
            assert!(e.contains("'type' must be a string"), "{e}");
        }
        let e = ok(Api::Scheduler, json!({"type": "GET_STATE"})).unwrap_err();
        assert!(e.contains("unknown call type 'GET_STATE'"), "{e}");
        let e = ok(Api::Agent, json!({"type": "TEARDOWN"})).unwrap_err();
        assert!(e.contains("unknown call type"), "{e}");
        let e = ok(Api::Scheduler, json!({"type": "X".repeat(10_000)})).unwrap_err();
        assert!(
            e.len() < 200,
            "a long type is not echoed whole: {}",
            e.len()
        );
    }

    #[test]
    fn partition_states_are_downgraded_for_old_frameworks() {
        assert_eq!(downgrade_state("TASK_UNREACHABLE", false), "TASK_LOST");
        assert_eq!(
            downgrade_state("TASK_UNREACHABLE", true),
            "TASK_UNREACHABLE"
        );
        assert_eq!(downgrade_state("TASK_RUNNING", false), "TASK_RUNNING");
    }
}

/// Body encoding negotiated for a response or stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Json,
    Protobuf,
}

/// Which API a stream or body belongs to (selects the protobuf message type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    Scheduler,
    Operator,
    Agent,
}

/// Encodes a JSON event or response of `api` in `enc`. `None` if the JSON does not fit the
/// protobuf message (a bug on our side; logged by callers).
pub fn encode_message(api: Api, enc: Encoding, v: &Value, response: bool) -> Option<Vec<u8>> {
    use capstan_proto::capstan::agent::v1 as agent;
    use capstan_proto::mesos::v1::{master, scheduler};
    use capstan_proto::{Message, from_json};
    match enc {
        Encoding::Json => serde_json::to_vec(v).ok(),
        Encoding::Protobuf => match (api, response) {
            (Api::Scheduler, _) => from_json::<scheduler::Event>(v)
                .ok()
                .map(|m| m.encode_to_vec()),
            (Api::Operator, false) => from_json::<master::Event>(v)
                .ok()
                .map(|m| m.encode_to_vec()),
            (Api::Operator, true) => from_json::<master::Response>(v)
                .ok()
                .map(|m| m.encode_to_vec()),
            (Api::Agent, _) => from_json::<agent::Event>(v).ok().map(|m| m.encode_to_vec()),
        },
    }
}

/// Decodes a protobuf call of `api` into its Mesos JSON form.
pub fn decode_protobuf_call(api: Api, body: &[u8]) -> Result<Value, String> {
    use capstan_proto::capstan::agent::v1 as agent;
    use capstan_proto::mesos::v1::{master, scheduler};
    use capstan_proto::{decode, to_json};
    let r = match api {
        Api::Scheduler => decode::<scheduler::Call>(body).map(|m| to_json(&m)),
        Api::Operator => decode::<master::Call>(body).map(|m| to_json(&m)),
        Api::Agent => decode::<agent::Call>(body).map(|m| to_json(&m)),
    };
    r.map_err(|e| format!("Failed to parse body into Call protobuf: {e}"))
}

/// Longest call type name echoed back in an error (the rest is cut).
const MAX_ECHOED_TYPE: usize = 64;

/// The `type` of a call of `api`, checked like Mesos' JSON-to-protobuf conversion: present,
/// a string, and a name of that API's `Call.Type` enum. The enum's own `UNKNOWN` passes (the
/// call handlers answer it `501`, as Mesos does); anything else is malformed input and the
/// error is a `400` message.
pub fn call_type(api: Api, call: &Value) -> Result<&str, String> {
    use capstan_proto::capstan::agent::v1 as agent;
    use capstan_proto::mesos::v1::{master, scheduler};
    let ty = match call.get("type") {
        None | Some(Value::Null) => return Err("Expecting 'type' to be present".into()),
        Some(Value::String(s)) => s.as_str(),
        Some(other) => {
            let kind = match other {
                Value::Bool(_) => "a boolean",
                Value::Number(_) => "a number",
                Value::Array(_) => "an array",
                _ => "an object",
            };
            return Err(format!(
                "Failed to convert JSON into Call protobuf: 'type' must be a string naming a call type, got {kind}"
            ));
        }
    };
    let known = match api {
        Api::Scheduler => scheduler::call::Type::from_str_name(ty).is_some(),
        Api::Operator => master::call::Type::from_str_name(ty).is_some(),
        Api::Agent => agent::call::Type::from_str_name(ty).is_some(),
    };
    if known {
        return Ok(ty);
    }
    let shown: String = ty.chars().take(MAX_ECHOED_TYPE).collect();
    let cut = if shown.len() < ty.len() { "..." } else { "" };
    Err(format!(
        "Failed to convert JSON into Call protobuf: unknown call type '{shown}{cut}'"
    ))
}
