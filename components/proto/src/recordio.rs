//! RecordIO framing used by the Mesos streaming APIs.
//!
//! A record is its length as ASCII decimal digits, a line feed, then exactly that many bytes:
//! `20\n{"type":"HEARTBEAT"}`. Records follow each other with no separator, and the framing is
//! independent of HTTP chunk boundaries. The decoder here is pure (no I/O): feed it bytes as they
//! arrive and pull complete records out. It never allocates more than what was pushed, rejects
//! malformed headers with a [`RecordIoError`], and never panics.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The longest decimal length header accepted (`u64::MAX` has 20 digits).
pub const MAX_LENGTH_DIGITS: usize = 20;

/// Default maximum record size used by [`RecordIoDecoder::default`]: 64 MiB.
pub const DEFAULT_MAX_RECORD_LEN: usize = 64 * 1024 * 1024;

/// Why a RecordIO stream could not be decoded. The stream is unusable afterwards.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordIoError {
    /// The length header contains something other than ASCII digits.
    #[error("record length contains non-digit byte 0x{byte:02x}")]
    NonDigit {
        /// The offending byte.
        byte: u8,
    },
    /// The length header is empty (a line feed with no digits).
    #[error("record length is empty")]
    EmptyLength,
    /// The length header is zero; Mesos never sends empty records.
    #[error("record length is zero")]
    ZeroLength,
    /// The length header has more digits than any valid length.
    #[error("record length has more than {MAX_LENGTH_DIGITS} digits")]
    TooManyDigits,
    /// The declared length is larger than the configured maximum.
    #[error("record length {len} exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Declared length (saturated at `u64::MAX`).
        len: u64,
        /// Configured maximum.
        max: usize,
    },
}

/// Appends one framed record (`<len>\n<record>`) to `out`.
pub fn encode(record: &[u8], out: &mut Vec<u8>) {
    out.reserve(record.len() + MAX_LENGTH_DIGITS + 1);
    out.extend_from_slice(record.len().to_string().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(record);
}

/// Returns one framed record as a new buffer.
pub fn encode_to_vec(record: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(record.len() + MAX_LENGTH_DIGITS + 1);
    encode(record, &mut out);
    out
}

/// Appends one framed record to a `BytesMut` (for streaming bodies and codecs).
pub fn encode_bytes(record: &[u8], out: &mut BytesMut) {
    out.reserve(record.len() + MAX_LENGTH_DIGITS + 1);
    out.put_slice(record.len().to_string().as_bytes());
    out.put_u8(b'\n');
    out.put_slice(record);
}

/// Where the decoder is within the current record.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Reading the decimal length header.
    Header,
    /// Header consumed; waiting for this many body bytes.
    Body(usize),
    /// A framing error occurred; it is reported again on every call.
    Failed(RecordIoError),
}

/// Parses records out of `buf`, which holds not-yet-consumed stream bytes.
fn decode_step(
    buf: &mut BytesMut,
    state: &mut State,
    max_record_len: usize,
) -> Result<Option<Bytes>, RecordIoError> {
    loop {
        match state {
            State::Failed(err) => return Err(err.clone()),
            State::Header => match parse_header(buf, max_record_len) {
                Ok(Some((len, consumed))) => {
                    buf.advance(consumed);
                    *state = State::Body(len);
                }
                Ok(None) => return Ok(None),
                Err(err) => {
                    *state = State::Failed(err.clone());
                    return Err(err);
                }
            },
            State::Body(len) => {
                let len = *len;
                if buf.len() < len {
                    return Ok(None);
                }
                *state = State::Header;
                return Ok(Some(buf.split_to(len).freeze()));
            }
        }
    }
}

/// Returns `(record length, header bytes including the line feed)` once a full header is buffered.
fn parse_header(
    buf: &[u8],
    max_record_len: usize,
) -> Result<Option<(usize, usize)>, RecordIoError> {
    let mut len: u64 = 0;
    let mut overflow = false;
    for (i, &byte) in buf.iter().enumerate() {
        if byte == b'\n' {
            if i == 0 {
                return Err(RecordIoError::EmptyLength);
            }
            if overflow {
                return Err(RecordIoError::TooLarge {
                    len: u64::MAX,
                    max: max_record_len,
                });
            }
            if len == 0 {
                return Err(RecordIoError::ZeroLength);
            }
            return match usize::try_from(len) {
                Ok(n) if n <= max_record_len => Ok(Some((n, i + 1))),
                _ => Err(RecordIoError::TooLarge {
                    len,
                    max: max_record_len,
                }),
            };
        }
        if !byte.is_ascii_digit() {
            return Err(RecordIoError::NonDigit { byte });
        }
        if i >= MAX_LENGTH_DIGITS {
            return Err(RecordIoError::TooManyDigits);
        }
        match len
            .checked_mul(10)
            .and_then(|l| l.checked_add(u64::from(byte - b'0')))
        {
            Some(l) => len = l,
            None => overflow = true,
        }
    }
    Ok(None)
}

/// Incremental RecordIO decoder accepting arbitrary chunk boundaries.
#[derive(Debug)]
pub struct RecordIoDecoder {
    buf: BytesMut,
    state: State,
    max_record_len: usize,
}

impl Default for RecordIoDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_RECORD_LEN)
    }
}

impl RecordIoDecoder {
    /// Creates a decoder that rejects records longer than `max_record_len` bytes.
    pub fn new(max_record_len: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            state: State::Header,
            max_record_len,
        }
    }

    /// Appends bytes received from the stream.
    pub fn push(&mut self, chunk: &[u8]) {
        if !matches!(self.state, State::Failed(_)) {
            self.buf.extend_from_slice(chunk);
        }
    }

    /// Returns the next complete record, `Ok(None)` if more bytes are needed, or the framing
    /// error (again on every later call: a broken stream stays broken).
    pub fn next_record(&mut self) -> Result<Option<Bytes>, RecordIoError> {
        decode_step(&mut self.buf, &mut self.state, self.max_record_len)
    }

    /// True if bytes of an unfinished record are buffered; at end of stream this means the
    /// stream was truncated.
    pub fn has_partial_record(&self) -> bool {
        !self.buf.is_empty() || matches!(self.state, State::Body(_))
    }

    /// Number of bytes buffered and not yet returned.
    pub fn buffered_len(&self) -> usize {
        self.buf.len()
    }
}

/// Error of [`RecordIoCodec`]: framing or the underlying I/O.
#[derive(Debug, thiserror::Error)]
pub enum RecordIoCodecError {
    /// The byte stream is not valid RecordIO.
    #[error("invalid RecordIO framing")]
    Framing(#[from] RecordIoError),
    /// Reading or writing the transport failed.
    #[error("RecordIO transport failed")]
    Io(#[from] std::io::Error),
}

/// A `tokio_util` codec framing records as RecordIO, for `FramedRead`/`FramedWrite`.
#[derive(Debug)]
pub struct RecordIoCodec {
    state: State,
    max_record_len: usize,
}

impl RecordIoCodec {
    /// Creates a codec that rejects incoming records longer than `max_record_len` bytes.
    pub fn new(max_record_len: usize) -> Self {
        Self {
            state: State::Header,
            max_record_len,
        }
    }
}

impl Default for RecordIoCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_RECORD_LEN)
    }
}

impl tokio_util::codec::Decoder for RecordIoCodec {
    type Item = Bytes;
    type Error = RecordIoCodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, RecordIoCodecError> {
        Ok(decode_step(src, &mut self.state, self.max_record_len)?)
    }
}

impl<T: AsRef<[u8]>> tokio_util::codec::Encoder<T> for RecordIoCodec {
    type Error = RecordIoCodecError;

    fn encode(&mut self, item: T, dst: &mut BytesMut) -> Result<(), RecordIoCodecError> {
        encode_bytes(item.as_ref(), dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::codec::{Decoder as _, Encoder as _};

    fn decode_all(input: &[u8], max: usize) -> Result<Vec<Bytes>, RecordIoError> {
        let mut decoder = RecordIoDecoder::new(max);
        decoder.push(input);
        let mut out = Vec::new();
        while let Some(record) = decoder.next_record()? {
            out.push(record);
        }
        Ok(out)
    }

    #[test]
    fn encodes_the_documented_example() {
        assert_eq!(
            encode_to_vec(br#"{"type":"HEARTBEAT"}"#),
            br#"20
{"type":"HEARTBEAT"}"#
        );
    }

    #[test]
    fn decodes_back_to_back_records() {
        let mut wire = Vec::new();
        encode(b"hello", &mut wire);
        encode(b"{}", &mut wire);
        let records = decode_all(&wire, 100).unwrap();
        assert_eq!(records, vec![Bytes::from("hello"), Bytes::from("{}")]);
    }

    #[test]
    fn malformed_input_is_rejected() {
        let cases: &[(&[u8], usize, RecordIoError)] = &[
            (b"x\nabc", 100, RecordIoError::NonDigit { byte: b'x' }),
            (b"1 \nab", 100, RecordIoError::NonDigit { byte: b' ' }),
            (b"-1\nab", 100, RecordIoError::NonDigit { byte: b'-' }),
            (b"\r\n", 100, RecordIoError::NonDigit { byte: b'\r' }),
            (b"\nabc", 100, RecordIoError::EmptyLength),
            (b"0\n", 100, RecordIoError::ZeroLength),
            (b"000\n", 100, RecordIoError::ZeroLength),
            (
                b"101\n",
                100,
                RecordIoError::TooLarge { len: 101, max: 100 },
            ),
            (
                b"99999999999999999999\n",
                100,
                RecordIoError::TooLarge {
                    len: u64::MAX,
                    max: 100,
                },
            ),
            (
                b"000000000000000000001\n",
                100,
                RecordIoError::TooManyDigits,
            ),
            // An overlong digit run is rejected before its line feed ever arrives.
            (
                b"1111111111111111111111111",
                100,
                RecordIoError::TooManyDigits,
            ),
            (b"2\nab3x", 100, RecordIoError::NonDigit { byte: b'x' }),
        ];
        for (input, max, expected) in cases {
            let got = decode_all(input, *max);
            assert_eq!(got.as_ref().err(), Some(expected), "input {input:?}");
        }
    }

    #[test]
    fn errors_are_sticky() {
        let mut decoder = RecordIoDecoder::new(10);
        decoder.push(b"x");
        assert!(decoder.next_record().is_err());
        decoder.push(b"1\na");
        assert_eq!(
            decoder.next_record(),
            Err(RecordIoError::NonDigit { byte: b'x' })
        );
    }

    #[test]
    fn partial_records_wait_for_more_bytes() {
        let mut decoder = RecordIoDecoder::new(100);
        decoder.push(b"1");
        assert_eq!(decoder.next_record(), Ok(None));
        decoder.push(b"0\n01234");
        assert_eq!(decoder.next_record(), Ok(None));
        assert!(decoder.has_partial_record());
        decoder.push(b"56789");
        assert_eq!(decoder.next_record(), Ok(Some(Bytes::from("0123456789"))));
        assert!(!decoder.has_partial_record());
        assert_eq!(decoder.next_record(), Ok(None));
    }

    #[test]
    fn tokio_codec_round_trips() {
        let mut codec = RecordIoCodec::new(100);
        let mut buf = BytesMut::new();
        codec.encode(b"abc".as_slice(), &mut buf).unwrap();
        codec.encode(Bytes::from("de"), &mut buf).unwrap();
        assert_eq!(&buf[..], b"3\nabc2\nde");
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(Bytes::from("abc")));
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(Bytes::from("de")));
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
    }
}
