//! The Marathon event bus: every event is `{"eventType", "timestamp", ...}` and goes to all
//! `/v2/events` subscribers (SSE). Publishing never blocks; slow subscribers lose events.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::model::Timestamp;

/// One published event, already rendered as one line of JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub event_type: String,
    pub data: String,
}

/// Cheap to clone; all clones publish to the same subscribers.
#[derive(Clone, Debug)]
pub struct EventBus {
    tx: broadcast::Sender<Arc<Event>>,
}

/// Events kept for subscribers that fall behind: enough for the status updates of a burst of
/// thousands of launches, so an SSE reader does not lose them while the core races ahead.
const BACKLOG: usize = 16 * 1024;

impl Default for EventBus {
    fn default() -> Self {
        EventBus::new(BACKLOG)
    }
}

impl EventBus {
    pub fn new(capacity: usize) -> EventBus {
        let (tx, _) = broadcast::channel(capacity);
        EventBus { tx }
    }

    /// Adds `eventType` and `timestamp` to `fields` and sends it to every subscriber.
    pub fn publish(&self, event_type: &str, fields: Value) {
        let event = render(event_type, fields, Timestamp::now());
        let _ = self.tx.send(Arc::new(event));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }
}

/// The event as it goes on the wire.
pub fn render(event_type: &str, fields: Value, now: Timestamp) -> Event {
    let mut v = match fields {
        Value::Object(m) => Value::Object(m),
        other => json!({ "value": other }),
    };
    v["eventType"] = json!(event_type);
    v["timestamp"] = json!(now.to_string());
    Event {
        event_type: event_type.to_string(),
        data: v.to_string(),
    }
}
