//! How far this node's clock is from a master's, read from the `Date` header of plain HTTP
//! responses (every master answers `GET /v1/cluster` on port 80: the router, from its bootstrap server).
//!
//! A `Date` header has one-second resolution, so one response only bounds the offset: if it
//! says second `D` and the request left at local time `t0` and the answer came at `t1`, the
//! master's clock read somewhere in `[D, D + 1)` at some local instant in `[t0, t1]`, so
//! `offset = master - local` lies in `[D - t1, D + 1 - t0]`. A few requests spread over a
//! second (as htpdate does) narrow that interval to about the spacing between them: the
//! [`Offset`] is the intersection of every sample's interval.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One request's timing: local send and receive times and the master's `Date`, in ms since
/// the Unix epoch (the date is a whole second).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateSample {
    pub sent_ms: i64,
    pub received_ms: i64,
    pub date_s: i64,
}

/// Bounds on `master clock - local clock`, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offset {
    pub low_ms: i64,
    pub high_ms: i64,
}

impl Offset {
    /// The middle of the bounds: the best single guess.
    pub fn estimate_ms(&self) -> i64 {
        self.low_ms + (self.high_ms - self.low_ms) / 2
    }

    /// Half the width of the bounds.
    pub fn error_ms(&self) -> i64 {
        (self.high_ms - self.low_ms) / 2
    }

    /// The skew the bounds prove: 0 if they include 0, else the bound nearest to 0.
    pub fn certain_skew_ms(&self) -> i64 {
        if self.low_ms > 0 {
            self.low_ms
        } else if self.high_ms < 0 {
            -self.high_ms
        } else {
            0
        }
    }
}

/// The offset bounds from a set of samples: the intersection of their intervals. Samples
/// that contradict each other (a clock stepped between them) leave no intersection; the
/// last sample alone is used then. `None` without samples.
pub fn offset_bounds(samples: &[DateSample]) -> Option<Offset> {
    let interval = |s: &DateSample| Offset {
        low_ms: s.date_s * 1000 - s.received_ms,
        high_ms: (s.date_s + 1) * 1000 - s.sent_ms,
    };
    let last = interval(samples.last()?);
    let joint = samples.iter().map(interval).reduce(|a, b| Offset {
        low_ms: a.low_ms.max(b.low_ms),
        high_ms: a.high_ms.min(b.high_ms),
    })?;
    Some(if joint.low_ms <= joint.high_ms {
        joint
    } else {
        last
    })
}

/// Seconds since the Unix epoch of an HTTP date in the IMF-fixdate form every current server
/// sends: `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn parse_http_date(text: &str) -> Option<i64> {
    let (_weekday, rest) = text.trim().split_once(", ")?;
    let mut parts = rest.split(' ');
    let day: i64 = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    if parts.next()? != "GMT" || parts.next().is_some() || hms.next().is_some() {
        return None;
    }
    if !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The `Date` header of an HTTP response head, as Unix seconds.
pub fn date_header(response: &[u8]) -> Option<i64> {
    let text = String::from_utf8_lossy(response);
    let head = text.split("\r\n\r\n").next()?;
    let mut lines = head.split("\r\n");
    if !lines.next()?.starts_with("HTTP/") {
        return None;
    }
    lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("date"))
        .and_then(|(_, value)| parse_http_date(value))
}

/// `host`, `host:port`, `ip`, `[v6]:port` or `v6`, as a host and port (port 80 by default).
pub fn split_host_port(server: &str) -> (String, u16) {
    if let Ok(addr) = server.parse::<std::net::SocketAddr>() {
        return (addr.ip().to_string(), addr.port());
    }
    if server.parse::<std::net::IpAddr>().is_ok() {
        return (server.to_owned(), 80);
    }
    match server.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => match port.parse() {
            Ok(port) => (host.to_owned(), port),
            Err(_) => (server.to_owned(), 80),
        },
        _ => (server.to_owned(), 80),
    }
}

/// How many requests one measurement makes, and how far apart: together a little over a
/// second, so one of the gaps holds the master's second boundary.
const SAMPLES: usize = 5;
const SPACING: Duration = Duration::from_millis(210);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// Measures the offset of `server`'s clock (see [`split_host_port`]) with a few plain HTTP
/// requests for `/v1/cluster`. Any response with a `Date` header counts, whatever its status.
pub async fn measure(server: &str) -> Result<Offset, String> {
    let (host, port) = split_host_port(server);
    let mut samples = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        if i > 0 {
            tokio::time::sleep(SPACING).await;
        }
        match tokio::time::timeout(REQUEST_TIMEOUT, sample(&host, port)).await {
            Ok(Ok(s)) => samples.push(s),
            Ok(Err(e)) if samples.is_empty() => return Err(e),
            Err(_) if samples.is_empty() => {
                return Err(format!(
                    "no answer from {host}:{port} within {REQUEST_TIMEOUT:?}"
                ));
            }
            // One sample is enough for bounds; later failures only widen them.
            _ => break,
        }
    }
    offset_bounds(&samples).ok_or_else(|| format!("no usable answer from {host}:{port}"))
}

async fn sample(host: &str, port: u16) -> Result<DateSample, String> {
    let mut stream = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
    let host_header = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let request = format!(
        "GET /v1/cluster HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: capstan-doctor\r\n\
         Connection: close\r\n\r\n"
    );
    let sent_ms = now_ms();
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("cannot send to {host}:{port}: {e}"))?;
    // The head is enough; stop reading once it is complete.
    let mut response = Vec::new();
    let mut buf = [0u8; 2048];
    let received_ms = loop {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("cannot read from {host}:{port}: {e}"))?;
        if n == 0 {
            break now_ms();
        }
        response.extend_from_slice(&buf[..n]);
        if response.windows(4).any(|w| w == b"\r\n\r\n") || response.len() > 64 * 1024 {
            break now_ms();
        }
    };
    let date_s = date_header(&response)
        .ok_or_else(|| format!("{host}:{port} answered without an HTTP Date header"))?;
    Ok(DateSample {
        sent_ms,
        received_ms,
        date_s,
    })
}

/// Local time in ms since the Unix epoch (negative before 1970).
pub fn now_ms() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(sent_ms: i64, received_ms: i64, date_s: i64) -> DateSample {
        DateSample {
            sent_ms,
            received_ms,
            date_s,
        }
    }

    #[test]
    fn http_dates_parse_to_unix_seconds() {
        for (text, want) in [
            ("Thu, 01 Jan 1970 00:00:00 GMT", Some(0)),
            ("Sun, 06 Nov 1994 08:49:37 GMT", Some(784_111_777)),
            ("Tue, 29 Feb 2028 23:59:59 GMT", Some(1_835_481_599)),
            (" Wed, 02 Dec 2026 17:06:00 GMT ", Some(1_796_231_160)),
            ("Sunday, 06-Nov-94 08:49:37 GMT", None),
            ("Sun Nov  6 08:49:37 1994", None),
            ("Sun, 06 Nov 1994 08:49:37 UTC", None),
            ("Sun, 06 Nov 1994 08:49 GMT", None),
            ("Sun, 32 Nov 1994 08:49:37 GMT", None),
            ("Sun, 06 Nov 1994 25:49:37 GMT", None),
            ("", None),
        ] {
            assert_eq!(parse_http_date(text), want, "{text:?}");
        }
    }

    #[test]
    fn date_header_is_found_in_any_case() {
        let head = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\ndate: Thu, 01 Jan 1970 00:00:10 GMT\r\n\r\nbody";
        assert_eq!(date_header(head), Some(10));
        assert_eq!(date_header(b"HTTP/1.1 200 OK\r\n\r\n"), None);
        assert_eq!(
            date_header(b"SSH-2.0-OpenSSH\r\nDate: Thu, 01 Jan 1970 00:00:10 GMT\r\n\r\n"),
            None
        );
    }

    #[test]
    fn one_sample_bounds_the_offset_by_a_second_and_the_round_trip() {
        // Sent at 100.400 s, answered at 100.450 s, master said 105: the master read
        // 105.000..105.999 somewhere in 100.400..100.450.
        let off = offset_bounds(&[sample(100_400, 100_450, 105)]).unwrap();
        assert_eq!(
            off,
            Offset {
                low_ms: 4_550,
                high_ms: 5_600
            }
        );
        assert_eq!(off.certain_skew_ms(), 4_550);
        assert_eq!(off.estimate_ms(), 5_075);
    }

    #[test]
    fn samples_spread_over_a_second_narrow_the_bounds() {
        // The master is exactly 0.3 s ahead; requests every 210 ms take 2 ms each.
        let truth = 300;
        let samples: Vec<_> = (0..5)
            .map(|i| {
                let sent = 1_000_000 + i * 210;
                sample(sent, sent + 2, (sent + 1 + truth).div_euclid(1000))
            })
            .collect();
        let off = offset_bounds(&samples).unwrap();
        assert!(off.low_ms <= truth && truth <= off.high_ms, "{off:?}");
        assert!(off.error_ms() <= 110, "{off:?}");
    }

    #[test]
    fn in_sync_clocks_prove_no_skew() {
        let off = offset_bounds(&[sample(5_000, 5_010, 5)]).unwrap();
        assert_eq!(off.certain_skew_ms(), 0);
        let behind = offset_bounds(&[sample(10_000, 10_010, 7)]).unwrap();
        assert_eq!(behind.certain_skew_ms(), 2_000);
        assert!(behind.estimate_ms() < 0);
    }

    #[test]
    fn contradicting_samples_fall_back_to_the_last() {
        // The master's clock stepped back 10 s between the two requests.
        let samples = [sample(0, 10, 0), sample(1_000, 1_010, -9)];
        assert_eq!(
            offset_bounds(&samples).unwrap(),
            Offset {
                low_ms: -10_010,
                high_ms: -9_000
            }
        );
        assert_eq!(offset_bounds(&[]), None);
    }

    #[test]
    fn servers_name_a_host_and_a_port() {
        for (text, host, port) in [
            ("10.0.0.1", "10.0.0.1", 80),
            ("10.0.0.1:8080", "10.0.0.1", 8080),
            ("m1.example", "m1.example", 80),
            ("m1.example:81", "m1.example", 81),
            ("fd00::1", "fd00::1", 80),
            ("[fd00::1]:81", "fd00::1", 81),
            ("m1:x", "m1:x", 80),
        ] {
            assert_eq!(split_host_port(text), (host.to_owned(), port), "{text}");
        }
    }

    /// A one-request-at-a-time HTTP server on loopback whose clock is `skew_s` off ours.
    async fn skewed_server(skew_s: i64) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf).await;
                let date = format_http_date(now_ms().div_euclid(1000) + skew_s);
                let reply =
                    format!("HTTP/1.1 404 Not Found\r\nDate: {date}\r\nContent-Length: 0\r\n\r\n");
                let _ = conn.write_all(reply.as_bytes()).await;
            }
        });
        addr.to_string()
    }

    fn format_http_date(unix_s: i64) -> String {
        let days = unix_s.div_euclid(86_400);
        let secs = unix_s.rem_euclid(86_400);
        // Inverse of days_from_civil (Howard Hinnant's civil_from_days).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        let months = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let weekdays = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
        format!(
            "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
            weekdays[days.rem_euclid(7) as usize],
            months[(month - 1) as usize],
            secs / 3600,
            secs % 3600 / 60,
            secs % 60
        )
    }

    #[test]
    fn test_date_formatter_round_trips() {
        for t in [0, 784_111_777, 1_835_481_599, 1_796_231_160] {
            assert_eq!(parse_http_date(&format_http_date(t)), Some(t), "{t}");
        }
        assert_eq!(
            format_http_date(784_111_777),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
    }

    #[tokio::test]
    async fn a_master_in_sync_measures_within_a_second() {
        let server = skewed_server(0).await;
        let off = measure(&server).await.unwrap();
        assert!(off.low_ms <= 0 && 0 <= off.high_ms, "{off:?}");
    }

    #[tokio::test]
    async fn a_master_an_hour_ahead_measures_an_hour_ahead() {
        let server = skewed_server(3600).await;
        let off = measure(&server).await.unwrap();
        assert!(
            (3_598_000..=3_601_000).contains(&off.estimate_ms()),
            "{off:?}"
        );
        assert!(off.certain_skew_ms() > 2_000, "{off:?}");
    }

    #[tokio::test]
    async fn an_unreachable_master_is_an_error_that_names_it() {
        // A port nothing listens on: bind one, learn it, close it.
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let err = measure(&addr.to_string()).await.unwrap_err();
        assert!(err.contains(&addr.to_string()), "{err}");
    }
}
