//! Capstan's web console, embedded: every file under `web/` is compiled into the binary with
//! `include_bytes!` and answered from a static table by [`serve`], which the router calls for
//! `/` and the console's assets.
//!
//! Key decisions: the front-end is hand-written ES modules and CSS with no build step, so
//! `cargo build` needs neither node nor a network and the shipped files are the files in the
//! repository. ETags are content hashes; compressible files are gzipped once, on first use, and
//! the gzip form is sent to clients that accept it. Every answer carries a strict
//! `Content-Security-Policy` (`'self'` only): the console works on an air-gapped cluster and
//! never loads anything from elsewhere.

use std::sync::OnceLock;

use http::{HeaderName, HeaderValue, StatusCode, header};

/// One embedded file: its path under `/` (no leading slash) and media type.
struct Raw {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! raw {
    ($path:literal, $ct:expr) => {
        Raw {
            path: $path,
            content_type: $ct,
            body: include_bytes!(concat!("../web/", $path)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the console. `index.html` is also the answer for `/`.
const RAW: &[Raw] = &[
    raw!("index.html", "text/html; charset=utf-8"),
    raw!("assets/style.css", "text/css; charset=utf-8"),
    raw!("assets/favicon.svg", "image/svg+xml"),
    raw!("assets/app.js", JS),
    raw!("assets/api.js", JS),
    raw!("assets/dom.js", JS),
    raw!("assets/live.js", JS),
    raw!("assets/login.js", JS),
    raw!("assets/overview.js", JS),
    raw!("assets/services.js", JS),
    raw!("assets/service.js", JS),
    raw!("assets/nodes.js", JS),
    raw!("assets/catalog.js", JS),
];

/// The policy every console answer carries: nothing but this origin, no inline script.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
     object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'self'";

/// A file ready to serve.
#[derive(Debug)]
pub struct Asset {
    /// Path under `/`, without the leading slash (`assets/app.js`).
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
    /// Strong ETag of `body` (quoted).
    pub etag: String,
    /// gzip of `body` and its ETag, when that is smaller.
    pub gzip: Option<(Vec<u8>, String)>,
}

fn compressible(content_type: &str) -> bool {
    content_type.starts_with("text/") || content_type == "image/svg+xml"
}

/// FNV-1a, 64 bits: a content hash for ETags (not a security boundary).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn gzip(body: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write as _;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(body).ok()?;
    enc.finish().ok()
}

/// The table, built once: hashes and gzip forms of every file.
pub fn assets() -> &'static [Asset] {
    static TABLE: OnceLock<Vec<Asset>> = OnceLock::new();
    TABLE.get_or_init(|| {
        RAW.iter()
            .map(|r| {
                let hash = fnv1a(r.body);
                let gzip = compressible(r.content_type)
                    .then(|| gzip(r.body))
                    .flatten()
                    .filter(|g| g.len() < r.body.len())
                    .map(|g| (g, format!("\"{hash:016x}-gz\"")));
                Asset {
                    path: r.path,
                    content_type: r.content_type,
                    body: r.body,
                    etag: format!("\"{hash:016x}\""),
                    gzip,
                }
            })
            .collect()
    })
}

/// The asset at `path` (leading `/` and query ignored; `""` is `index.html`).
pub fn asset(path: &str) -> Option<&'static Asset> {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let path = path.trim_start_matches('/');
    let path = if path.is_empty() { "index.html" } else { path };
    assets().iter().find(|a| a.path == path)
}

/// An answer to write: status, headers, body.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: &'static [u8],
}

impl Response {
    /// The value of header `name`, if set.
    pub fn header(&self, name: &HeaderName) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.to_str().ok())
    }
}

fn accepts_gzip(accept_encoding: Option<&str>) -> bool {
    accept_encoding.is_some_and(|v| {
        v.split(',').any(|e| {
            let mut parts = e.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q == 0.0))
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
    })
}

fn matches_etag(if_none_match: Option<&str>, etag: &str) -> bool {
    if_none_match.is_some_and(|v| {
        v.split(',').any(|t| {
            let t = t.trim();
            t == "*" || t.trim_start_matches("W/") == etag
        })
    })
}

fn value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

const NOT_FOUND: &[u8] = b"{\"message\":\"no such console asset\"}";

/// Answers a GET or HEAD for the console file at `path`: the file with its type, ETag and
/// `Cache-Control: no-cache` (every use revalidates, so a new binary's console is picked up
/// at once, and an unchanged file costs a 304); gzip when `accept_encoding` allows it; 304
/// when `if_none_match` names the current ETag; 404 JSON for an unknown file.
pub fn serve(path: &str, if_none_match: Option<&str>, accept_encoding: Option<&str>) -> Response {
    let common = [
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("SAMEORIGIN"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        ),
    ];
    let Some(a) = asset(path) else {
        let mut headers = vec![(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )];
        headers.extend(common);
        return Response {
            status: StatusCode::NOT_FOUND,
            headers,
            body: NOT_FOUND,
        };
    };
    let mut headers = vec![
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static(a.content_type),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    headers.extend(common);
    let (body, etag, gzipped) = match &a.gzip {
        Some((g, etag)) if accepts_gzip(accept_encoding) => (g.as_slice(), etag.as_str(), true),
        _ => (a.body, a.etag.as_str(), false),
    };
    if a.gzip.is_some() {
        headers.push((header::VARY, HeaderValue::from_static("Accept-Encoding")));
    }
    headers.push((header::ETAG, value(etag)));
    if matches_etag(if_none_match, etag) {
        return Response {
            status: StatusCode::NOT_MODIFIED,
            headers,
            body: &[],
        };
    }
    if gzipped {
        headers.push((header::CONTENT_ENCODING, HeaderValue::from_static("gzip")));
    }
    Response {
        status: StatusCode::OK,
        headers,
        body,
    }
}

/// Total size of the shipped files, compressed where they are served compressed.
pub fn shipped_bytes() -> (usize, usize) {
    assets().iter().fold((0, 0), |(raw, gz), a| {
        (
            raw + a.body.len(),
            gz + a.gzip.as_ref().map_or(a.body.len(), |(g, _)| g.len()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_has_a_unique_path_and_a_type() {
        let mut paths: Vec<&str> = assets().iter().map(|a| a.path).collect();
        paths.sort_unstable();
        paths.dedup();
        assert_eq!(paths.len(), RAW.len());
        for a in assets() {
            assert!(!a.body.is_empty(), "{}", a.path);
            assert!(a.etag.starts_with('"') && a.etag.ends_with('"'));
        }
    }

    #[test]
    fn root_is_the_index_page() {
        let r = serve("/", None, None);
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(
            r.header(&header::CONTENT_TYPE),
            Some("text/html; charset=utf-8")
        );
        assert_eq!(r.header(&header::CACHE_CONTROL), Some("no-cache"));
        let html = std::str::from_utf8(r.body).unwrap();
        assert!(html.contains("/assets/app.js"), "{html}");
        assert_eq!(serve("", None, None).body, r.body);
        assert_eq!(serve("index.html?x=1", None, None).body, r.body);
    }

    #[test]
    fn assets_have_their_types_and_unknown_files_are_404() {
        let js = serve("/assets/app.js", None, None);
        assert_eq!(js.status, StatusCode::OK);
        assert_eq!(js.header(&header::CONTENT_TYPE), Some(JS));
        let css = serve("assets/style.css", None, None);
        assert_eq!(
            css.header(&header::CONTENT_TYPE),
            Some("text/css; charset=utf-8")
        );
        for missing in [
            "assets/nope.js",
            "assets",
            "../Cargo.toml",
            "assets/app.js/x",
        ] {
            let r = serve(missing, None, None);
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{missing}");
            assert_eq!(r.header(&header::CONTENT_TYPE), Some("application/json"));
        }
    }

    #[test]
    fn gzip_is_sent_only_when_accepted_and_round_trips() {
        use std::io::Read as _;
        let plain = serve("assets/app.js", None, Some("br"));
        assert_eq!(plain.header(&header::CONTENT_ENCODING), None);
        assert_eq!(plain.header(&header::VARY), Some("Accept-Encoding"));
        let gz = serve("assets/app.js", None, Some("gzip, deflate, br"));
        assert_eq!(gz.header(&header::CONTENT_ENCODING), Some("gzip"));
        assert_ne!(gz.header(&header::ETAG), plain.header(&header::ETAG));
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(gz.body)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, plain.body);
        let refused = serve("assets/app.js", None, Some("gzip;q=0"));
        assert_eq!(refused.header(&header::CONTENT_ENCODING), None);
    }

    #[test]
    fn a_matching_etag_is_304_without_a_body() {
        let first = serve("assets/style.css", None, None);
        let etag = first.header(&header::ETAG).unwrap().to_owned();
        let again = serve("assets/style.css", Some(&etag), None);
        assert_eq!(again.status, StatusCode::NOT_MODIFIED);
        assert!(again.body.is_empty());
        assert_eq!(again.header(&header::ETAG), Some(etag.as_str()));
        let other = serve("assets/style.css", Some("\"0000\""), None);
        assert_eq!(other.status, StatusCode::OK);
        let weak = serve("assets/style.css", Some(&format!("W/{etag}")), None);
        assert_eq!(weak.status, StatusCode::NOT_MODIFIED);
    }

    #[test]
    fn every_answer_forbids_other_origins() {
        for path in ["/", "assets/app.js", "assets/missing.js"] {
            let r = serve(path, None, None);
            let csp = r.header(&header::CONTENT_SECURITY_POLICY).unwrap();
            assert!(csp.contains("default-src 'self'"), "{path}");
            assert_eq!(r.header(&header::X_FRAME_OPTIONS), Some("SAMEORIGIN"));
        }
    }

    #[test]
    fn no_file_reaches_another_origin() {
        // No CDN, no external font: nothing in the console names a scheme and host to load.
        for a in assets() {
            let text = String::from_utf8_lossy(a.body);
            for bad in ["http://", "https://", "//cdn", "@import url(", "fonts.g"] {
                if a.path == "assets/favicon.svg" && bad == "http://" {
                    continue; // the SVG namespace URI is a name, not a fetch
                }
                assert!(!text.contains(bad), "{} contains {bad:?}", a.path);
            }
        }
    }

    #[test]
    fn the_shipped_console_is_small() {
        let (raw, gz) = shipped_bytes();
        assert!(gz < 300 * 1024, "{gz} bytes compressed");
        assert!(raw < 600 * 1024, "{raw} bytes");
    }

    #[test]
    fn every_module_import_names_a_shipped_file() {
        for a in assets().iter().filter(|a| a.path.ends_with(".js")) {
            let text = String::from_utf8_lossy(a.body);
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let Some(spec) = line.split(['\'', '"']).nth(1) else {
                    continue;
                };
                let target = spec.trim_start_matches("./");
                assert!(
                    asset(&format!("assets/{target}")).is_some(),
                    "{} imports missing {spec}",
                    a.path
                );
            }
        }
    }
}
