//! An open SUBSCRIBE stream: RecordIO records out of the chunked response, with the
//! heartbeat watchdog and a maximum record size.

use bytes::Bytes;
use capstan_proto::recordio::{RecordIoDecoder, RecordIoError};
use futures::stream::BoxStream;
use futures::{FutureExt, Stream, StreamExt};
use tokio::time::Instant;

use crate::endpoint::Endpoint;
use crate::watchdog::Watchdog;

/// Why a stream ended other than by the master closing it between records.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("the event stream broke")]
    Body(#[source] reqwest::Error),
    #[error("no record from the master for {0:?}")]
    Idle(std::time::Duration),
    #[error("a record of {len} bytes is larger than the maximum of {max}")]
    TooLarge { len: u64, max: usize },
    #[error("the event stream is not valid RecordIO")]
    Framing(#[source] RecordIoError),
    #[error("the event stream ended inside a record")]
    Truncated,
}

/// One subscription to one master. Dropping it closes the connection.
pub struct Subscription {
    leader: Endpoint,
    stream_id: Option<String>,
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    decoder: RecordIoDecoder,
    watchdog: Watchdog,
    records: u64,
    ended: bool,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("leader", &self.leader)
            .field("stream_id", &self.stream_id)
            .field("records", &self.records)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    pub(crate) fn new(
        leader: Endpoint,
        stream_id: Option<String>,
        body: BoxStream<'static, reqwest::Result<Bytes>>,
        max_record_len: usize,
        watchdog: Watchdog,
    ) -> Subscription {
        Subscription {
            leader,
            stream_id,
            body,
            decoder: RecordIoDecoder::new(max_record_len),
            watchdog,
            records: 0,
            ended: false,
        }
    }

    /// The master that accepted the subscription (after redirects): the leader.
    pub fn leader(&self) -> &Endpoint {
        &self.leader
    }

    /// The `Mesos-Stream-Id` the master answered with.
    pub fn stream_id(&self) -> Option<&str> {
        self.stream_id.as_deref()
    }

    /// Records received so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// The master announced its heartbeat interval (`heartbeat_interval_seconds`,
    /// `ping_interval_seconds`); unusable values are ignored.
    pub fn set_heartbeat_interval_secs(&mut self, secs: f64) {
        self.watchdog.set_interval_secs(secs);
    }

    pub fn watchdog(&self) -> &Watchdog {
        &self.watchdog
    }

    /// The next record; `Ok(None)` once the master closed the stream between records.
    /// Cancel-safe: a record is never lost when the future is dropped.
    pub async fn next(&mut self) -> Result<Option<Bytes>, StreamError> {
        loop {
            if let Some(record) = self.decoded()? {
                return Ok(Some(record));
            }
            if self.ended {
                return self.end();
            }
            let chunk = match self.watchdog.deadline() {
                Some(deadline) => tokio::time::timeout_at(deadline, self.body.next())
                    .await
                    .map_err(|_| StreamError::Idle(self.watchdog.limit()))?,
                None => self.body.next().await,
            };
            self.take(chunk)?;
        }
    }

    /// A record that is already here (decoded from bytes received so far, or from data the
    /// connection has ready), without waiting: for folding a burst into one update.
    pub fn next_ready(&mut self) -> Result<Option<Bytes>, StreamError> {
        loop {
            if let Some(record) = self.decoded()? {
                return Ok(Some(record));
            }
            if self.ended {
                return Ok(None);
            }
            match self.body.next().now_or_never() {
                Some(chunk) => self.take(chunk)?,
                None => return Ok(None),
            }
        }
    }

    /// The records as a stream, ending after the first error.
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, StreamError>> + Send {
        futures::stream::unfold(Some(self), |sub| async move {
            let mut sub = sub?;
            match sub.next().await {
                Ok(Some(record)) => Some((Ok(record), Some(sub))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        })
    }

    fn take(&mut self, chunk: Option<reqwest::Result<Bytes>>) -> Result<(), StreamError> {
        match chunk {
            Some(Ok(bytes)) => self.decoder.push(&bytes),
            Some(Err(e)) => return Err(StreamError::Body(e)),
            None => self.ended = true,
        }
        Ok(())
    }

    fn end(&self) -> Result<Option<Bytes>, StreamError> {
        if self.decoder.has_partial_record() {
            Err(StreamError::Truncated)
        } else {
            Ok(None)
        }
    }

    fn decoded(&mut self) -> Result<Option<Bytes>, StreamError> {
        match self.decoder.next_record() {
            Ok(Some(record)) => {
                self.records = self.records.saturating_add(1);
                self.watchdog.record(Instant::now());
                Ok(Some(record))
            }
            Ok(None) => Ok(None),
            Err(RecordIoError::TooLarge { len, max }) => Err(StreamError::TooLarge { len, max }),
            Err(e) => Err(StreamError::Framing(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn sub(chunks: Vec<&'static [u8]>, max: usize, pending_after: bool) -> Subscription {
        let items = futures::stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from_static(c))));
        let body = if pending_after {
            items.chain(futures::stream::pending()).boxed()
        } else {
            items.boxed()
        };
        let watchdog = Watchdog::new(Duration::from_secs(1), 2, Instant::now());
        Subscription::new(
            Endpoint::parse("m:5050").unwrap(),
            Some("s-1".into()),
            body,
            max,
            watchdog,
        )
    }

    #[tokio::test]
    async fn records_split_across_chunks_are_joined() {
        let mut s = sub(vec![b"5\nhel", b"lo2\n{}", b"1"], 100, false);
        assert_eq!(s.next().await.unwrap().as_deref(), Some(&b"hello"[..]));
        assert_eq!(s.next().await.unwrap().as_deref(), Some(&b"{}"[..]));
        assert!(matches!(s.next().await, Err(StreamError::Truncated)));
        assert_eq!(s.records(), 2);
        assert_eq!(s.stream_id(), Some("s-1"));
    }

    #[tokio::test]
    async fn a_record_over_the_maximum_ends_the_stream_with_an_error() {
        let mut s = sub(vec![b"3\nabc", b"11\n"], 10, false);
        assert_eq!(s.next().await.unwrap().as_deref(), Some(&b"abc"[..]));
        match s.next().await {
            Err(StreamError::TooLarge { len: 11, max: 10 }) => {}
            other => panic!("expected TooLarge, got {other:?}"),
        }
        let mut exact = sub(vec![b"10\n0123456789"], 10, false);
        assert_eq!(exact.next().await.unwrap().map(|r| r.len()), Some(10));
        assert_eq!(exact.next().await.unwrap(), None, "a clean end");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_stream_is_declared_dead_after_the_missed_heartbeats() {
        let mut s = sub(vec![b"2\n{}"], 100, true);
        assert!(s.next().await.unwrap().is_some());
        let started = Instant::now();
        match s.next().await {
            Err(StreamError::Idle(limit)) => assert_eq!(limit, Duration::from_secs(2)),
            other => panic!("expected Idle, got {other:?}"),
        }
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        s.set_heartbeat_interval_secs(10.0);
        assert_eq!(s.watchdog().limit(), Duration::from_secs(20));
    }

    #[tokio::test]
    async fn ready_records_are_taken_without_waiting() {
        let mut s = sub(vec![b"1\na1\nb", b"1\nc"], 100, true);
        assert_eq!(s.next_ready().unwrap().as_deref(), Some(&b"a"[..]));
        assert_eq!(s.next_ready().unwrap().as_deref(), Some(&b"b"[..]));
        assert_eq!(s.next_ready().unwrap().as_deref(), Some(&b"c"[..]));
        assert_eq!(s.next_ready().unwrap(), None, "nothing more is ready");
    }

    #[tokio::test]
    async fn the_stream_adapter_yields_every_record_then_ends() {
        let s = sub(vec![b"1\na1\nb"], 100, false);
        let got: Vec<_> = s.into_stream().collect().await;
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(Result::is_ok));
    }
}
