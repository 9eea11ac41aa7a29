//! Master endpoints and redirect targets. Pure: no I/O.
//!
//! One syntax everywhere: an endpoint is `host:port` or `http://host:port` (a trailing `/` is
//! allowed, `[v6]:port` too). A URL without a port means HTTP's 80; a bare host needs its port.
//! A `307`'s `Location` names the leader as `//host:port/path` (what Mesos and Capstan's
//! master send), `http://host:port/path`, or a bare `host:port`; an absolute path (`/path`)
//! points back at the master that answered.

use std::fmt;

/// A master's HTTP address, normalised to a host and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// The host as written (an IPv6 address keeps its brackets), lowercased.
    host: String,
    port: u16,
}

/// Why an endpoint or a redirect target is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("{0:?} is empty")]
    Empty(String),
    #[error("{0:?} uses a scheme other than http://")]
    Scheme(String),
    #[error("{0:?} has a path; give only host:port")]
    Path(String),
    #[error("{0:?} has no port (write host:port)")]
    NoPort(String),
    #[error("{0:?} has an invalid port")]
    Port(String),
    #[error("{0:?} has an invalid host")]
    Host(String),
}

impl Endpoint {
    /// Parses `host:port`, `http://host:port` or `http://host` (port 80).
    pub fn parse(s: &str) -> Result<Endpoint, EndpointError> {
        let t = s.trim();
        let (rest, is_url) = match strip_scheme(t) {
            Scheme::Http(rest) => (rest, true),
            Scheme::None(rest) => (rest, false),
            Scheme::Other => return Err(EndpointError::Scheme(s.to_owned())),
        };
        let authority = match rest.split_once('/') {
            Some((a, "")) => a,
            Some(_) => return Err(EndpointError::Path(s.to_owned())),
            None => rest,
        };
        parse_authority(authority, is_url.then_some(80), s)
    }

    /// Parses every entry, naming the first that does not parse.
    pub fn parse_all<S: AsRef<str>>(list: &[S]) -> Result<Vec<Endpoint>, EndpointError> {
        list.iter().map(|s| Endpoint::parse(s.as_ref())).collect()
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host:port`.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// `http://host:port` followed by `path` (which should start with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}:{}{path}", self.host, self.port)
    }

    /// Where a `307` answered by this endpoint points.
    pub fn redirect(&self, location: &str) -> Result<Redirect, EndpointError> {
        match Location::parse(location)? {
            Location::Absolute { endpoint, path } => Ok(Redirect { endpoint, path }),
            Location::Relative { path } => Ok(Redirect {
                endpoint: self.clone(),
                path,
            }),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl std::str::FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(s: &str) -> Result<Endpoint, EndpointError> {
        Endpoint::parse(s)
    }
}

/// A resolved redirect: the master to ask and the path it named (empty: none given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub endpoint: Endpoint,
    pub path: String,
}

impl Redirect {
    /// The redirect as a URL (`http://host:port/path`).
    pub fn url(&self) -> String {
        self.endpoint.url(&self.path)
    }
}

/// A `Location` header value, before it is resolved against the master that sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `//host:port/path`, `http://host:port/path` or `host:port[/path]`.
    Absolute { endpoint: Endpoint, path: String },
    /// `/path`: the same master.
    Relative { path: String },
}

impl Location {
    pub fn parse(location: &str) -> Result<Location, EndpointError> {
        let t = location.trim();
        if t.is_empty() {
            return Err(EndpointError::Empty(location.to_owned()));
        }
        let (rest, default_port) = if let Some(rest) = t.strip_prefix("//") {
            (rest, Some(80))
        } else if t.starts_with('/') {
            return Ok(Location::Relative { path: t.to_owned() });
        } else {
            match strip_scheme(t) {
                Scheme::Http(rest) => (rest, Some(80)),
                Scheme::None(rest) => (rest, None),
                Scheme::Other => return Err(EndpointError::Scheme(location.to_owned())),
            }
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let endpoint = parse_authority(authority, default_port, location)?;
        Ok(Location::Absolute {
            endpoint,
            path: path.to_owned(),
        })
    }
}

enum Scheme<'a> {
    Http(&'a str),
    None(&'a str),
    Other,
}

fn strip_scheme(s: &str) -> Scheme<'_> {
    match s.find("://") {
        Some(i) if s[..i].eq_ignore_ascii_case("http") => Scheme::Http(&s[i + 3..]),
        Some(_) => Scheme::Other,
        None => Scheme::None(s),
    }
}

fn parse_authority(
    authority: &str,
    default_port: Option<u16>,
    original: &str,
) -> Result<Endpoint, EndpointError> {
    if authority.is_empty() {
        return Err(EndpointError::Empty(original.to_owned()));
    }
    if authority.contains('@') {
        return Err(EndpointError::Host(original.to_owned()));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return Err(EndpointError::Host(original.to_owned()));
        };
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(EndpointError::Host(original.to_owned()));
        }
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| EndpointError::Host(original.to_owned()))?,
            ),
        };
        (format!("[{addr}]"), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (authority.to_owned(), None),
        }
    };
    let host_ok = !host.is_empty()
        && (host.starts_with('[')
            || host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_'));
    if !host_ok {
        return Err(EndpointError::Host(original.to_owned()));
    }
    let port = match port {
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(EndpointError::Port(original.to_owned())),
        },
        None => default_port.ok_or_else(|| EndpointError::NoPort(original.to_owned()))?,
    };
    Ok(Endpoint {
        host: host.to_ascii_lowercase(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str) -> Endpoint {
        Endpoint::parse(s).unwrap()
    }

    #[test]
    fn endpoints_are_accepted_as_host_port_or_http_urls() {
        for (input, want) in [
            ("10.0.0.1:5050", "10.0.0.1:5050"),
            ("http://10.0.0.1:5050", "10.0.0.1:5050"),
            ("http://10.0.0.1:5050/", "10.0.0.1:5050"),
            ("HTTP://Master-1.Example:5050", "master-1.example:5050"),
            (" m2:5050 ", "m2:5050"),
            ("http://m2", "m2:80"),
            ("[::1]:5050", "[::1]:5050"),
            ("http://[::1]:5050/", "[::1]:5050"),
        ] {
            assert_eq!(ep(input).authority(), want, "input {input:?}");
        }
        assert_eq!(
            ep("10.0.0.1:5050").url("/api/v1"),
            "http://10.0.0.1:5050/api/v1"
        );
        assert_eq!(ep("http://10.0.0.1:5050").to_string(), "10.0.0.1:5050");
    }

    #[test]
    fn unusable_endpoints_are_rejected_with_the_reason() {
        for (input, want) in [
            ("", EndpointError::Empty(String::new())),
            ("http://", EndpointError::Empty("http://".into())),
            (
                "https://m:5050",
                EndpointError::Scheme("https://m:5050".into()),
            ),
            (
                "http://m:5050/api",
                EndpointError::Path("http://m:5050/api".into()),
            ),
            ("m", EndpointError::NoPort("m".into())),
            ("m:0", EndpointError::Port("m:0".into())),
            ("m:65536", EndpointError::Port("m:65536".into())),
            ("m:x", EndpointError::Port("m:x".into())),
            (":5050", EndpointError::Host(":5050".into())),
            ("user@m:5050", EndpointError::Host("user@m:5050".into())),
            ("[::1:5050", EndpointError::Host("[::1:5050".into())),
            ("m n:5050", EndpointError::Host("m n:5050".into())),
        ] {
            assert_eq!(Endpoint::parse(input), Err(want), "input {input:?}");
        }
        assert_eq!(
            Endpoint::parse_all(&["m1:5050", "bad"]),
            Err(EndpointError::NoPort("bad".into()))
        );
    }

    #[test]
    fn redirect_locations_resolve_against_the_master_that_answered() {
        // The cases of the three clients this crate replaced (dns `absolutize`, apps
        // `redirect_base`, agent `redirect_target`), in one table.
        let here = ep("10.0.0.1:5050");
        for (location, want) in [
            ("//10.0.0.2:5050/api/v1", "http://10.0.0.2:5050/api/v1"),
            ("/api/v1", "http://10.0.0.1:5050/api/v1"),
            ("http://m2:5050/api/v1", "http://m2:5050/api/v1"),
            (
                "//m2:5050/api/v1/scheduler",
                "http://m2:5050/api/v1/scheduler",
            ),
            (
                "http://10.0.0.1:5050/api/v1/scheduler",
                "http://10.0.0.1:5050/api/v1/scheduler",
            ),
            (
                "//10.0.0.1:5050/api/capstan/agent/v1",
                "http://10.0.0.1:5050/api/capstan/agent/v1",
            ),
            ("http://m2:5050/x", "http://m2:5050/x"),
            ("m3:5050", "http://m3:5050"),
            ("m3:5050/api/v1", "http://m3:5050/api/v1"),
            ("//m4:5050", "http://m4:5050"),
            ("//[::1]:5050/api/v1", "http://[::1]:5050/api/v1"),
        ] {
            let got = here.redirect(location).map(|r| r.url());
            assert_eq!(got.as_deref(), Ok(want), "location {location:?}");
        }
        assert_eq!(
            here.redirect("//m2:5050/api/v1").unwrap().endpoint,
            ep("m2:5050")
        );
        for bad in ["ftp://x/", "", "//", "//:5050/x", "m3", "https://m2:5050/"] {
            assert!(here.redirect(bad).is_err(), "location {bad:?}");
        }
        // A relative path names no other master.
        assert_eq!(
            Location::parse("/relative"),
            Ok(Location::Relative {
                path: "/relative".into()
            })
        );
    }
}
