//! Small wire helpers: RecordIO framing, Mesos JSON navigation, status construction, and
//! the typed decoding of the v1 API calls at the HTTP edge (scheduler, operator, agent).

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use capstan_types::{AgentId, TaskId, TaskState};
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

/// Whether `state` is terminal (the task will never run again).
pub fn is_terminal(state: TaskState) -> bool {
    state.is_terminal()
}

/// States only PARTITION_AWARE frameworks may see; the others get TASK_LOST.
pub fn downgrade_state(state: TaskState, partition_aware: bool) -> TaskState {
    match state {
        TaskState::Unreachable
        | TaskState::Dropped
        | TaskState::Gone
        | TaskState::GoneByOperator
        | TaskState::Unknown
            if !partition_aware =>
        {
            TaskState::Lost
        }
        s => s,
    }
}

/// A master-generated TaskStatus (no uuid: it must not be acknowledged), stamped now.
pub fn master_status(
    task_id: &TaskId,
    state: TaskState,
    agent_id: Option<&AgentId>,
    reason: Option<&str>,
    message: Option<&str>,
) -> Value {
    master_status_at(wall(), task_id, state, agent_id, reason, message)
}

/// [`master_status`] with the given timestamp (seconds since the epoch).
pub fn master_status_at(
    timestamp: f64,
    task_id: &TaskId,
    state: TaskState,
    agent_id: Option<&AgentId>,
    reason: Option<&str>,
    message: Option<&str>,
) -> Value {
    let mut s = json!({
        "task_id": task_id.to_wire(),
        "state": state.name(),
        "source": "SOURCE_MASTER",
        "timestamp": timestamp,
    });
    if let Some(a) = agent_id {
        s["agent_id"] = a.to_wire();
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
        assert_eq!(
            downgrade_state(TaskState::Unreachable, false),
            TaskState::Lost
        );
        assert_eq!(
            downgrade_state(TaskState::Unreachable, true),
            TaskState::Unreachable
        );
        assert_eq!(
            downgrade_state(TaskState::Running, false),
            TaskState::Running
        );
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

/// A scheduler call decoded at the HTTP edge into its protobuf type.
///
/// Key decision: a JSON call is decoded with `capstan_proto::from_json`, which checks every
/// `required` field. A task of an ACCEPT that misses some is not a reason to refuse the
/// whole call (the other tasks launch, as before the typed decode): the edge takes it out of
/// the call and lists it in `rejected`, and the core answers it with a `TASK_ERROR`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SchedulerCall {
    pub call: capstan_proto::mesos::v1::scheduler::Call,
    /// Tasks taken out of `call.accept` for missing required fields.
    pub rejected: Vec<RejectedTask>,
}

impl SchedulerCall {
    /// Whether the call is a SUBSCRIBE.
    pub fn is_subscribe(&self) -> bool {
        use capstan_proto::mesos::v1::scheduler::call::Type;
        self.call.r#type == Some(Type::Subscribe as i32)
    }
}

impl From<capstan_proto::mesos::v1::scheduler::Call> for SchedulerCall {
    fn from(call: capstan_proto::mesos::v1::scheduler::Call) -> Self {
        SchedulerCall {
            call,
            rejected: Vec::new(),
        }
    }
}

/// A task of an ACCEPT refused at the edge; answered with a `TASK_ERROR` status.
#[derive(Clone, Debug, PartialEq)]
pub struct RejectedTask {
    pub task_id: TaskId,
    /// The status' `reason`.
    pub reason: &'static str,
    /// The status' `message`.
    pub message: String,
    /// Whether the status names the offer's agent (the task's own fields are at fault) or
    /// not (its group's executor is).
    pub names_agent: bool,
}

/// Decodes a JSON scheduler call: an object, a `type` of the scheduler API (see
/// [`call_type`]), then the typed decode. Errors are the `400` messages.
pub fn decode_scheduler_json(v: &Value) -> Result<SchedulerCall, String> {
    use capstan_proto::JsonError;
    use capstan_proto::mesos::v1::scheduler::Call;
    if !v.is_object() {
        return Err("Failed to convert JSON into Call protobuf: expecting a JSON object".into());
    }
    call_type(Api::Scheduler, v)?;
    match capstan_proto::from_json::<Call>(v) {
        Ok(call) => Ok(call.into()),
        Err(JsonError::MissingRequired { fields }) => {
            let mut v = v.clone();
            let rejected =
                take_invalid_launches(&mut v, &fields).ok_or_else(|| missing_fields(&fields))?;
            let call = capstan_proto::from_json::<Call>(&v).map_err(json_error)?;
            Ok(SchedulerCall { call, rejected })
        }
        Err(e) => Err(json_error(e)),
    }
}

/// Decodes a protobuf scheduler call (prost does not check `required` fields: absent ones
/// read as empty, as they did when the body was converted to JSON).
pub fn decode_scheduler_protobuf(body: &[u8]) -> Result<SchedulerCall, String> {
    use capstan_proto::mesos::v1::scheduler::{Call, call::Type};
    let call = capstan_proto::decode::<Call>(body).map_err(protobuf_error)?;
    call_type_enum::<Type>(call.r#type)?;
    Ok(call.into())
}

fn json_error(e: capstan_proto::JsonError) -> String {
    call_json_error("scheduler::Call", SCHEDULER_NAMED_FROM, e)
}

/// Calls whose missing fields are named from their message (`framework_info.user`), as
/// their validation always has.
const SCHEDULER_NAMED_FROM: &[&str] = &["subscribe.", "update_framework."];

/// The `400` message for a JSON `what` (`scheduler::Call`, …) that does not decode.
fn call_json_error(what: &str, named_from: &[&str], e: capstan_proto::JsonError) -> String {
    use capstan_proto::JsonError;
    match e {
        JsonError::MissingRequired { fields } => missing_fields_of(what, named_from, &fields),
        JsonError::Invalid { path, reason } if reason.starts_with("invalid base64") => {
            format!("Failed to validate {what}: '{path}' is not valid base64")
        }
        other => format!("Failed to convert JSON into Call protobuf: {other}"),
    }
}

/// The `400` message for missing required fields of a scheduler call.
fn missing_fields(fields: &[String]) -> String {
    missing_fields_of("scheduler::Call", SCHEDULER_NAMED_FROM, fields)
}

/// The `400` message for missing required fields of `what`; a field under one of the
/// `named_from` prefixes is named from there.
fn missing_fields_of(what: &str, named_from: &[&str], fields: &[String]) -> String {
    let named: Vec<&str> = fields
        .iter()
        .map(|f| {
            named_from
                .iter()
                .find_map(|p| f.strip_prefix(p))
                .unwrap_or(f)
        })
        .collect();
    let expecting: Vec<String> = named
        .iter()
        .map(|f| format!("Expecting '{f}' to be present"))
        .collect();
    format!(
        "Failed to validate {what}: {} (Missing required fields: {})",
        expecting.join(", "),
        named.join(", ")
    )
}

/// An agent protocol call (`capstan.agent.v1.Call`), decoded at the HTTP edge.
pub type AgentCall = capstan_proto::capstan::agent::v1::Call;

/// An operator API call (`mesos.v1.master.Call`), decoded at the HTTP edge.
pub type OperatorCall = capstan_proto::mesos::v1::master::Call;

/// Decodes a JSON call of `api` into `M`: an object, a `type` of the API (see
/// [`call_type`]), then the typed decode with its `required` fields checked. Errors are the
/// `400` messages.
fn decode_json_call<M>(api: Api, what: &str, named_from: &[&str], v: &Value) -> Result<M, String>
where
    M: capstan_proto::Message + capstan_proto::prost::Name + Default,
{
    if !v.is_object() {
        return Err("Failed to convert JSON into Call protobuf: expecting a JSON object".into());
    }
    call_type(api, v)?;
    capstan_proto::from_json::<M>(v).map_err(|e| call_json_error(what, named_from, e))
}

/// A call's `type`: present and a value of its enum `T` (the `400` message otherwise).
pub fn call_type_enum<T: TryFrom<i32>>(ty: Option<i32>) -> Result<T, String> {
    match ty {
        None => Err("Expecting 'type' to be present".into()),
        Some(n) => T::try_from(n).map_err(|_| {
            format!("Failed to convert JSON into Call protobuf: unknown call type '{n}'")
        }),
    }
}

fn protobuf_error(e: capstan_proto::prost::DecodeError) -> String {
    format!("Failed to parse body into Call protobuf: {e}")
}

/// Decodes a JSON agent call (see [`decode_json_call`]); SUBSCRIBE's missing fields are
/// named from its message (`agent_info.hostname`).
pub fn decode_agent_json(v: &Value) -> Result<AgentCall, String> {
    decode_json_call(Api::Agent, "agent::Call", &["subscribe."], v)
}

/// Decodes a protobuf agent call (prost does not check `required` fields).
pub fn decode_agent_protobuf(body: &[u8]) -> Result<AgentCall, String> {
    use capstan_proto::capstan::agent::v1::call::Type;
    let call = capstan_proto::decode::<AgentCall>(body).map_err(protobuf_error)?;
    call_type_enum::<Type>(call.r#type)?;
    Ok(call)
}

/// Decodes a JSON operator call (see [`decode_json_call`]).
pub fn decode_operator_json(v: &Value) -> Result<OperatorCall, String> {
    decode_json_call(Api::Operator, "master::Call", &[], v)
}

/// Decodes a protobuf operator call (prost does not check `required` fields).
pub fn decode_operator_protobuf(body: &[u8]) -> Result<OperatorCall, String> {
    use capstan_proto::mesos::v1::master::call::Type;
    let call = capstan_proto::decode::<OperatorCall>(body).map_err(protobuf_error)?;
    call_type_enum::<Type>(call.r#type)?;
    Ok(call)
}

/// `prefix[<n>].rest` → `(n, rest)`.
fn indexed<'a>(path: &'a str, prefix: &str) -> Option<(usize, &'a str)> {
    let (n, rest) = path
        .strip_prefix(prefix)?
        .strip_prefix('[')?
        .split_once(']')?;
    Some((n.parse().ok()?, rest.strip_prefix('.').unwrap_or(rest)))
}

/// Where in an ACCEPT a missing required field is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Spoiled {
    /// A task of a LAUNCH (operation, task).
    Task(usize, usize),
    /// A task of a LAUNCH_GROUP's group (operation, task).
    GroupTask(usize, usize),
    /// A LAUNCH_GROUP's executor or task group (operation).
    Group(usize),
}

/// Takes the tasks and groups of an ACCEPT that miss the required `fields` out of `call`
/// and returns the tasks refused; `None` if some field is elsewhere (the call is malformed).
fn take_invalid_launches(call: &mut Value, fields: &[String]) -> Option<Vec<RejectedTask>> {
    use std::collections::BTreeMap;
    let mut spoiled: BTreeMap<Spoiled, Vec<&str>> = BTreeMap::new();
    for f in fields {
        let (op, rest) = indexed(f, "accept.operations")?;
        let at = if let Some((t, field)) = indexed(rest, "launch.task_infos") {
            (Spoiled::Task(op, t), field)
        } else if let Some((t, field)) = indexed(rest, "launch_group.task_group.tasks") {
            (Spoiled::GroupTask(op, t), field)
        } else if rest.starts_with("launch_group.executor") || rest == "launch_group.task_group" {
            (Spoiled::Group(op), rest)
        } else {
            return None;
        };
        spoiled.entry(at.0).or_default().push(at.1);
    }
    let ops = call.pointer_mut("/accept/operations")?.as_array_mut()?;
    let spoiled_groups: Vec<usize> = spoiled
        .keys()
        .filter_map(|s| match s {
            Spoiled::Group(op) => Some(*op),
            _ => None,
        })
        .collect();
    let task_id_of = |t: &Value| TaskId::from_wire(t.get("task_id"));
    let mut rejected = Vec::new();
    // Tasks first, last index first, so the indices of the others hold.
    for (at, missing) in spoiled.iter().rev() {
        let (op, t, list) = match *at {
            Spoiled::Task(op, t) => (op, t, "/launch/task_infos"),
            Spoiled::GroupTask(op, t) if !spoiled_groups.contains(&op) => {
                (op, t, "/launch_group/task_group/tasks")
            }
            _ => continue,
        };
        let tasks = ops.get_mut(op)?.pointer_mut(list)?.as_array_mut()?;
        if t >= tasks.len() {
            return None;
        }
        let task = tasks.remove(t);
        if let Some(task_id) = task_id_of(&task) {
            rejected.push(RejectedTask {
                task_id,
                reason: "REASON_TASK_INVALID",
                message: format!("Missing required fields: {}", missing.join(", ")),
                names_agent: true,
            });
        }
    }
    for op in spoiled_groups.iter().rev() {
        let missing = &spoiled[&Spoiled::Group(*op)];
        let message = if missing.as_slice() == ["launch_group.executor"] {
            "Expecting 'launch_group.executor' to be present".to_string()
        } else {
            format!("Missing required fields: {}", missing.join(", "))
        };
        if *op >= ops.len() {
            return None;
        }
        let group = ops.remove(*op);
        let tasks = group
            .pointer("/launch_group/task_group/tasks")
            .and_then(Value::as_array);
        for task_id in tasks.into_iter().flatten().filter_map(task_id_of) {
            rejected.push(RejectedTask {
                task_id,
                reason: "REASON_TASK_GROUP_INVALID",
                message: message.clone(),
                names_agent: false,
            });
        }
    }
    rejected.reverse();
    Some(rejected)
}

#[cfg(test)]
mod scheduler_call_tests {
    use capstan_proto::Message;
    use capstan_proto::mesos::v1 as mesos;
    use capstan_proto::mesos::v1::scheduler::{Call, call};

    use super::*;

    fn task_json(name: Option<&str>, id: &str) -> Value {
        let mut t = json!({
            "task_id": {"value": id}, "agent_id": {"value": "a-S0"},
            "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.5}}],
            "command": {"value": "sleep 1"},
        });
        if let Some(n) = name {
            t["name"] = json!(n);
        }
        t
    }

    fn accept_json(tasks: Vec<Value>) -> Value {
        json!({"type": "ACCEPT", "framework_id": {"value": "f-0000"}, "accept": {
            "offer_ids": [{"value": "o-1"}],
            "operations": [{"type": "LAUNCH", "launch": {"task_infos": tasks}}],
            "filters": {"refuse_seconds": 2.5},
        }})
    }

    /// The ACCEPT of [`accept_json`] built as protobuf types.
    fn accept_built(task: mesos::TaskInfo) -> Call {
        use mesos::offer::{Operation, operation};
        Call {
            r#type: Some(call::Type::Accept as i32),
            framework_id: Some(mesos::FrameworkId {
                value: "f-0000".into(),
            }),
            accept: Some(call::Accept {
                offer_ids: vec![mesos::OfferId {
                    value: "o-1".into(),
                }],
                operations: vec![Operation {
                    r#type: Some(operation::Type::Launch as i32),
                    launch: Some(operation::Launch {
                        task_infos: vec![task],
                    }),
                    ..Default::default()
                }],
                filters: Some(mesos::Filters {
                    refuse_seconds: Some(2.5),
                }),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_protobuf_and_a_json_accept_decode_to_the_same_typed_call() {
        let task: mesos::TaskInfo =
            capstan_proto::from_json(&task_json(Some("t1"), "t1")).expect("a TaskInfo");
        let built = accept_built(task);
        let from_json = decode_scheduler_json(&accept_json(vec![task_json(Some("t1"), "t1")]))
            .expect("JSON decodes");
        let from_protobuf =
            decode_scheduler_protobuf(&built.encode_to_vec()).expect("protobuf decodes");
        assert_eq!(from_json, from_protobuf);
        assert_eq!(from_json.call, built);
        assert!(from_json.rejected.is_empty());
        let accept = from_json.call.accept.expect("accept");
        assert_eq!(
            accept.operations[0].launch.as_ref().unwrap().task_infos[0].name,
            "t1"
        );
        assert_eq!(accept.filters.and_then(|f| f.refuse_seconds), Some(2.5));
    }

    #[test]
    fn a_json_subscribe_missing_a_required_field_names_it() {
        let e = decode_scheduler_json(&json!({"type": "SUBSCRIBE",
            "subscribe": {"framework_info": {"name": "n"}}}))
        .expect_err("refused");
        assert!(e.starts_with("Failed to validate scheduler::Call"), "{e}");
        assert!(
            e.contains("Missing required fields: framework_info.user"),
            "{e}"
        );
        let e = decode_scheduler_json(&json!({"type": "KILL", "kill": {}})).expect_err("refused");
        assert!(e.contains("Expecting 'kill.task_id' to be present"), "{e}");
        let e = decode_scheduler_json(&json!({"type": "ACKNOWLEDGE", "acknowledge": {
            "agent_id": {"value": "a"}, "task_id": {"value": "t"}, "uuid": "***"}}))
        .expect_err("refused");
        assert!(e.contains("'acknowledge.uuid' is not valid base64"), "{e}");
        // The type is checked first, with its own messages.
        assert_eq!(
            decode_scheduler_json(&json!({"subscribe": {}})).unwrap_err(),
            "Expecting 'type' to be present"
        );
        assert!(decode_scheduler_json(&json!([])).is_err());
    }

    #[test]
    fn accept_tasks_missing_required_fields_are_taken_out_and_listed() {
        let sc = decode_scheduler_json(&accept_json(vec![
            task_json(None, "bad"),
            task_json(Some("good"), "good"),
        ]))
        .expect("the call stands");
        let tasks = &sc.call.accept.as_ref().unwrap().operations[0]
            .launch
            .as_ref()
            .unwrap()
            .task_infos;
        assert_eq!(tasks.len(), 1);
        assert_eq!(tasks[0].name, "good");
        assert_eq!(
            sc.rejected,
            vec![RejectedTask {
                task_id: "bad".into(),
                reason: "REASON_TASK_INVALID",
                message: "Missing required fields: name".into(),
                names_agent: true,
            }]
        );
        // A group without its executor: every task of the group is refused.
        let sc = decode_scheduler_json(&json!({"type": "ACCEPT", "accept": {
            "offer_ids": [{"value": "o-1"}],
            "operations": [{"type": "LAUNCH_GROUP", "launch_group": {
                "task_group": {"tasks": [task_json(Some("g1"), "g1")]}}}],
        }}))
        .expect("the call stands");
        assert!(sc.call.accept.unwrap().operations.is_empty());
        assert_eq!(sc.rejected.len(), 1);
        assert_eq!(sc.rejected[0].reason, "REASON_TASK_GROUP_INVALID");
        assert_eq!(
            sc.rejected[0].message,
            "Expecting 'launch_group.executor' to be present"
        );
        // Anywhere else, a missing field refuses the call.
        assert!(
            decode_scheduler_json(&json!({"type": "ACCEPT", "accept": {
                "offer_ids": [{}]}}))
            .is_err()
        );
    }
}
