//! The operator API's event stream (`SUBSCRIBE` on `/api/v1`): the cluster state, then every
//! change, as typed [`Event`]s.

use bytes::Bytes;
use capstan_proto::mesos::v1::master::Event;
use capstan_proto::mesos::v1::master::event::Type as EventType;
use tracing::warn;

use crate::client::{MasterClient, SubscribeError};
use crate::endpoint::Endpoint;
use crate::subscription::{StreamError, Subscription};

/// The operator API's path on a master.
pub const OPERATOR_PATH: &str = "/api/v1";
const SUBSCRIBE: &str = r#"{"type":"SUBSCRIBE"}"#;

/// An open operator event stream. `SUBSCRIBED` sets the heartbeat watchdog's interval;
/// an event that does not decode is logged and skipped.
#[derive(Debug)]
pub struct OperatorEvents {
    sub: Subscription,
}

impl OperatorEvents {
    /// Subscribes on the leading master (see [`MasterClient::subscribe`]).
    pub async fn subscribe(client: &mut MasterClient) -> Result<OperatorEvents, SubscribeError> {
        let sub = client.subscribe(OPERATOR_PATH, SUBSCRIBE).await?;
        Ok(OperatorEvents { sub })
    }

    pub fn leader(&self) -> &Endpoint {
        self.sub.leader()
    }

    pub fn subscription(&self) -> &Subscription {
        &self.sub
    }

    /// The next event; `Ok(None)` once the master closed the stream. Cancel-safe.
    pub async fn next(&mut self) -> Result<Option<Event>, StreamError> {
        loop {
            let Some(record) = self.sub.next().await? else {
                return Ok(None);
            };
            if let Some(event) = self.decode(&record) {
                return Ok(Some(event));
            }
        }
    }

    /// An event that is already here, without waiting (see [`Subscription::next_ready`]).
    pub fn next_ready(&mut self) -> Result<Option<Event>, StreamError> {
        while let Some(record) = self.sub.next_ready()? {
            if let Some(event) = self.decode(&record) {
                return Ok(Some(event));
            }
        }
        Ok(None)
    }

    fn decode(&mut self, record: &Bytes) -> Option<Event> {
        let event: Event = match capstan_proto::from_json_slice(record) {
            Ok(e) => e,
            Err(e) => {
                warn!(error = %e, "Skipping an operator event that does not decode");
                return None;
            }
        };
        if event.r#type == Some(EventType::Subscribed as i32)
            && let Some(secs) = event
                .subscribed
                .as_ref()
                .and_then(|s| s.heartbeat_interval_seconds)
        {
            self.sub.set_heartbeat_interval_secs(secs);
        }
        Some(event)
    }
}
