//! Master endpoints and redirect targets. Pure: no I/O.
//!
//! One syntax everywhere: an endpoint is `host:port`, `http://host:port` or `https://host:port`
//! (a trailing `/` is allowed, `[v6]:port` too). A URL without a port means 80 (`https`: 443);
//! a bare host needs its port. A bare `host:port` names no scheme: it is HTTP unless the
//! client speaks TLS to the masters (`ClientConfig::tls`), then HTTPS ([`Endpoint::or_scheme`]).
//! A `307`'s `Location` names the leader as `//host:port/path` (what Mesos and Capstan's
//! master send), `http://host:port/path`, `https://host:port/path`, or a bare `host:port`; an
//! absolute path (`/path`) points back at the master that answered. A location without a
//! scheme keeps the scheme of the master that answered, as a browser resolves it.

use std::fmt;

/// A master's HTTP address, normalised to a scheme (if one was written), a host and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// The scheme as written; `None` for a bare `host:port` (HTTP unless the client speaks TLS).
    scheme: Option<Scheme>,
    /// The host as written (an IPv6 address keeps its brackets), lowercased.
    host: String,
    port: u16,
}

/// How a master is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// Why an endpoint or a redirect target is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("{0:?} is empty")]
    Empty(String),
    #[error("{0:?} uses a scheme other than http:// or https://")]
    Scheme(String),
    #[error("{0:?} has a path; give only host:port")]
    Path(String),
    #[error("{0:?} has no port (write host:port)")]
    NoPort(String),
    #[error("{0:?} has an invalid port")]
    Port(String),
    #[error("{0:?} has an invalid host")]
    Host(String),
    #[error("{0:?} would leave TLS for plain HTTP")]
    Downgrade(String),
}

impl Endpoint {
    /// Parses `host:port`, `http://host:port`, `https://host:port`, `http://host` (port 80)
    /// or `https://host` (port 443).
    pub fn parse(s: &str) -> Result<Endpoint, EndpointError> {
        let t = s.trim();
        let (rest, scheme) = match strip_scheme(t) {
            Stripped::Scheme(scheme, rest) => (rest, Some(scheme)),
            Stripped::None(rest) => (rest, None),
            Stripped::Other => return Err(EndpointError::Scheme(s.to_owned())),
        };
        let authority = match rest.split_once('/') {
            Some((a, "")) => a,
            Some(_) => return Err(EndpointError::Path(s.to_owned())),
            None => rest,
        };
        parse_authority(authority, scheme, scheme.map(Scheme::default_port), s)
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

    /// The scheme written, if any.
    pub fn scheme(&self) -> Option<Scheme> {
        self.scheme
    }

    /// The scheme this endpoint is spoken to with: the one written, else HTTP.
    pub fn effective_scheme(&self) -> Scheme {
        self.scheme.unwrap_or(Scheme::Http)
    }

    /// This endpoint with `scheme` when it names none (a bare `host:port`).
    pub fn or_scheme(mut self, scheme: Scheme) -> Endpoint {
        self.scheme.get_or_insert(scheme);
        self
    }

    /// `host:port`.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// `http://host:port` (or `https://`, see [`Endpoint::effective_scheme`]) followed by
    /// `path` (which should start with `/`).
    pub fn url(&self, path: &str) -> String {
        format!(
            "{}://{}:{}{path}",
            self.effective_scheme().as_str(),
            self.host,
            self.port
        )
    }

    /// Where a `307` answered by this endpoint points: a location naming no scheme keeps this
    /// endpoint's; one from an `https` endpoint to `http://` is refused (the credential would
    /// follow in the clear).
    pub fn redirect(&self, location: &str) -> Result<Redirect, EndpointError> {
        let inherited = self.scheme;
        match Location::parse_in(location, inherited)? {
            Location::Absolute { endpoint, .. }
                if inherited == Some(Scheme::Https) && endpoint.scheme == Some(Scheme::Http) =>
            {
                Err(EndpointError::Downgrade(location.to_owned()))
            }
            Location::Absolute { endpoint, path } => Ok(Redirect {
                endpoint: match inherited {
                    Some(s) => endpoint.or_scheme(s),
                    None => endpoint,
                },
                path,
            }),
            Location::Relative { path } => Ok(Redirect {
                endpoint: self.clone(),
                path,
            }),
        }
    }
}

/// `host:port`, or `https://host:port` for an endpoint spoken to over TLS by its address.
impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.scheme == Some(Scheme::Https) {
            f.write_str("https://")?;
        }
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
    /// The redirect as a URL (`http://host:port/path` or `https://…`).
    pub fn url(&self) -> String {
        self.endpoint.url(&self.path)
    }
}

/// A `Location` header value, before it is resolved against the master that sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `//host:port/path`, `http://host:port/path`, `https://host:port/path` or
    /// `host:port[/path]` (the last and the first name no scheme).
    Absolute { endpoint: Endpoint, path: String },
    /// `/path`: the same master.
    Relative { path: String },
}

impl Location {
    /// A location as sent by a plain-HTTP master (`//host` without a port means 80).
    pub fn parse(location: &str) -> Result<Location, EndpointError> {
        Location::parse_in(location, None)
    }

    /// A location sent by a master spoken to with `scheme`: `//host` without a port means
    /// that scheme's port.
    fn parse_in(location: &str, scheme: Option<Scheme>) -> Result<Location, EndpointError> {
        let t = location.trim();
        if t.is_empty() {
            return Err(EndpointError::Empty(location.to_owned()));
        }
        let (rest, written, default_port) = if let Some(rest) = t.strip_prefix("//") {
            let port = scheme.unwrap_or(Scheme::Http).default_port();
            (rest, None, Some(port))
        } else if t.starts_with('/') {
            return Ok(Location::Relative { path: t.to_owned() });
        } else {
            match strip_scheme(t) {
                Stripped::Scheme(s, rest) => (rest, Some(s), Some(s.default_port())),
                Stripped::None(rest) => (rest, None, None),
                Stripped::Other => return Err(EndpointError::Scheme(location.to_owned())),
            }
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let endpoint = parse_authority(authority, written, default_port, location)?;
        Ok(Location::Absolute {
            endpoint,
            path: path.to_owned(),
        })
    }
}

enum Stripped<'a> {
    Scheme(Scheme, &'a str),
    None(&'a str),
    Other,
}

fn strip_scheme(s: &str) -> Stripped<'_> {
    match s.find("://") {
        Some(i) if s[..i].eq_ignore_ascii_case("http") => {
            Stripped::Scheme(Scheme::Http, &s[i + 3..])
        }
        Some(i) if s[..i].eq_ignore_ascii_case("https") => {
            Stripped::Scheme(Scheme::Https, &s[i + 3..])
        }
        Some(_) => Stripped::Other,
        None => Stripped::None(s),
    }
}

fn parse_authority(
    authority: &str,
    scheme: Option<Scheme>,
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
        scheme,
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
    fn https_endpoints_keep_their_scheme_and_bare_ones_take_the_clients() {
        for (input, scheme, authority, url) in [
            (
                "https://m1:5050",
                Some(Scheme::Https),
                "m1:5050",
                "https://m1:5050/x",
            ),
            (
                "HTTPS://M1:5050/",
                Some(Scheme::Https),
                "m1:5050",
                "https://m1:5050/x",
            ),
            (
                "https://m1",
                Some(Scheme::Https),
                "m1:443",
                "https://m1:443/x",
            ),
            (
                "https://[::1]:5050",
                Some(Scheme::Https),
                "[::1]:5050",
                "https://[::1]:5050/x",
            ),
            (
                "http://m1:5050",
                Some(Scheme::Http),
                "m1:5050",
                "http://m1:5050/x",
            ),
            ("m1:5050", None, "m1:5050", "http://m1:5050/x"),
        ] {
            let e = ep(input);
            assert_eq!(e.scheme(), scheme, "input {input:?}");
            assert_eq!(e.authority(), authority, "input {input:?}");
            assert_eq!(e.url("/x"), url, "input {input:?}");
        }
        // A client speaking TLS makes bare endpoints https; a written scheme stays.
        assert_eq!(
            ep("m1:5050").or_scheme(Scheme::Https).url("/api/v1"),
            "https://m1:5050/api/v1"
        );
        assert_eq!(
            ep("http://m1:5050").or_scheme(Scheme::Https).url("/api/v1"),
            "http://m1:5050/api/v1"
        );
        assert_eq!(
            ep("m1:5050").or_scheme(Scheme::Https).to_string(),
            "https://m1:5050"
        );
        assert_eq!(ep("m1:5050").effective_scheme(), Scheme::Http);
        // `m1:5050` and `http://m1:5050` are the same address written two ways, not the
        // same endpoint value; `https://` is another.
        assert_ne!(ep("https://m1:5050"), ep("m1:5050"));
        assert_eq!(
            Endpoint::parse("ftp://m1:5050"),
            Err(EndpointError::Scheme("ftp://m1:5050".into()))
        );
        assert_eq!(
            Endpoint::parse("https://m1:5050/api"),
            Err(EndpointError::Path("https://m1:5050/api".into()))
        );
    }

    #[test]
    fn redirects_from_a_tls_master_stay_on_tls() {
        let here = ep("m1:5050").or_scheme(Scheme::Https);
        for (location, want) in [
            ("//m2:5050/api/v1", "https://m2:5050/api/v1"),
            ("//m2/api/v1", "https://m2:443/api/v1"),
            ("/api/v1", "https://m1:5050/api/v1"),
            ("m3:5050", "https://m3:5050"),
            ("https://m2:5050/api/v1", "https://m2:5050/api/v1"),
        ] {
            let got = here.redirect(location).map(|r| r.url());
            assert_eq!(got.as_deref(), Ok(want), "location {location:?}");
        }
        assert_eq!(
            here.redirect("http://m2:5050/api/v1"),
            Err(EndpointError::Downgrade("http://m2:5050/api/v1".into()))
        );
        // The leader a redirect names is an https endpoint: later calls go there over TLS.
        let leader = here.redirect("//m2:5050/api/v1").unwrap().endpoint;
        assert_eq!(leader.scheme(), Some(Scheme::Https));
        assert_eq!(leader.url("/api/v1"), "https://m2:5050/api/v1");
        // A plain master may send its clients to a TLS one.
        assert_eq!(
            ep("m1:5050")
                .redirect("https://m2:5050/api/v1")
                .map(|r| r.url())
                .as_deref(),
            Ok("https://m2:5050/api/v1")
        );
    }

    #[test]
    fn unusable_endpoints_are_rejected_with_the_reason() {
        for (input, want) in [
            ("", EndpointError::Empty(String::new())),
            ("http://", EndpointError::Empty("http://".into())),
            ("https://", EndpointError::Empty("https://".into())),
            ("ftp://m:5050", EndpointError::Scheme("ftp://m:5050".into())),
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
            ("https://m2:5050/api/v1", "https://m2:5050/api/v1"),
        ] {
            let got = here.redirect(location).map(|r| r.url());
            assert_eq!(got.as_deref(), Ok(want), "location {location:?}");
        }
        assert_eq!(
            here.redirect("//m2:5050/api/v1").unwrap().endpoint,
            ep("m2:5050")
        );
        for bad in ["ftp://x/", "", "//", "//:5050/x", "m3", "gopher://m2:5050/"] {
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
