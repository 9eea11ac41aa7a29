//! The Mesos JSON mapping, implemented over prost-reflect descriptors.
//!
//! Mesos does not use proto3-JSON: it follows the rules of stout's
//! `protobuf.hpp`, which this module reproduces.
//!
//! Output (message to JSON):
//! - keys are proto field names (snake_case), enums are symbolic names, `bytes` are standard
//!   base64, 64-bit integers are JSON numbers, maps are JSON objects;
//! - repeated fields appear only when non-empty;
//! - singular fields appear when set, or when unset but declared with an explicit
//!   `[default = ...]` and not deprecated (so `CommandInfo.shell` always shows up).
//!
//! Input (JSON to message):
//! - unknown keys are ignored and `null` means unset;
//! - numeric fields also accept numeric strings, doubles accept `"Infinity"`/`"-Infinity"`,
//!   bools accept `"true"`/`"false"`;
//! - an unknown enum name is an error for a `required` field and silently dropped otherwise;
//! - afterwards every missing `required` field (at any depth) is reported at once.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, LazyLock};

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor,
    ReflectMessage as _, Value,
};
use serde_json::{Map, Number, Value as Json};

/// Why a JSON document could not be turned into a message.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// The bytes are not a JSON document.
    #[error("invalid JSON")]
    Syntax(#[source] serde_json::Error),
    /// A value has the wrong shape or type. `path` locates it, e.g.
    /// `accept.operations[0].launch.task_infos[1].resources[0].scalar.value`.
    #[error("{path}: {reason}")]
    Invalid {
        /// Dotted field path with list indices; `<root>` for the document itself.
        path: String,
        /// What is wrong with the value.
        reason: String,
    },
    /// Required fields are absent after parsing; each entry is a full field path.
    #[error("Missing required fields: {}", .fields.join(", "))]
    MissingRequired {
        /// Paths of the missing fields, e.g. `accept.operations[0].launch.task_infos[1].task_id`.
        fields: Vec<String>,
    },
    /// The message type is not part of this crate's descriptor pool.
    #[error("message type {0} is not in the descriptor pool")]
    UnknownType(String),
    /// The parsed message could not be re-encoded into the requested type.
    #[error("failed to convert the parsed message")]
    Decode(#[source] prost::DecodeError),
}

/// Per-message field information computed once for the whole pool.
struct FieldPlan {
    desc: FieldDescriptor,
    name: String,
    shape: Shape,
    /// JSON of the declared default, emitted when the field is unset (non-deprecated
    /// singular fields with an explicit `[default = ...]` only).
    default: Option<Json>,
}

enum Shape {
    Single(Kind),
    List(Kind),
    /// Map field; the kind is the value kind.
    Map(Kind),
}

impl FieldPlan {
    fn new(desc: FieldDescriptor) -> Self {
        let kind = desc.kind();
        let shape = if desc.is_map() {
            match &kind {
                Kind::Message(entry) => Shape::Map(entry.map_entry_value_field().kind()),
                _ => Shape::Map(kind),
            }
        } else if desc.is_list() {
            Shape::List(kind)
        } else {
            Shape::Single(kind)
        };
        let proto = desc.field_descriptor_proto();
        let deprecated = proto
            .options
            .as_ref()
            .and_then(|o| o.deprecated)
            .unwrap_or(false);
        let default = match &shape {
            Shape::Single(kind) if proto.default_value.is_some() && !deprecated => {
                Some(value_to_json(&desc.default_value(), kind))
            }
            _ => None,
        };
        Self {
            name: desc.name().to_owned(),
            desc,
            shape,
            default,
        }
    }
}

struct Codec {
    pool: DescriptorPool,
    plans: HashMap<String, Arc<[FieldPlan]>>,
}

static CODEC: LazyLock<Codec> = LazyLock::new(|| {
    let pool = crate::descriptor_pool().clone();
    let plans = pool
        .all_messages()
        .map(|message| {
            let fields: Arc<[FieldPlan]> = message.fields().map(FieldPlan::new).collect();
            (message.full_name().to_owned(), fields)
        })
        .collect();
    Codec { pool, plans }
});

impl Codec {
    fn plan(&self, message: &MessageDescriptor) -> Arc<[FieldPlan]> {
        match self.plans.get(message.full_name()) {
            Some(plan) => plan.clone(),
            // Only reachable for descriptors from another pool.
            None => message.fields().map(FieldPlan::new).collect(),
        }
    }
}

fn descriptor_of<M: prost::Name>() -> Result<MessageDescriptor, JsonError> {
    let name = M::full_name();
    CODEC
        .pool
        .get_message_by_name(&name)
        .ok_or(JsonError::UnknownType(name))
}

// ---------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------

/// Serialises a generated message with the Mesos JSON rules.
///
/// # Panics
/// Only if `M` is not a type generated by this crate (its name is not in the pool).
pub fn to_json<M: prost::Message + prost::Name>(msg: &M) -> Json {
    match try_to_json(msg) {
        Ok(json) => json,
        Err(err) => panic!("to_json called with a foreign message type: {err}"),
    }
}

/// Like [`to_json`], but reports a foreign message type as an error instead of panicking.
pub fn try_to_json<M: prost::Message + prost::Name>(msg: &M) -> Result<Json, JsonError> {
    let desc = descriptor_of::<M>()?;
    let dynamic =
        DynamicMessage::decode(desc, msg.encode_to_vec().as_slice()).map_err(JsonError::Decode)?;
    Ok(to_json_dynamic(&dynamic))
}

/// Serialises a generated message to a compact JSON string.
pub fn to_json_string<M: prost::Message + prost::Name>(msg: &M) -> String {
    to_json(msg).to_string()
}

/// Serialises a generated message to compact JSON bytes (e.g. a RecordIO record).
pub fn to_json_vec<M: prost::Message + prost::Name>(msg: &M) -> Vec<u8> {
    to_json_string(msg).into_bytes()
}

/// Serialises a reflected message with the Mesos JSON rules.
pub fn to_json_dynamic(msg: &DynamicMessage) -> Json {
    Json::Object(message_to_json(msg))
}

fn message_to_json(msg: &DynamicMessage) -> Map<String, Json> {
    let plan = CODEC.plan(&msg.descriptor());
    let mut out = Map::new();
    for field in plan.iter() {
        let desc = &field.desc;
        let json = match &field.shape {
            Shape::Map(value_kind) => match &*msg.get_field(desc) {
                Value::Map(map) if !map.is_empty() => Json::Object(
                    map.iter()
                        .map(|(key, value)| (map_key_string(key), value_to_json(value, value_kind)))
                        .collect(),
                ),
                _ => continue,
            },
            Shape::List(kind) => match &*msg.get_field(desc) {
                Value::List(items) if !items.is_empty() => {
                    Json::Array(items.iter().map(|v| value_to_json(v, kind)).collect())
                }
                _ => continue,
            },
            Shape::Single(kind) => {
                if msg.has_field(desc) {
                    value_to_json(&msg.get_field(desc), kind)
                } else if let Some(default) = &field.default {
                    default.clone()
                } else {
                    continue;
                }
            }
        };
        out.insert(field.name.clone(), json);
    }
    out
}

fn map_key_string(key: &MapKey) -> String {
    match key {
        MapKey::Bool(b) => b.to_string(),
        MapKey::I32(n) => n.to_string(),
        MapKey::I64(n) => n.to_string(),
        MapKey::U32(n) => n.to_string(),
        MapKey::U64(n) => n.to_string(),
        MapKey::String(s) => s.clone(),
    }
}

fn float_to_json(f: f64) -> Json {
    match Number::from_f64(f) {
        Some(n) => Json::Number(n),
        None if f.is_nan() => Json::String("NaN".to_owned()),
        None if f > 0.0 => Json::String("Infinity".to_owned()),
        None => Json::String("-Infinity".to_owned()),
    }
}

fn value_to_json(value: &Value, kind: &Kind) -> Json {
    match value {
        Value::Bool(b) => Json::Bool(*b),
        Value::I32(n) => Json::from(*n),
        Value::I64(n) => Json::from(*n),
        Value::U32(n) => Json::from(*n),
        Value::U64(n) => Json::from(*n),
        Value::F32(f) => float_to_json(f64::from(*f)),
        Value::F64(f) => float_to_json(*f),
        Value::String(s) => Json::String(s.clone()),
        Value::Bytes(b) => Json::String(STANDARD.encode(b)),
        Value::EnumNumber(n) => match kind.as_enum().and_then(|e| e.get_value(*n)) {
            Some(v) => Json::String(v.name().to_owned()),
            None => Json::from(*n),
        },
        Value::Message(m) => Json::Object(message_to_json(m)),
        Value::List(items) => Json::Array(items.iter().map(|v| value_to_json(v, kind)).collect()),
        Value::Map(map) => Json::Object(
            map.iter()
                .map(|(k, v)| (map_key_string(k), value_to_json(v, kind)))
                .collect(),
        ),
    }
}

// ---------------------------------------------------------------------------
// Input
// ---------------------------------------------------------------------------

/// Parses a generated message from a JSON value with the Mesos JSON rules.
pub fn from_json<M: prost::Message + prost::Name + Default>(json: &Json) -> Result<M, JsonError> {
    let desc = descriptor_of::<M>()?;
    let dynamic = from_json_dynamic(&desc, json)?;
    M::decode(dynamic.encode_to_vec().as_slice()).map_err(JsonError::Decode)
}

/// Parses a generated message from JSON bytes (e.g. an HTTP body or RecordIO record).
pub fn from_json_slice<M: prost::Message + prost::Name + Default>(
    bytes: &[u8],
) -> Result<M, JsonError> {
    let json: Json = serde_json::from_slice(bytes).map_err(JsonError::Syntax)?;
    from_json(&json)
}

/// Parses a generated message from a JSON string.
pub fn from_json_str<M: prost::Message + prost::Name + Default>(
    text: &str,
) -> Result<M, JsonError> {
    from_json_slice(text.as_bytes())
}

/// Parses a reflected message of type `desc` and checks its required fields.
pub fn from_json_dynamic(
    desc: &MessageDescriptor,
    json: &Json,
) -> Result<DynamicMessage, JsonError> {
    let mut path = Path::default();
    let msg = parse_message(desc, json, &mut path)?;
    let mut missing = Vec::new();
    check_required(&msg, &mut path, &mut missing);
    if missing.is_empty() {
        Ok(msg)
    } else {
        Err(JsonError::MissingRequired { fields: missing })
    }
}

/// Location inside the document, rendered only when an error is reported.
/// Its segments borrow the document's keys while parsing (nothing is allocated on the way
/// down), and own the descriptor's field names while checking required fields.
#[derive(Default)]
struct Path<'a>(Vec<Segment<'a>>);

enum Segment<'a> {
    Field(Cow<'a, str>),
    Index(usize),
    Key(Cow<'a, str>),
}

impl<'a> Path<'a> {
    fn render(&self) -> String {
        let mut out = String::new();
        for segment in &self.0 {
            match segment {
                Segment::Field(name) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(name);
                }
                Segment::Index(i) => {
                    let _ = write!(out, "[{i}]");
                }
                Segment::Key(k) => {
                    let _ = write!(out, "[{k:?}]");
                }
            }
        }
        if out.is_empty() {
            out.push_str("<root>");
        }
        out
    }

    fn invalid(&self, reason: impl Into<String>) -> JsonError {
        JsonError::Invalid {
            path: self.render(),
            reason: reason.into(),
        }
    }

    fn with<T>(&mut self, segment: Segment<'a>, f: impl FnOnce(&mut Self) -> T) -> T {
        self.0.push(segment);
        let result = f(self);
        self.0.pop();
        result
    }
}

fn json_type(json: &Json) -> &'static str {
    match json {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

fn parse_message<'a>(
    desc: &MessageDescriptor,
    json: &'a Json,
    path: &mut Path<'a>,
) -> Result<DynamicMessage, JsonError> {
    let Json::Object(object) = json else {
        return Err(path.invalid(format!("expected an object, got {}", json_type(json))));
    };
    let mut msg = DynamicMessage::new(desc.clone());
    for (key, value) in object {
        let Some(field) = desc.get_field_by_name(key) else {
            continue;
        };
        if value.is_null() {
            continue;
        }
        path.with(Segment::Field(Cow::Borrowed(key)), |path| {
            parse_field(&mut msg, &field, value, path)
        })?;
    }
    Ok(msg)
}

fn parse_field<'a>(
    msg: &mut DynamicMessage,
    field: &FieldDescriptor,
    json: &'a Json,
    path: &mut Path<'a>,
) -> Result<(), JsonError> {
    if field.is_map() {
        let Json::Object(object) = json else {
            return Err(path.invalid(format!("expected an object, got {}", json_type(json))));
        };
        let Kind::Message(entry) = field.kind() else {
            return Err(path.invalid("malformed map field descriptor"));
        };
        let key_kind = entry.map_entry_key_field().kind();
        let value_kind = entry.map_entry_value_field().kind();
        let mut map = HashMap::with_capacity(object.len());
        for (key, value) in object {
            if value.is_null() {
                continue;
            }
            path.with(Segment::Key(Cow::Borrowed(key)), |path| {
                let key = parse_map_key(key, &key_kind, path)?;
                if let Some(value) = parse_value(&value_kind, value, false, path)? {
                    map.insert(key, value);
                }
                Ok::<_, JsonError>(())
            })?;
        }
        if !map.is_empty() {
            msg.set_field(field, Value::Map(map));
        }
    } else if field.is_list() {
        let Json::Array(array) = json else {
            return Err(path.invalid(format!("expected an array, got {}", json_type(json))));
        };
        let kind = field.kind();
        let mut items = Vec::with_capacity(array.len());
        for (i, element) in array.iter().enumerate() {
            if element.is_null() {
                continue;
            }
            if let Some(value) = path.with(Segment::Index(i), |path| {
                parse_value(&kind, element, false, path)
            })? {
                items.push(value);
            }
        }
        if !items.is_empty() {
            msg.set_field(field, Value::List(items));
        }
    } else if let Some(value) = parse_value(&field.kind(), json, field.is_required(), path)? {
        msg.set_field(field, value);
    }
    Ok(())
}

fn parse_map_key(key: &str, kind: &Kind, path: &Path<'_>) -> Result<MapKey, JsonError> {
    let bad = || path.invalid(format!("invalid map key {key:?}"));
    Ok(match kind {
        Kind::String => MapKey::String(key.to_owned()),
        Kind::Bool => match key {
            "true" => MapKey::Bool(true),
            "false" => MapKey::Bool(false),
            _ => return Err(bad()),
        },
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => MapKey::I32(key.parse().map_err(|_| bad())?),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => MapKey::I64(key.parse().map_err(|_| bad())?),
        Kind::Uint32 | Kind::Fixed32 => MapKey::U32(key.parse().map_err(|_| bad())?),
        Kind::Uint64 | Kind::Fixed64 => MapKey::U64(key.parse().map_err(|_| bad())?),
        _ => return Err(bad()),
    })
}

/// Parses one singular value; `Ok(None)` means "drop it" (unknown enum on a non-required field).
fn parse_value<'a>(
    kind: &Kind,
    json: &'a Json,
    required: bool,
    path: &mut Path<'a>,
) -> Result<Option<Value>, JsonError> {
    let value = match kind {
        Kind::Message(desc) => Value::Message(parse_message(desc, json, path)?),
        Kind::Enum(desc) => {
            let found = match json {
                Json::String(name) => desc.get_value_by_name(name),
                Json::Number(n) => n
                    .as_i64()
                    .and_then(|n| i32::try_from(n).ok())
                    .and_then(|n| desc.get_value(n)),
                other => {
                    return Err(path.invalid(format!(
                        "expected an enum name of {}, got {}",
                        desc.name(),
                        json_type(other)
                    )));
                }
            };
            match found {
                Some(v) => Value::EnumNumber(v.number()),
                None if required => {
                    return Err(path.invalid(format!("unknown {} value {json}", desc.name())));
                }
                None => return Ok(None),
            }
        }
        Kind::String => match json {
            Json::String(s) => Value::String(s.clone()),
            other => {
                return Err(path.invalid(format!("expected a string, got {}", json_type(other))));
            }
        },
        Kind::Bytes => match json {
            Json::String(s) => Value::Bytes(
                BASE64_LENIENT
                    .decode(s)
                    .map_err(|e| path.invalid(format!("invalid base64: {e}")))?
                    .into(),
            ),
            other => {
                return Err(path.invalid(format!(
                    "expected a base64 string, got {}",
                    json_type(other)
                )));
            }
        },
        Kind::Bool => match json {
            Json::Bool(b) => Value::Bool(*b),
            Json::String(s) if s == "true" => Value::Bool(true),
            Json::String(s) if s == "false" => Value::Bool(false),
            other => return Err(path.invalid(format!("expected a boolean, got {other}"))),
        },
        Kind::Double => Value::F64(parse_float(json, path)?),
        // Narrowing to f32 is the documented behaviour of float fields.
        #[allow(clippy::cast_possible_truncation)]
        Kind::Float => Value::F32(parse_float(json, path)? as f32),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            let n = parse_integer(json, path)?;
            Value::I32(
                i32::try_from(n)
                    .map_err(|_| path.invalid(format!("{n} is out of range for int32")))?,
            )
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            let n = parse_integer(json, path)?;
            Value::I64(
                i64::try_from(n)
                    .map_err(|_| path.invalid(format!("{n} is out of range for int64")))?,
            )
        }
        Kind::Uint32 | Kind::Fixed32 => {
            let n = parse_integer(json, path)?;
            Value::U32(
                u32::try_from(n)
                    .map_err(|_| path.invalid(format!("{n} is out of range for uint32")))?,
            )
        }
        Kind::Uint64 | Kind::Fixed64 => {
            let n = parse_integer(json, path)?;
            Value::U64(
                u64::try_from(n)
                    .map_err(|_| path.invalid(format!("{n} is out of range for uint64")))?,
            )
        }
    };
    Ok(Some(value))
}

/// Standard alphabet; padding optional so hand-written clients are not rejected.
const BASE64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn parse_float(json: &Json, path: &Path) -> Result<f64, JsonError> {
    match json {
        Json::Number(n) => n
            .as_f64()
            .ok_or_else(|| path.invalid(format!("{n} is not a valid double"))),
        Json::String(s) => match s.trim() {
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            "NaN" => Ok(f64::NAN),
            t => t
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .ok_or_else(|| path.invalid(format!("expected a number, got string {s:?}"))),
        },
        other => Err(path.invalid(format!("expected a number, got {}", json_type(other)))),
    }
}

/// Parses any integer representation into i128 so each caller can range-check.
fn parse_integer(json: &Json, path: &Path) -> Result<i128, JsonError> {
    let from_f64 = |f: f64, shown: &dyn std::fmt::Display| {
        // 2^64: anything at or beyond cannot fit the widest field anyway.
        if f.is_finite() && f.fract() == 0.0 && f.abs() < 18_446_744_073_709_551_616.0 {
            #[allow(clippy::cast_possible_truncation)]
            Ok(f as i128)
        } else {
            Err(path.invalid(format!("expected an integer, got {shown}")))
        }
    };
    match json {
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(i128::from(i))
            } else if let Some(u) = n.as_u64() {
                Ok(i128::from(u))
            } else {
                from_f64(n.as_f64().unwrap_or(f64::NAN), n)
            }
        }
        Json::String(s) => {
            let t = s.trim();
            if let Ok(i) = t.parse::<i128>() {
                Ok(i)
            } else {
                let shown = format!("string {s:?}");
                match t.parse::<f64>() {
                    Ok(f) => from_f64(f, &shown),
                    Err(_) => Err(path.invalid(format!("expected an integer, got {shown}"))),
                }
            }
        }
        other => Err(path.invalid(format!("expected an integer, got {}", json_type(other)))),
    }
}

fn check_required(msg: &DynamicMessage, path: &mut Path<'_>, missing: &mut Vec<String>) {
    for field in msg.descriptor().fields() {
        if !msg.has_field(&field) {
            if field.is_required() {
                let name = Cow::Owned(field.name().to_owned());
                path.with(Segment::Field(name), |path| missing.push(path.render()));
            }
            continue;
        }
        if !matches!(field.kind(), Kind::Message(_)) {
            continue;
        }
        let name = Cow::Owned(field.name().to_owned());
        path.with(Segment::Field(name), |path| match &*msg.get_field(&field) {
            Value::Message(child) => check_required(child, path, missing),
            Value::List(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let Value::Message(child) = item {
                        path.with(Segment::Index(i), |path| {
                            check_required(child, path, missing)
                        });
                    }
                }
            }
            Value::Map(map) => {
                for (key, value) in map {
                    if let Value::Message(child) = value {
                        path.with(Segment::Key(Cow::Owned(map_key_string(key))), |path| {
                            check_required(child, path, missing);
                        });
                    }
                }
            }
            _ => {}
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesos::v1::{
        CommandInfo, Filters, MasterInfo, TaskInfo, TaskStatus, container_info, task_status,
        value::Scalar as MesosScalar,
    };
    use serde_json::json;

    #[test]
    fn filters_default_is_emitted() {
        assert_eq!(to_json(&Filters::default()), json!({"refuse_seconds": 5.0}));
    }

    #[test]
    fn explicit_value_replaces_default() {
        let filters = Filters {
            refuse_seconds: Some(1.5),
        };
        assert_eq!(to_json(&filters), json!({"refuse_seconds": 1.5}));
    }

    #[test]
    fn command_info_shell_default_is_true_and_empty_repeated_is_omitted() {
        let json = to_json(&CommandInfo {
            value: Some("sleep 1".into()),
            ..Default::default()
        });
        assert_eq!(json, json!({"value": "sleep 1", "shell": true}));
    }

    #[test]
    fn deprecated_default_is_not_emitted() {
        let json = to_json(&crate::mesos::v1::Resource {
            name: "cpus".into(),
            r#type: crate::mesos::v1::value::Type::Scalar as i32,
            scalar: Some(crate::mesos::v1::value::Scalar { value: 1.0 }),
            ..Default::default()
        });
        assert_eq!(
            json,
            json!({"name": "cpus", "type": "SCALAR", "scalar": {"value": 1.0}})
        );
    }

    #[test]
    fn required_field_default_is_emitted_for_master_info() {
        let json = to_json(&MasterInfo {
            id: "m".into(),
            ..Default::default()
        });
        assert_eq!(json["port"], json!(5050));
        assert_eq!(json["ip"], json!(0));
    }

    #[test]
    fn numeric_strings_and_string_bools_are_accepted() {
        let f: Filters = from_json(&json!({"refuse_seconds": "7.5"})).unwrap();
        assert_eq!(f.refuse_seconds, Some(7.5));
        let c: CommandInfo = from_json(&json!({"shell": "false"})).unwrap();
        assert_eq!(c.shell, Some(false));
        let r: crate::mesos::v1::value::Range =
            from_json(&json!({"begin": "31000", "end": 32000.0})).unwrap();
        assert_eq!((r.begin, r.end), (31000, 32000));
    }

    #[test]
    fn infinity_strings_are_accepted_for_doubles() {
        let f: Filters = from_json(&json!({"refuse_seconds": "Infinity"})).unwrap();
        assert_eq!(f.refuse_seconds, Some(f64::INFINITY));
        assert_eq!(to_json(&f), json!({"refuse_seconds": "Infinity"}));
        let f: Filters = from_json(&json!({"refuse_seconds": "-Infinity"})).unwrap();
        assert_eq!(f.refuse_seconds, Some(f64::NEG_INFINITY));
    }

    #[test]
    fn out_of_range_and_fractional_integers_are_rejected() {
        let err = from_json::<crate::mesos::v1::value::Range>(&json!({"begin": -1, "end": 2}))
            .unwrap_err();
        assert_eq!(err.to_string(), "begin: -1 is out of range for uint64");
        let err = from_json::<crate::mesos::v1::value::Range>(&json!({"begin": 1.5, "end": 2}))
            .unwrap_err();
        assert_eq!(err.to_string(), "begin: expected an integer, got 1.5");
    }

    #[test]
    fn null_means_unset_and_unknown_keys_are_ignored() {
        let c: CommandInfo =
            from_json(&json!({"value": null, "bogus": {"x": 1}, "shell": null})).unwrap();
        assert_eq!(c, CommandInfo::default());
    }

    #[test]
    fn unknown_optional_enum_is_dropped_but_required_enum_is_an_error() {
        let s: crate::mesos::v1::TaskStatus = from_json(&json!({
            "task_id": {"value": "t"}, "state": "TASK_RUNNING", "source": "SOURCE_MARS"
        }))
        .unwrap();
        assert_eq!(s.source, None);
        let err =
            from_json::<TaskStatus>(&json!({"task_id": {"value": "t"}, "state": "TASK_NAPPING"}))
                .unwrap_err();
        assert_eq!(
            err.to_string(),
            "state: unknown TaskState value \"TASK_NAPPING\""
        );
    }

    #[test]
    fn bytes_are_standard_base64() {
        let status = TaskStatus {
            task_id: crate::mesos::v1::TaskId { value: "t".into() },
            state: crate::mesos::v1::TaskState::TaskRunning as i32,
            uuid: Some(vec![0xfb, 0xff, 0x00, 0x10]),
            source: Some(task_status::Source::Executor as i32),
            ..Default::default()
        };
        let json = to_json(&status);
        assert_eq!(json["uuid"], json!("+/8AEA=="));
        assert_eq!(json["state"], json!("TASK_RUNNING"));
        assert_eq!(json["source"], json!("SOURCE_EXECUTOR"));
        let back: TaskStatus = from_json(&json).unwrap();
        assert_eq!(back, status);
        let unpadded: TaskStatus = from_json(
            &json!({"task_id": {"value": "t"}, "state": "TASK_RUNNING", "uuid": "+/8AEA"}),
        )
        .unwrap();
        assert_eq!(unpadded.uuid, status.uuid);
    }

    #[test]
    fn missing_required_fields_are_all_reported_with_paths() {
        let err = from_json::<TaskInfo>(&json!({
            "name": "t",
            "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {}}]
        }))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Missing required fields: task_id, agent_id, resources[0].scalar.value"
        );
    }

    #[test]
    fn wrong_shapes_name_the_field_path() {
        let err = from_json::<TaskInfo>(&json!({
            "name": "t", "task_id": {"value": "t"}, "agent_id": {"value": "a"},
            "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": "lots"}}]
        }))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "resources[0].scalar.value: expected a number, got string \"lots\""
        );
        let err = from_json::<TaskInfo>(&json!([])).unwrap_err();
        assert_eq!(err.to_string(), "<root>: expected an object, got an array");
    }

    #[test]
    fn maps_are_json_objects() {
        let json = json!({
            "name": "t", "task_id": {"value": "t"}, "agent_id": {"value": "a"},
            "limits": {"cpus": {"value": 2.0}, "mem": {"value": 64.0}}
        });
        let task: TaskInfo = from_json(&json).unwrap();
        assert_eq!(task.limits["cpus"], MesosScalar { value: 2.0 });
        assert_eq!(to_json(&task)["limits"], json["limits"]);
    }

    #[test]
    fn docker_defaults_are_emitted_inside_set_messages_only() {
        let json = to_json(&crate::mesos::v1::ContainerInfo {
            r#type: container_info::Type::Docker as i32,
            docker: Some(container_info::DockerInfo {
                image: "nginx".into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(
            json,
            json!({"type": "DOCKER", "docker": {"image": "nginx", "network": "HOST", "privileged": false}})
        );
    }
}
