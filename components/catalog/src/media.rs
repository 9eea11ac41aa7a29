//! Cosmos media types and their negotiation. The CLI checks that the `Accept` string it sent
//! is a substring of the response `Content-Type`, so types are written exactly as Cosmos
//! wrote them: `application/vnd.dcos.<endpoint>-<request|response>+json;charset=utf-8;version=vN`,
//! no spaces.

use crate::error::CosmosError;

/// The error media type.
pub const ERROR: &str = "application/vnd.dcos.package.error+json;charset=utf-8;version=v1";
/// The capabilities media type.
pub const CAPABILITIES: &str = "application/vnd.dcos.capabilities+json;charset=utf-8;version=v1";

/// `application/vnd.dcos.<name>+json;charset=utf-8;version=<version>`.
pub fn media_type(name: &str, version: &str) -> String {
    format!("application/vnd.dcos.{name}+json;charset=utf-8;version={version}")
}

#[derive(Debug, PartialEq)]
struct Parsed<'a> {
    essence: String,
    params: Vec<(String, &'a str)>,
}

fn parse(s: &str) -> Parsed<'_> {
    let mut parts = s.split(';');
    let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let params = parts
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().trim_matches('"')))
        })
        .collect();
    Parsed { essence, params }
}

impl Parsed<'_> {
    fn param(&self, k: &str) -> Option<&str> {
        self.params.iter().find(|(n, _)| n == k).map(|(_, v)| *v)
    }
}

/// Checks a request `Content-Type` against the endpoint's request type: the same type and
/// subtype, and parameters that are a subset of the expected ones.
pub fn check_content_type(found: Option<&str>, expected: &str) -> Result<(), CosmosError> {
    let err = || CosmosError::UnsupportedContentType {
        found: found.unwrap_or("").to_owned(),
        expected: expected.to_owned(),
    };
    let f = parse(found.ok_or_else(err)?);
    let e = parse(expected);
    if f.essence != e.essence {
        return Err(err());
    }
    for (k, v) in &f.params {
        if !e
            .params
            .iter()
            .any(|(ek, ev)| ek == k && ev.eq_ignore_ascii_case(v))
        {
            return Err(err());
        }
    }
    Ok(())
}

/// Picks the response type: the first `Accept` entry (in order) that one of `available`
/// (most preferred first) satisfies. `*/*` and `application/*` take the first available;
/// an entry of our type without a `version` takes the first available of that type.
pub fn negotiate<'a>(accept: Option<&str>, available: &[&'a str]) -> Result<&'a str, CosmosError> {
    let err = || CosmosError::NotAcceptable {
        found: accept.unwrap_or("").to_owned(),
        available: available.join(", "),
    };
    let accept = accept.ok_or_else(err)?;
    for entry in accept.split(',') {
        let a = parse(entry);
        if a.param("q") == Some("0") {
            continue;
        }
        if a.essence == "*/*" || a.essence == "application/*" {
            return available.first().copied().ok_or_else(err);
        }
        for have in available {
            let h = parse(have);
            if h.essence == a.essence
                && a.param("version")
                    .is_none_or(|v| Some(v) == h.param("version"))
            {
                return Ok(have);
            }
        }
    }
    Err(err())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_written_without_spaces() {
        assert_eq!(
            media_type("package.search-response", "v1"),
            "application/vnd.dcos.package.search-response+json;charset=utf-8;version=v1"
        );
    }

    #[test]
    fn content_type_must_be_the_endpoints_with_known_parameters() {
        let want = media_type("package.search-request", "v1");
        let cases = [
            (Some(want.as_str()), true),
            (
                Some("application/vnd.dcos.package.search-request+json; charset=utf-8; version=v1"),
                true,
            ),
            (
                Some("application/vnd.dcos.package.search-request+json"),
                true,
            ),
            (
                Some("application/vnd.dcos.package.search-request+json;version=v2"),
                false,
            ),
            (Some("application/json"), false),
            (None, false),
        ];
        for (found, ok) in cases {
            assert_eq!(check_content_type(found, &want).is_ok(), ok, "{found:?}");
        }
    }

    #[test]
    fn accept_picks_the_first_satisfiable_entry() {
        let v3 = media_type("package.describe-response", "v3");
        let v2 = media_type("package.describe-response", "v2");
        let avail = [v3.as_str(), v2.as_str()];
        let cases = [
            (Some(v3.clone()), Some(&v3)),
            (Some(v2.clone()), Some(&v2)),
            (
                Some(format!(
                    "{},{}",
                    media_type("package.describe-response", "v9"),
                    v2
                )),
                Some(&v2),
            ),
            (Some("*/*".to_owned()), Some(&v3)),
            (
                Some("application/vnd.dcos.package.describe-response+json".to_owned()),
                Some(&v3),
            ),
            (Some("text/html".to_owned()), None),
            (None, None),
        ];
        for (accept, want) in cases {
            let got = negotiate(accept.as_deref(), &avail).ok();
            assert_eq!(got, want.map(String::as_str), "{accept:?}");
        }
    }
}
