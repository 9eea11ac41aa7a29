//! Marathon's event stream (`GET /v2/events`, server-sent events): the event type and its JSON
//! data, and a pure decoder from the bytes of the stream to events.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::time::Timestamp;

/// The largest event the decoder accepts (its `data` plus the line being read). Marathon's
/// largest events carry a deployment plan with the original and target definitions.
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// One event: its type (`status_update_event`, `deployment_success`, ...) and its data, the
/// JSON object Marathon sends (with `eventType` and `timestamp`).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub event_type: String,
    pub data: Value,
}

impl Event {
    /// The `timestamp` field of the data, if it has a valid one.
    pub fn timestamp(&self) -> Option<Timestamp> {
        Timestamp::parse(self.data.get("timestamp")?.as_str()?)
    }

    /// The data as `T` (a struct with the fields of this event type).
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(&self.data)
    }
}

/// Why the stream could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("an event is larger than {limit} bytes")]
    TooLarge { limit: usize },
}

/// Turns the bytes of an SSE stream, in chunks of any size, into events. Lines end with `\n`
/// (a `\r` before it is dropped); a blank line ends an event; `event:` names it, `data:`
/// lines make its data (joined by `\n`), comments (`:`) and other fields are skipped. Data
/// that is not JSON is kept as a JSON string; an event without `event:` takes the data's
/// `eventType`, else `message`.
#[derive(Debug)]
pub struct SseDecoder {
    line: Vec<u8>,
    event_type: Option<String>,
    data: Option<String>,
    max_event_bytes: usize,
}

impl Default for SseDecoder {
    fn default() -> Self {
        SseDecoder::new(MAX_EVENT_BYTES)
    }
}

impl SseDecoder {
    pub fn new(max_event_bytes: usize) -> SseDecoder {
        SseDecoder {
            line: Vec::new(),
            event_type: None,
            data: None,
            max_event_bytes,
        }
    }

    /// Feeds `chunk`; returns the events it completed, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Event>, SseError> {
        let mut out = Vec::new();
        for part in chunk.split_inclusive(|b| *b == b'\n') {
            self.line.extend_from_slice(part);
            let pending = self
                .line
                .len()
                .saturating_add(self.data.as_ref().map_or(0, String::len));
            if pending > self.max_event_bytes {
                self.line.clear();
                self.data = None;
                self.event_type = None;
                return Err(SseError::TooLarge {
                    limit: self.max_event_bytes,
                });
            }
            if self.line.last() != Some(&b'\n') {
                continue;
            }
            let mut line = std::mem::take(&mut self.line);
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if let Some(event) = self.line_done(&String::from_utf8_lossy(&line)) {
                out.push(event);
            }
        }
        Ok(out)
    }

    fn line_done(&mut self, line: &str) -> Option<Event> {
        if line.is_empty() {
            return self.dispatch();
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event_type = Some(value.to_string()),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<Event> {
        let event_type = self.event_type.take();
        // An event without data is not dispatched (the SSE rule).
        let raw = self.data.take()?;
        let data = serde_json::from_str(&raw).unwrap_or(Value::String(raw));
        let event_type = event_type
            .filter(|t| !t.is_empty())
            .or_else(|| data.get("eventType")?.as_str().map(str::to_string))
            .unwrap_or_else(|| "message".to_string());
        Some(Event { event_type, data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const STREAM: &str = "event: event_stream_attached\ndata: {\"remoteAddress\":\"\",\"eventType\":\"event_stream_attached\",\"timestamp\":\"2024-01-02T03:04:05.678Z\"}\n\n: a comment\nevent: deployment_success\r\ndata: {\"id\":\"d-1\",\r\ndata: \"eventType\":\"deployment_success\"}\r\n\r\ndata: {\"eventType\":\"status_update_event\"}\n\ndata: not json\nid: 7\n\nevent: no_data\n\n";

    fn decode_in_chunks_of(size: usize) -> Vec<Event> {
        let mut d = SseDecoder::default();
        STREAM
            .as_bytes()
            .chunks(size)
            .flat_map(|c| d.push(c).expect("decodes"))
            .collect()
    }

    #[test]
    fn events_are_decoded_whatever_the_chunk_boundaries() {
        let whole = decode_in_chunks_of(STREAM.len());
        let types: Vec<&str> = whole.iter().map(|e| e.event_type.as_str()).collect();
        assert_eq!(
            types,
            [
                "event_stream_attached",
                "deployment_success",
                "status_update_event",
                "message"
            ]
        );
        assert_eq!(
            whole[0].timestamp().map(|t| t.to_string()).as_deref(),
            Some("2024-01-02T03:04:05.678Z")
        );
        assert_eq!(whole[1].data["id"], "d-1");
        assert_eq!(whole[3].data, json!("not json"));
        for size in [1, 2, 3, 7, 64] {
            assert_eq!(decode_in_chunks_of(size), whole, "chunks of {size}");
        }
        #[derive(serde::Deserialize)]
        struct Success {
            id: String,
        }
        assert_eq!(whole[1].parse::<Success>().expect("typed").id, "d-1");
    }

    #[test]
    fn an_event_over_the_limit_is_an_error_not_a_growing_buffer() {
        let mut d = SseDecoder::new(64);
        let big = format!("data: {}\n", "x".repeat(40));
        assert_eq!(d.push(big.as_bytes()).expect("fits"), []);
        assert_eq!(
            d.push(big.as_bytes()),
            Err(SseError::TooLarge { limit: 64 })
        );
        let mut d = SseDecoder::new(64);
        assert_eq!(
            d.push("y".repeat(65).as_bytes()),
            Err(SseError::TooLarge { limit: 64 })
        );
        // After the error the decoder starts afresh.
        let ok = d.push(b"\ndata: {}\n\n").expect("decodes");
        assert_eq!(ok.len(), 1);
    }
}
