//! Property-based fuzzing of the wire entry points: RecordIO framing, the Mesos JSON mapping
//! and protobuf decoding. Every property is "no panic, bounded work, and a round trip where one
//! exists". The case count is small so CI runs this in seconds; `CAPSTAN_FUZZ_CASES=100000`
//! raises it for a long local run.

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::{Map, Value as Json};

use crate::json::{from_json, from_json_slice, to_json};
use crate::mesos::v1::{executor, master, scheduler};
use crate::recordio::{RecordIoDecoder, encode_to_vec};
use crate::{ContentType, Message as _};

fn config(default_cases: u32) -> ProptestConfig {
    let cases = std::env::var("CAPSTAN_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(cases)
    }
}

/// Field names that occur in the calls, so generated documents reach deep into the parser.
const KEYS: &[&str] = &[
    "type",
    "framework_id",
    "value",
    "subscribe",
    "framework_info",
    "user",
    "name",
    "id",
    "roles",
    "role",
    "capabilities",
    "accept",
    "offer_ids",
    "operations",
    "launch",
    "task_infos",
    "task_id",
    "agent_id",
    "resources",
    "scalar",
    "ranges",
    "range",
    "begin",
    "end",
    "set",
    "item",
    "command",
    "shell",
    "arguments",
    "environment",
    "variables",
    "container",
    "docker",
    "image",
    "network",
    "port_mappings",
    "labels",
    "labels",
    "key",
    "filters",
    "refuse_seconds",
    "kill",
    "acknowledge",
    "uuid",
    "status",
    "state",
    "data",
    "reconcile",
    "tasks",
    "message",
    "update",
    "get_state",
    "executor_id",
    "checkpoint",
    "failover_timeout",
    "hostname",
    "health_check",
    "volumes",
    "mode",
    "unacknowledged_tasks",
    "task",
    "executor",
    "discovery",
    "ports",
    "number",
];

fn scalar() -> impl Strategy<Value = Json> {
    prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<i64>().prop_map(Json::from),
        any::<u64>().prop_map(Json::from),
        any::<f64>().prop_map(Json::from),
        prop_oneof![
            Just("SUBSCRIBE".to_owned()),
            Just("ACCEPT".to_owned()),
            Just("LAUNCH".to_owned()),
            Just("SCALAR".to_owned()),
            Just("RANGES".to_owned()),
            Just("Infinity".to_owned()),
            Just("NaN".to_owned()),
            Just("18446744073709551616".to_owned()),
            Just("-1e400".to_owned()),
            Just("true".to_owned()),
            "[A-Za-z0-9+/=._ -]{0,12}",
        ]
        .prop_map(Json::String),
    ]
}

fn json_doc() -> impl Strategy<Value = Json> {
    scalar().prop_recursive(6, 96, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Json::Array),
            proptest::collection::vec((proptest::sample::select(KEYS), inner), 0..8).prop_map(
                |entries| {
                    let mut m = Map::new();
                    for (k, v) in entries {
                        m.insert((*k).to_owned(), v);
                    }
                    Json::Object(m)
                }
            ),
        ]
    })
}

/// Parses `doc` as `M`; if that works, the message survives JSON out and in unchanged.
fn json_round_trip<M>(doc: &Json) -> Result<(), TestCaseError>
where
    M: prost::Message + prost::Name + Default,
{
    if let Ok(msg) = from_json::<M>(doc) {
        let once = to_json(&msg);
        let again: M = from_json(&once)
            .map_err(|e| TestCaseError::fail(format!("own output rejected: {e}: {once}")))?;
        prop_assert_eq!(to_json(&again), once);
        let bytes = msg.encode_to_vec();
        let decoded = M::decode(bytes.as_slice())
            .map_err(|e| TestCaseError::fail(format!("own protobuf rejected: {e}")))?;
        prop_assert_eq!(to_json(&decoded), to_json(&msg));
    }
    Ok(())
}

fn protobuf_round_trip<M>(bytes: &[u8]) -> Result<(), TestCaseError>
where
    M: prost::Message + prost::Name + Default,
{
    if let Ok(msg) = M::decode(bytes) {
        let again = M::decode(msg.encode_to_vec().as_slice())
            .map_err(|e| TestCaseError::fail(format!("own protobuf rejected: {e}")))?;
        prop_assert_eq!(again.encode_to_vec(), msg.encode_to_vec());
        // Whatever decodes as protobuf can be shown as JSON.
        let _ = crate::json::try_to_json(&msg);
    }
    Ok(())
}

/// A valid scheduler call (the SUBSCRIBE pymesos sends), to mutate.
const SUBSCRIBE: &str = r#"{"type":"SUBSCRIBE","subscribe":{"framework_info":{"user":"root","name":"fuzz","roles":["*"],"capabilities":[{"type":"MULTI_ROLE"}],"failover_timeout":60.0}}}"#;

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn recordio_never_panics_and_never_returns_more_than_it_was_given(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..48), 0..12),
        max in 1usize..64,
    ) {
        let mut decoder = RecordIoDecoder::new(max);
        let pushed: usize = chunks.iter().map(Vec::len).sum();
        let mut returned = 0usize;
        for chunk in &chunks {
            decoder.push(chunk);
            // Bounded: each successful call consumes a header and a body.
            for _ in 0..=chunk.len() {
                match decoder.next_record() {
                    Ok(Some(r)) => {
                        prop_assert!(!r.is_empty() && r.len() <= max);
                        returned += r.len();
                    }
                    Ok(None) | Err(_) => break,
                }
            }
        }
        prop_assert!(returned <= pushed);
        prop_assert!(decoder.buffered_len() <= pushed);
    }

    #[test]
    fn recordio_round_trips_at_any_chunking(
        records in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..40), 0..8),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let stream: Vec<u8> = records.iter().flat_map(|r| encode_to_vec(r)).collect();
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        points.push(0);
        points.push(stream.len());
        points.sort_unstable();
        let mut decoder = RecordIoDecoder::new(64);
        let mut out: Vec<Bytes> = Vec::new();
        for w in points.windows(2) {
            decoder.push(&stream[w[0]..w[1]]);
            while let Some(r) = decoder.next_record().map_err(|e| TestCaseError::fail(e.to_string()))? {
                out.push(r);
            }
        }
        let out: Vec<Vec<u8>> = out.iter().map(|b| b.to_vec()).collect();
        prop_assert_eq!(out, records);
        prop_assert!(!decoder.has_partial_record());
    }

    #[test]
    fn json_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = from_json_slice::<scheduler::Call>(&bytes);
        let _ = from_json_slice::<executor::Call>(&bytes);
        let _ = from_json_slice::<master::Call>(&bytes);
    }

    #[test]
    fn mutated_subscribe_never_panics(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let mut body = SUBSCRIBE.as_bytes().to_vec();
        for (at, byte) in flips {
            let i = at.index(body.len());
            body[i] = byte;
        }
        let _ = ContentType::Json.decode::<scheduler::Call>(&body);
        let _ = ContentType::Protobuf.decode::<scheduler::Call>(&body);
    }

    #[test]
    fn json_documents_parse_or_fail_cleanly_and_round_trip(doc in json_doc()) {
        json_round_trip::<scheduler::Call>(&doc)?;
        json_round_trip::<executor::Call>(&doc)?;
        json_round_trip::<master::Call>(&doc)?;
        json_round_trip::<crate::mesos::v1::TaskInfo>(&doc)?;
    }

    #[test]
    fn typed_calls_round_trip(doc in json_doc(), kind in 0usize..18) {
        // Give the document a valid call type so the parser walks the call's body.
        let mut doc = doc;
        if let Json::Object(m) = &mut doc {
            let names = ["SUBSCRIBE", "TEARDOWN", "ACCEPT", "DECLINE", "REVIVE", "KILL",
                "SHUTDOWN", "ACKNOWLEDGE", "RECONCILE", "MESSAGE", "REQUEST", "SUPPRESS",
                "UPDATE_FRAMEWORK", "LAUNCH", "UPDATE", "GET_STATE", "GET_TASKS", "UNKNOWN"];
            m.insert("type".to_owned(), Json::String(names[kind].to_owned()));
        }
        json_round_trip::<scheduler::Call>(&doc)?;
        json_round_trip::<executor::Call>(&doc)?;
        json_round_trip::<master::Call>(&doc)?;
    }

    #[test]
    fn protobuf_bytes_never_panic_and_round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        protobuf_round_trip::<scheduler::Call>(&bytes)?;
        protobuf_round_trip::<scheduler::Event>(&bytes)?;
        protobuf_round_trip::<executor::Call>(&bytes)?;
        protobuf_round_trip::<master::Call>(&bytes)?;
    }
}

#[test]
fn deeply_nested_json_is_a_syntax_error_not_a_stack_overflow() {
    let depth = 10_000;
    let body = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    assert!(matches!(
        from_json_slice::<scheduler::Call>(body.as_bytes()),
        Err(crate::JsonError::Syntax(_))
    ));
    let body = format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
    assert!(from_json_slice::<scheduler::Call>(body.as_bytes()).is_err());
}

#[test]
fn deeply_nested_protobuf_is_an_error_not_a_stack_overflow() {
    // Field 1 of every level is a length-delimited sub-message: prost's recursion limit stops it.
    let mut bytes: Vec<u8> = Vec::new();
    for _ in 0..5_000 {
        let mut outer = vec![0x0a];
        let mut len = bytes.len();
        loop {
            let b = (len & 0x7f) as u8;
            len >>= 7;
            if len == 0 {
                outer.push(b);
                break;
            }
            outer.push(b | 0x80);
        }
        outer.extend_from_slice(&bytes);
        bytes = outer;
        if bytes.len() > 200_000 {
            break;
        }
    }
    let _ = crate::mesos::v1::TaskInfo::decode(bytes.as_slice());
    let _ = scheduler::Call::decode(bytes.as_slice());
}
