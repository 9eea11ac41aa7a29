//! The v1 scheduler API: SUBSCRIBE on `/api/v1/scheduler`, then calls to the same master
//! carrying the subscription's `Mesos-Stream-Id`.

use bytes::Bytes;

use crate::client::{Calls, MasterClient, SubscribeError};
use crate::subscription::Subscription;

/// The scheduler API's path on a master.
pub const SCHEDULER_PATH: &str = "/api/v1/scheduler";

impl MasterClient {
    /// Subscribes a framework with a SUBSCRIBE call already serialised as JSON.
    pub async fn subscribe_scheduler(
        &mut self,
        subscribe_call: impl Into<Bytes>,
    ) -> Result<Subscription, SubscribeError> {
        self.subscribe(SCHEDULER_PATH, subscribe_call).await
    }

    /// Calls for the framework `sub` subscribed, to the master that accepted it.
    pub fn scheduler_calls(&self, sub: &Subscription) -> Calls {
        self.calls(sub.leader(), SCHEDULER_PATH, sub.stream_id())
    }
}
