//! Route table of the router: request-target normalisation and Admin Router's locations (§7.1).
//!
//! Pure (no I/O) so every route, redirect and hostile path is covered by table tests.

/// Where a proxied request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// The leading master (Mesos API).
    MasterLeader,
    /// The agent with this id (address looked up by the caller in the state summary).
    Agent(String),
    /// The dns daemon's HTTP API (:8123).
    Dns,
    /// The leading apps daemon (Marathon API).
    AppsLeader,
    /// Cosmos (:7070) — may be unconfigured: caller answers 503 JSON.
    Catalog,
    /// Metronome — may be unconfigured: 503.
    Jobs,
    /// /system/health/v1 — caller answers locally for now.
    Health,
    /// /system/v1/logs/ — may be unconfigured: 503.
    Logs,
    /// /system/v1/metrics/ — may be unconfigured: 503.
    Metrics,
    /// The master's own bootstrap server (install.sh, the CA, cluster facts, joins, the
    /// package), on loopback behind the router; it checks join tokens itself.
    Bootstrap,
    /// A resolved /service/ target.
    Direct { scheme: Scheme, authority: String },
}

/// Scheme of a direct upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// A request to forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    pub upstream: Upstream,
    /// Path + "?query" to send upstream (prefix already stripped or kept per §7.1).
    pub path: String,
    /// Needs a valid token.
    pub auth: bool,
    /// Response unbuffered (SSE, Mesos streaming).
    pub streaming: bool,
    /// Upgrade allowed.
    pub websocket: bool,
    pub strip_accept_encoding: bool,
    /// /mesos_dns/.
    pub clear_authorization: bool,
    /// Rewrite upstream `Location` back under this prefix (/service/<id>).
    pub location_prefix: Option<String>,
}

/// Things the router answers itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Local {
    Metadata,
    DcosVersion,
    UiConfig,
    BuildInfo,
    CaCert,
    Capabilities,
    /// /exhibitor/exhibitor/v1/cluster/status (open), built from coord's status.
    ExhibitorStatus,
    /// Other /exhibitor/ paths: 404 JSON (never proxied to coord's /raft/*).
    Exhibitor,
    /// GET /login: 302 to /#/login (or the UI).
    Login,
    /// /cluster/v1/links: 404 without auth (EE API).
    ClusterLinks,
    /// /acs/api/v1/...: handed to capstan_iam's api() (auth only for non /auth/ paths).
    Iam,
    /// /system/health/v1/<rest>: `rest` has no leading `/`, with `?query` appended if any.
    Health(String),
    /// Static console file, path relative to ui_dir ("" = index.html); no query, no dot
    /// segments, no hidden (`.`-prefixed) segments, no escapes.
    Ui(String),
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Redirect {
        status: u16,
        location: String,
    },
    Proxy(Proxy),
    /// /service/<rest>: caller resolves with service::resolve. `rest` is the normalised path
    /// after `/service/` (no leading `/`, trailing `/` kept); `query` is the raw query.
    Service {
        rest: String,
        query: Option<String>,
    },
    Local {
        what: Local,
        auth: bool,
    },
    NotFound,
    /// Hostile or malformed path (.. escape, NUL, bad percent-encoding).
    BadRequest(&'static str),
}

/// Longest request target accepted (nginx's default `large_client_header_buffers` line size).
pub const MAX_TARGET_LEN: usize = 8192;

/// First path segments the router owns: never served as console files.
const RESERVED: &[&str] = &[
    "acs",
    "agent",
    "ca",
    "cache",
    "capabilities",
    "cluster",
    "cosmos",
    "dcos-history-service",
    "dcos-metadata",
    "exhibitor",
    "install.sh",
    "internal",
    "login",
    "marathon",
    "mesos",
    "mesos_dns",
    "metadata",
    "navstar",
    "package",
    "pkgpanda",
    "service",
    "slave",
    "system",
    "v1",
];

/// Normalises and matches. `path_and_query` is the raw request target, e.g.
/// "/mesos/master/state.json?x=1".
///
/// Normalisation: percent-escapes of unreserved characters are decoded (so `%2e%2e` is `..`),
/// every other escape is kept (upper-cased hex; `%2F` never becomes a segment boundary), `//`
/// collapses, `.` and `..` are resolved. A `..` above the root, a NUL (raw or `%00`), invalid
/// percent-encoding, control or non-ASCII bytes, a target longer than [`MAX_TARGET_LEN`] or a
/// target that is not origin-form (absolute URI, authority form, `*`) is `BadRequest`. The
/// query is kept untouched and appended to every upstream path and redirect location.
pub fn route(method: &http::Method, path_and_query: &str) -> Route {
    match Target::parse(path_and_query) {
        Ok(t) => t.route(method),
        Err(why) => Route::BadRequest(why),
    }
}

/// A normalised origin-form request target.
#[derive(Debug)]
struct Target<'a> {
    /// Decoded-where-safe path segments, without empty or dot segments.
    segs: Vec<String>,
    /// The path ends in `/` (and is not just `/`).
    trailing: bool,
    query: Option<&'a str>,
}

impl<'a> Target<'a> {
    fn parse(raw: &'a str) -> Result<Target<'a>, &'static str> {
        if raw.len() > MAX_TARGET_LEN {
            return Err("request target too long");
        }
        if !raw.starts_with('/') {
            return Err("request target must be an absolute path (origin form)");
        }
        let (path, query) = match raw.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (raw, None),
        };
        if let Some(q) = query
            && q.bytes().any(|b| !(0x21..=0x7e).contains(&b) || b == b'#')
        {
            return Err(if q.contains('\0') {
                "NUL byte in request target"
            } else {
                "invalid character in query"
            });
        }
        let mut segs: Vec<String> = Vec::new();
        let mut trailing = false;
        for seg in path.split('/').skip(1) {
            let seg = decode_segment(seg)?;
            trailing = true;
            match seg.as_str() {
                "" | "." => {}
                ".." => {
                    if segs.pop().is_none() {
                        return Err("path escapes the root");
                    }
                }
                _ => {
                    segs.push(seg);
                    trailing = false;
                }
            }
        }
        Ok(Target {
            trailing: trailing && !segs.is_empty(),
            segs,
            query,
        })
    }

    /// The normalised path (no query).
    fn path(&self) -> String {
        self.tail(0)
    }

    /// The normalised path after the first `n` segments, always starting with `/`.
    fn tail(&self, n: usize) -> String {
        if self.segs.len() <= n {
            return "/".to_string();
        }
        let mut out = String::new();
        for s in &self.segs[n..] {
            out.push('/');
            out.push_str(s);
        }
        if self.trailing {
            out.push('/');
        }
        out
    }

    /// `path` with the original query appended.
    fn with_query(&self, path: String) -> String {
        match self.query {
            Some(q) => format!("{path}?{q}"),
            None => path,
        }
    }

    fn redirect(&self, status: u16, location: String) -> Route {
        Route::Redirect {
            status,
            location: self.with_query(location),
        }
    }

    fn proxy(&self, upstream: Upstream, path: String) -> Proxy {
        Proxy {
            upstream,
            path: self.with_query(path),
            auth: true,
            streaming: false,
            websocket: false,
            strip_accept_encoding: false,
            clear_authorization: false,
            location_prefix: None,
        }
    }

    /// The apps (Marathon) or jobs (Metronome) API under `/service/<name>/`.
    fn service_api(&self, upstream: Upstream, name: &str, n: usize) -> Route {
        Route::Proxy(Proxy {
            streaming: true,
            websocket: true,
            strip_accept_encoding: true,
            location_prefix: Some(format!("/service/{name}")),
            ..self.proxy(upstream, self.tail(n))
        })
    }

    fn route(&self, method: &http::Method) -> Route {
        let segs: Vec<&str> = self.segs.iter().map(String::as_str).collect();
        let dir = self.trailing;
        let local = |what, auth| Route::Local { what, auth };
        match segs.as_slice() {
            [] => local(Local::Ui(String::new()), false),

            ["mesos"] if !dir => self.redirect(301, "/mesos/".into()),
            ["mesos", ..] => Route::Proxy(Proxy {
                streaming: true,
                ..self.proxy(Upstream::MasterLeader, self.tail(1))
            }),

            ["mesos_dns"] if !dir => self.redirect(301, "/mesos_dns/".into()),
            ["mesos_dns", ..] => Route::Proxy(Proxy {
                clear_authorization: true,
                ..self.proxy(Upstream::Dns, self.tail(1))
            }),

            [p @ ("agent" | "slave"), id] if !dir => self.redirect(301, format!("/{p}/{id}/")),
            ["agent" | "slave", id, ..] => Route::Proxy(Proxy {
                streaming: true,
                strip_accept_encoding: true,
                ..self.proxy(Upstream::Agent((*id).to_string()), self.tail(2))
            }),

            ["marathon"] if !dir => self.redirect(307, "/marathon/".into()),
            ["marathon", ..] => self.service_api(Upstream::AppsLeader, "marathon", 1),

            ["service"] if dir => Route::Service {
                rest: String::new(),
                query: self.query.map(str::to_string),
            },
            ["service", one] if !dir => self.redirect(301, format!("/service/{one}/")),
            ["service", "marathon", ..] => self.service_api(Upstream::AppsLeader, "marathon", 2),
            ["service", "metronome", ..] => self.service_api(Upstream::Jobs, "metronome", 2),
            ["service", _, ..] => Route::Service {
                rest: self.tail(1)[1..].to_string(),
                query: self.query.map(str::to_string),
            },

            ["package", rest @ ..] if dir || !rest.is_empty() => Route::Proxy(Proxy {
                streaming: true,
                ..self.proxy(Upstream::Catalog, self.path())
            }),
            ["capabilities"] if !dir => local(Local::Capabilities, true),
            ["cosmos", "service", rest @ ..] if dir || !rest.is_empty() => {
                Route::Proxy(self.proxy(Upstream::Catalog, self.tail(1)))
            }

            ["acs", "api", "v1", "auth", rest @ ..] if dir || !rest.is_empty() => {
                local(Local::Iam, false)
            }
            ["acs", "api", "v1", ..] => local(Local::Iam, true),

            ["login"] if !dir => local(Local::Login, false),
            ["metadata"] if !dir => local(Local::Metadata, true),
            ["dcos-metadata", "dcos-version.json"] if !dir => local(Local::DcosVersion, false),
            ["dcos-metadata", "ui-config.json"] if !dir => local(Local::UiConfig, false),
            ["pkgpanda", "active.buildinfo.full.json"]
                if !dir && (method == http::Method::GET || method == http::Method::HEAD) =>
            {
                local(Local::BuildInfo, true)
            }
            ["ca", "dcos-ca.crt"] if !dir => local(Local::CaCert, false),
            ["cluster", "v1", "links", ..] => local(Local::ClusterLinks, false),

            ["system", "health", "v1", ..] => {
                let rest = self.tail(3)[1..].to_string();
                local(Local::Health(self.with_query(rest)), true)
            }
            ["system", "v1", "logs", rest @ ..] if dir || !rest.is_empty() => Route::Proxy(Proxy {
                streaming: true,
                ..self.proxy(Upstream::Logs, self.tail(3))
            }),
            ["system", "v1", "metrics", rest @ ..] if dir || !rest.is_empty() => {
                Route::Proxy(self.proxy(Upstream::Metrics, self.tail(3)))
            }

            ["exhibitor"] if !dir => self.redirect(301, "/exhibitor/".into()),
            ["exhibitor", "exhibitor", "v1", "cluster", "status"] if !dir => {
                local(Local::ExhibitorStatus, false)
            }
            ["exhibitor", ..] => local(Local::Exhibitor, true),

            // The bootstrap server's paths, exactly (bootstrap.rs): open at the router, since
            // install.sh and the CA are what a node fetches before it trusts the cluster, and
            // bootstrap checks the join tokens itself (and accepts joins and the package only
            // when the router says the client came over https).
            ["install.sh"] if !dir => self.bootstrap(false),
            ["v1", "cluster"] | ["v1", "cluster", "ca.pem" | "ca-proof"] if !dir => {
                self.bootstrap(false)
            }
            ["v1", "join"] | ["v1", "join", "coord"] if !dir => self.bootstrap(false),
            ["v1", "packages", _] if !dir => self.bootstrap(true),

            [first, .., last] | [first @ last] if self.is_ui_file(first, last) => {
                local(Local::Ui(self.path()[1..].to_string()), false)
            }
            _ => Route::NotFound,
        }
    }

    /// A bootstrap path, kept as it is, unauthenticated; `streaming` for downloads.
    fn bootstrap(&self, streaming: bool) -> Route {
        Route::Proxy(Proxy {
            auth: false,
            streaming,
            ..self.proxy(Upstream::Bootstrap, self.path())
        })
    }

    /// A console asset: a file-like path (last segment has an extension) outside the router's
    /// own prefixes, with no escapes and no hidden (dot) segments.
    fn is_ui_file(&self, first: &str, last: &str) -> bool {
        !self.trailing
            && !RESERVED.contains(&first)
            && last.contains('.')
            && self
                .segs
                .iter()
                .all(|s| !s.starts_with('.') && !s.contains('%'))
    }
}

/// Decodes the escapes of unreserved characters in one path segment, keeps (upper-cased) every
/// other escape, and rejects NUL, invalid escapes and bytes that cannot appear in a path.
fn decode_segment(seg: &str) -> Result<String, &'static str> {
    let bytes = seg.as_bytes();
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let hi = bytes.get(i + 1).and_then(|&c| hex(c));
                let lo = bytes.get(i + 2).and_then(|&c| hex(c));
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err("invalid percent-encoding in path");
                };
                let v = hi << 4 | lo;
                if v == 0 {
                    return Err("NUL byte in request target");
                }
                if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') {
                    out.push(char::from(v));
                } else {
                    out.push('%');
                    out.push(char::from(HEX[usize::from(hi)]));
                    out.push(char::from(HEX[usize::from(lo)]));
                }
                i += 3;
            }
            0 => return Err("NUL byte in request target"),
            b'\\' | b'#' => return Err("invalid character in path"),
            0x21..=0x7e => {
                out.push(char::from(b));
                i += 1;
            }
            _ => return Err("invalid character in path"),
        }
    }
    Ok(out)
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;
    use proptest::prelude::*;

    fn get(target: &str) -> Route {
        route(&Method::GET, target)
    }

    fn proxied(target: &str) -> Proxy {
        match get(target) {
            Route::Proxy(p) => p,
            other => panic!("{target}: expected a proxy route, got {other:?}"),
        }
    }

    fn local(target: &str) -> (Local, bool) {
        match get(target) {
            Route::Local { what, auth } => (what, auth),
            other => panic!("{target}: expected a local route, got {other:?}"),
        }
    }

    fn redirect(status: u16, location: &str) -> Route {
        Route::Redirect {
            status,
            location: location.to_string(),
        }
    }

    /// (target, upstream, upstream path, streaming, websocket, strip AE, clear authz, prefix)
    type ProxyRow = (
        &'static str,
        Upstream,
        &'static str,
        bool,
        bool,
        bool,
        bool,
        Option<&'static str>,
    );

    #[test]
    fn proxied_routes_strip_or_keep_their_prefix_and_keep_the_query() {
        let agent = |id: &str| Upstream::Agent(id.to_string());
        let m = Some("/service/marathon");
        let rows: Vec<ProxyRow> = vec![
            (
                "/mesos/",
                Upstream::MasterLeader,
                "/",
                true,
                false,
                false,
                false,
                None,
            ),
            (
                "/mesos/master/state.json",
                Upstream::MasterLeader,
                "/master/state.json",
                true,
                false,
                false,
                false,
                None,
            ),
            (
                "/mesos/state-summary",
                Upstream::MasterLeader,
                "/state-summary",
                true,
                false,
                false,
                false,
                None,
            ),
            (
                "/mesos/files/read.json?path=/master/log&length=0&offset=-1",
                Upstream::MasterLeader,
                "/files/read.json?path=/master/log&length=0&offset=-1",
                true,
                false,
                false,
                false,
                None,
            ),
            (
                "/mesos/api/v1",
                Upstream::MasterLeader,
                "/api/v1",
                true,
                false,
                false,
                false,
                None,
            ),
            (
                "/agent/a1-S0/state.json",
                agent("a1-S0"),
                "/state.json",
                true,
                false,
                true,
                false,
                None,
            ),
            (
                "/agent/a1-S0/",
                agent("a1-S0"),
                "/",
                true,
                false,
                true,
                false,
                None,
            ),
            (
                "/slave/a1-S0/files/browse.json?path=/x",
                agent("a1-S0"),
                "/files/browse.json?path=/x",
                true,
                false,
                true,
                false,
                None,
            ),
            (
                "/slave/a1-S0/api/v1",
                agent("a1-S0"),
                "/api/v1",
                true,
                false,
                true,
                false,
                None,
            ),
            (
                "/mesos_dns/v1/hosts/master.mesos",
                Upstream::Dns,
                "/v1/hosts/master.mesos",
                false,
                false,
                false,
                true,
                None,
            ),
            (
                "/mesos_dns/",
                Upstream::Dns,
                "/",
                false,
                false,
                false,
                true,
                None,
            ),
            (
                "/marathon/",
                Upstream::AppsLeader,
                "/",
                true,
                true,
                true,
                false,
                m,
            ),
            (
                "/marathon/v2/apps",
                Upstream::AppsLeader,
                "/v2/apps",
                true,
                true,
                true,
                false,
                m,
            ),
            (
                "/service/marathon/",
                Upstream::AppsLeader,
                "/",
                true,
                true,
                true,
                false,
                m,
            ),
            (
                "/service/marathon/v2/apps?embed=apps.tasks",
                Upstream::AppsLeader,
                "/v2/apps?embed=apps.tasks",
                true,
                true,
                true,
                false,
                m,
            ),
            (
                "/service/marathon/v2/apps/%2Fgroup%2Fweb",
                Upstream::AppsLeader,
                "/v2/apps/%2Fgroup%2Fweb",
                true,
                true,
                true,
                false,
                m,
            ),
            (
                "/service/marathon/v2/events",
                Upstream::AppsLeader,
                "/v2/events",
                true,
                true,
                true,
                false,
                m,
            ),
            (
                "/service/metronome/v1/jobs",
                Upstream::Jobs,
                "/v1/jobs",
                true,
                true,
                true,
                false,
                Some("/service/metronome"),
            ),
            (
                "/service/metronome/",
                Upstream::Jobs,
                "/",
                true,
                true,
                true,
                false,
                Some("/service/metronome"),
            ),
            (
                "/package/search",
                Upstream::Catalog,
                "/package/search",
                true,
                false,
                false,
                false,
                None,
            ),
            (
                "/package/resource?url=http://x/y",
                Upstream::Catalog,
                "/package/resource?url=http://x/y",
                true,
                false,
                false,
                false,
                None,
            ),
            (
                "/package/",
                Upstream::Catalog,
                "/package/",
                true,
                false,
                false,
                false,
                None,
            ),
            (
                "/cosmos/service/describe",
                Upstream::Catalog,
                "/service/describe",
                false,
                false,
                false,
                false,
                None,
            ),
            (
                "/system/v1/logs/v2/task/t1/file/stdout?cursor=END&skip=-10",
                Upstream::Logs,
                "/v2/task/t1/file/stdout?cursor=END&skip=-10",
                true,
                false,
                false,
                false,
                None,
            ),
            (
                "/system/v1/logs/",
                Upstream::Logs,
                "/",
                true,
                false,
                false,
                false,
                None,
            ),
            (
                "/system/v1/metrics/v0/node",
                Upstream::Metrics,
                "/v0/node",
                false,
                false,
                false,
                false,
                None,
            ),
        ];
        for (target, upstream, path, streaming, websocket, strip_ae, clear_authz, prefix) in rows {
            let p = proxied(target);
            let want = Proxy {
                upstream,
                path: path.to_string(),
                auth: true,
                streaming,
                websocket,
                strip_accept_encoding: strip_ae,
                clear_authorization: clear_authz,
                location_prefix: prefix.map(str::to_string),
            };
            assert_eq!(p, want, "{target}");
        }
    }

    #[test]
    fn local_routes_have_exactly_the_documented_auth() {
        let rows = [
            ("/", Local::Ui(String::new()), false),
            ("/index.html", Local::Ui("index.html".into()), false),
            (
                "/assets/app.3f2a.js",
                Local::Ui("assets/app.3f2a.js".into()),
                false,
            ),
            ("/favicon.ico?v=2", Local::Ui("favicon.ico".into()), false),
            ("/capabilities", Local::Capabilities, true),
            ("/acs/api/v1/auth/login", Local::Iam, false),
            ("/acs/api/v1/auth/logout", Local::Iam, false),
            ("/acs/api/v1/auth/providers", Local::Iam, false),
            ("/acs/api/v1/auth/", Local::Iam, false),
            ("/acs/api/v1/auth", Local::Iam, true),
            ("/acs/api/v1", Local::Iam, true),
            ("/acs/api/v1/users", Local::Iam, true),
            ("/acs/api/v1/users/alice", Local::Iam, true),
            ("/acs/api/v1/service-accounts/svc", Local::Iam, true),
            ("/login", Local::Login, false),
            (
                "/login?redirect_uri=urn:ietf:wg:oauth:2.0:oob",
                Local::Login,
                false,
            ),
            ("/metadata", Local::Metadata, true),
            (
                "/dcos-metadata/dcos-version.json",
                Local::DcosVersion,
                false,
            ),
            ("/dcos-metadata/ui-config.json", Local::UiConfig, false),
            (
                "/pkgpanda/active.buildinfo.full.json",
                Local::BuildInfo,
                true,
            ),
            ("/ca/dcos-ca.crt", Local::CaCert, false),
            ("/cluster/v1/links", Local::ClusterLinks, false),
            ("/system/health/v1", Local::Health(String::new()), true),
            (
                "/system/health/v1/nodes/10.0.0.1/units",
                Local::Health("nodes/10.0.0.1/units".into()),
                true,
            ),
            (
                "/system/health/v1/units?x=1",
                Local::Health("units?x=1".into()),
                true,
            ),
            (
                "/exhibitor/exhibitor/v1/cluster/status",
                Local::ExhibitorStatus,
                false,
            ),
            ("/exhibitor/", Local::Exhibitor, true),
            (
                "/exhibitor/exhibitor/v1/cluster/log",
                Local::Exhibitor,
                true,
            ),
            (
                "/exhibitor/exhibitor/v1/cluster/status/",
                Local::Exhibitor,
                true,
            ),
        ];
        for (target, what, auth) in rows {
            assert_eq!(local(target), (what, auth), "{target}");
        }
        assert_eq!(
            route(&Method::HEAD, "/pkgpanda/active.buildinfo.full.json"),
            Route::Local {
                what: Local::BuildInfo,
                auth: true
            }
        );
        assert_eq!(
            route(&Method::POST, "/pkgpanda/active.buildinfo.full.json"),
            Route::NotFound
        );
    }

    #[test]
    fn only_the_documented_set_is_unauthenticated() {
        let open = [
            "/acs/api/v1/auth/login",
            "/dcos-metadata/dcos-version.json",
            "/dcos-metadata/ui-config.json",
            "/login",
            "/exhibitor/exhibitor/v1/cluster/status",
            "/ca/dcos-ca.crt",
            "/cluster/v1/links",
            "/",
            "/index.html",
        ];
        let protected = [
            "/mesos/master/state.json",
            "/agent/a/state.json",
            "/mesos_dns/v1/hosts/x",
            "/marathon/v2/apps",
            "/service/marathon/v2/apps",
            "/service/metronome/v1/jobs",
            "/package/list",
            "/capabilities",
            "/cosmos/service/describe",
            "/acs/api/v1/users",
            "/metadata",
            "/pkgpanda/active.buildinfo.full.json",
            "/system/health/v1/units",
            "/system/v1/logs/v2/task/x",
            "/system/v1/metrics/v0/node",
            "/exhibitor/exhibitor/v1/config/get-state",
        ];
        for t in open {
            match get(t) {
                Route::Local { auth, .. } => assert!(!auth, "{t} must be open"),
                other => panic!("{t}: {other:?}"),
            }
        }
        for t in protected {
            match get(t) {
                Route::Local { auth, .. } => assert!(auth, "{t} must need a token"),
                Route::Proxy(p) => assert!(p.auth, "{t} must need a token"),
                other => panic!("{t}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_bootstrap_paths_go_to_bootstrap_unauthenticated_and_nothing_else_does() {
        let rows = [
            ("/install.sh", "/install.sh", false),
            ("/v1/cluster", "/v1/cluster", false),
            ("/v1/cluster/ca.pem", "/v1/cluster/ca.pem", false),
            (
                "/v1/cluster/ca-proof?token=0123abcd&nonce=00",
                "/v1/cluster/ca-proof?token=0123abcd&nonce=00",
                false,
            ),
            ("/v1/join", "/v1/join", false),
            ("/v1/join/coord", "/v1/join/coord", false),
            ("/v1/packages/capstan.deb", "/v1/packages/capstan.deb", true),
            ("//v1/./cluster?x=1", "/v1/cluster?x=1", false),
            ("/v1/%63luster", "/v1/cluster", false),
        ];
        for (target, path, streaming) in rows {
            for method in [Method::GET, Method::POST, Method::HEAD] {
                match route(&method, target) {
                    Route::Proxy(p) => assert_eq!(
                        p,
                        Proxy {
                            upstream: Upstream::Bootstrap,
                            path: path.to_string(),
                            auth: false,
                            streaming,
                            websocket: false,
                            strip_accept_encoding: false,
                            clear_authorization: false,
                            location_prefix: None,
                        },
                        "{method} {target}"
                    ),
                    other => panic!("{method} {target}: {other:?}"),
                }
            }
        }
        for t in [
            "/install.sh/",
            "/v1",
            "/v1/",
            "/v1/cluster/",
            "/v1/cluster/other",
            "/v1/cluster/ca.pem/x",
            "/v1/cluster/ca-proof/x",
            "/v1/join/",
            "/v1/join/other",
            "/v1/join/coord/x",
            "/v1/packages",
            "/v1/packages/",
            "/v1/packages/a/b.deb",
            "/v1/raft/status",
            "/v1/other.json",
            "/v1/../v2/cluster",
        ] {
            assert_eq!(get(t), Route::NotFound, "{t}");
        }
        assert_eq!(get("/mesos/../v1/join"), proxied("/v1/join").into_route());
        assert!(matches!(get("/v1/../../install.sh"), Route::BadRequest(_)));
    }

    impl Proxy {
        fn into_route(self) -> Route {
            Route::Proxy(self)
        }
    }

    #[test]
    fn bare_prefixes_redirect() {
        let rows = [
            ("/mesos", redirect(301, "/mesos/")),
            ("/mesos?a=b", redirect(301, "/mesos/?a=b")),
            ("/mesos_dns", redirect(301, "/mesos_dns/")),
            ("/marathon", redirect(307, "/marathon/")),
            ("/service/web", redirect(301, "/service/web/")),
            ("/service/marathon", redirect(301, "/service/marathon/")),
            ("/service/metronome", redirect(301, "/service/metronome/")),
            ("/agent/a1-S0", redirect(301, "/agent/a1-S0/")),
            ("/slave/a1-S0", redirect(301, "/slave/a1-S0/")),
            ("/exhibitor", redirect(301, "/exhibitor/")),
            ("//mesos", redirect(301, "/mesos/")),
        ];
        for (target, want) in rows {
            assert_eq!(get(target), want, "{target}");
        }
    }

    #[test]
    fn service_paths_are_left_to_resolution() {
        let svc = |rest: &str, query: Option<&str>| Route::Service {
            rest: rest.to_string(),
            query: query.map(str::to_string),
        };
        let rows = [
            ("/service/web/", svc("web/", None)),
            ("/service/web/api/x?y=1", svc("web/api/x", Some("y=1"))),
            ("/service/group/web", svc("group/web", None)),
            ("/service/group/web/", svc("group/web/", None)),
            ("/service/", svc("", None)),
            ("/service/a%2Fb/", svc("a%2Fb/", None)),
            ("/service/w%65b/", svc("web/", None)),
        ];
        for (target, want) in rows {
            assert_eq!(get(target), want, "{target}");
        }
    }

    #[test]
    fn unknown_paths_are_not_found() {
        for t in [
            "/service",
            "/package",
            "/mesos_dnsx",
            "/agent/",
            "/slave",
            "/capabilities/x",
            "/metadata/",
            "/login/",
            "/dcos-metadata/other.json",
            "/internal/acs/api/v1/users/alice",
            "/internal/mesos_dns/v1/x",
            "/cache/master/state.json",
            "/system/v1/logs",
            "/system/v1/leader/mesos/logs/v2/component",
            "/acs",
            "/nothing",
            "/assets/",
            "/.git/config",
            "/a/.env.js",
            "/a%20b.js",
            "/cluster/v2/links",
        ] {
            assert_eq!(get(t), Route::NotFound, "{t}");
        }
    }

    #[test]
    fn hostile_targets_are_refused_or_contained() {
        // Normalised before matching: the result is judged as /acs/api/v1/users (needs a token).
        assert_eq!(local("/mesos/../acs/api/v1/users"), (Local::Iam, true));
        assert_eq!(local("/mesos/%2e%2e/acs/api/v1/users"), (Local::Iam, true));
        assert_eq!(local("/acs/api/v1/auth/../users"), (Local::Iam, true));
        assert_eq!(local("/acs/api/v1/auth/%2E%2e/users"), (Local::Iam, true));
        assert_eq!(local("/acs/api/v1/auth/./../users"), (Local::Iam, true));
        assert_eq!(get("/service/x/%2e%2e/%2e%2e/acs"), Route::NotFound);
        assert_eq!(
            proxied("/mesos/master/./state.json").path,
            "/master/state.json"
        );
        assert_eq!(
            proxied("/mesos//master///state.json").path,
            "/master/state.json"
        );
        assert_eq!(proxied("/mesos/a/..").path, "/");
        // %2F is not a segment boundary, and %2e%2e inside a segment is not a dot segment.
        assert_eq!(proxied("/mesos/a%2F..%2Fb").path, "/a%2F..%2Fb");
        assert_eq!(proxied("/mesos/a%2f%2e%2e").path, "/a%2F..");
        assert_eq!(proxied("/mesos/..%2F").path, "/..%2F");
        assert_eq!(get("/service%2Fmarathon/v2/apps"), Route::NotFound);
        // Protocol-relative targets collapse into local paths.
        assert_eq!(get("//evil.com/"), Route::NotFound);
        assert_eq!(get("//evil.com/mesos/"), Route::NotFound);

        let bad = [
            "/..",
            "/../",
            "/%2e%2e/",
            "/%2E%2E",
            "/.%2e/etc/passwd",
            "/mesos/../../etc/passwd",
            "/service/x/%2e%2e/%2e%2e/%2e%2e/acs",
            "http://evil/",
            "http://evil.com/mesos/",
            "https://127.0.0.1:5050/master/state.json",
            "evil.com:443",
            "*",
            "",
            "mesos/",
            "/mesos/\0",
            "/mesos/%00",
            "/mesos/a%00b",
            "/mesos/x?a=\0",
            "/mesos/%",
            "/mesos/%2",
            "/mesos/%zz",
            "/mesos/%2g",
            "/mesos/a b",
            "/mesos/\t",
            "/mesos/\\..\\",
            "/mesos/é",
            "/mesos/x?a b",
        ];
        for t in bad {
            assert!(
                matches!(get(t), Route::BadRequest(_)),
                "{t:?}: {:?}",
                get(t)
            );
        }
        let long = format!("/mesos/{}", "a".repeat(MAX_TARGET_LEN));
        assert!(matches!(get(&long), Route::BadRequest(_)));
        let ok = format!("/mesos/{}", "a".repeat(MAX_TARGET_LEN - 7));
        assert!(matches!(get(&ok), Route::Proxy(_)));
    }

    #[test]
    fn escapes_are_decoded_only_for_unreserved_characters() {
        assert_eq!(
            proxied("/mesos/m%61ster/st%41te.json").path,
            "/master/stAte.json"
        );
        assert_eq!(proxied("/mesos/a%3ab%40c%25d").path, "/a%3Ab%40c%25d");
        // The query is untouched (no decoding, no case changes).
        assert_eq!(
            proxied("/mesos/x?p=%2e%2e%2f&q=/../").path,
            "/x?p=%2e%2e%2f&q=/../"
        );
        assert_eq!(proxied("/mesos/x?").path, "/x?");
        assert_eq!(get("/%6Desos"), redirect(301, "/mesos/"));
    }

    /// Every segment of a path (query excluded).
    fn segments(path: &str) -> impl Iterator<Item = &str> {
        path.split('?').next().unwrap_or("").split('/')
    }

    fn check_invariants(target: &str) -> Result<(), TestCaseError> {
        match route(&Method::GET, target) {
            Route::Proxy(p) => {
                prop_assert!(p.path.starts_with('/'), "{target:?} -> {}", p.path);
                prop_assert!(!p.path.starts_with("//"), "{target:?} -> {}", p.path);
                prop_assert!(segments(&p.path).all(|s| s != ".." && s != "."));
            }
            Route::Redirect { location, .. } => {
                prop_assert!(location.starts_with('/') && !location.starts_with("//"));
            }
            Route::Service { rest, query } => {
                prop_assert!(!rest.starts_with('/'));
                prop_assert!(rest.split('/').all(|s| s != ".." && s != "."));
                // Whatever resolves must also stay inside the upstream's root.
                let snapshot = crate::service::Snapshot {
                    frameworks: vec![crate::service::Framework {
                        id: "f".into(),
                        name: "mesos".into(),
                        webui_url: Some("http://10.0.0.1:80/ui/".into()),
                    }],
                    ..Default::default()
                };
                if let crate::service::Resolved::Proxy(p) =
                    crate::service::resolve(&rest, query.as_deref(), &snapshot)
                {
                    prop_assert!(p.path.starts_with('/'));
                    prop_assert!(segments(&p.path).all(|s| s != ".." && s != "."));
                }
            }
            Route::Local {
                what: Local::Ui(file),
                ..
            } => {
                prop_assert!(file.split('/').all(|s| !s.starts_with('.')));
            }
            _ => {}
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn route_never_panics_and_never_escapes(target in ".{0,64}") {
            check_invariants(&target)?;
        }

        #[test]
        fn printable_targets_never_escape(target in "/[!-~]{0,80}") {
            check_invariants(&target)?;
        }

        #[test]
        fn pathlike_targets_never_escape(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just("..".to_string()), Just(".".to_string()), Just("%2e%2e".to_string()),
                    Just("%2E.".to_string()), Just("".to_string()), Just("%2F".to_string()),
                    Just("mesos".to_string()), Just("service".to_string()), Just("agent".to_string()),
                    Just("acs".to_string()), Just("%00".to_string()), Just("%".to_string()),
                    "[a-z0-9%.?]{1,6}",
                ],
                0..10,
            ),
            slash in any::<bool>(),
        ) {
            let mut target = format!("/{}", parts.join("/"));
            if slash {
                target.push('/');
            }
            check_invariants(&target)?;
        }
    }
}
