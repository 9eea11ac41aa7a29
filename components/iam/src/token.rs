//! Tokens: issuing and verifying the cluster's RS256 login tokens, verifying service accounts'
//! login tokens, and finding a token in a request's headers the way Admin Router does.
//!
//! Everything here is pure (time is a parameter) so the forgery cases are table tests: only
//! RS256 is accepted, the header's `kid` must name a known key, the signature must verify with
//! that key's public half, `exp` must be in the future, `iss` must be ours and `uid` non-empty.
//! `alg: none`, HS256 "signed" with the public key, and RS256 under an unknown `kid` all fail
//! before any claim is believed.

use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::keys::{PublicKey, SigningKey};

/// The cookie the console keeps its token in.
pub const AUTH_COOKIE: &str = "dcos-acs-auth-cookie";
/// The cookie the console reads the logged-in user's uid and description from.
pub const INFO_COOKIE: &str = "dcos-acs-info-cookie";

/// A service account's login token may expire at most this far in the future (DC/OS's CLI
/// asks for now + 5 minutes), so a leaked one is short-lived.
pub const SERVICE_LOGIN_MAX_AHEAD_SECS: u64 = 600;
/// Clock difference tolerated between a service account's host and this one.
pub const SERVICE_LOGIN_SKEW_SECS: u64 = 60;

/// The claims of a cluster login token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Empty when the token has none (refused as [`VerifyError::MissingUid`]).
    #[serde(default)]
    pub uid: String,
    /// Expiry, seconds since the epoch (0 when absent: expired).
    #[serde(default)]
    pub exp: u64,
    #[serde(default)]
    pub iss: String,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("tokens must be signed with RS256")]
    Algorithm,
    #[error("the token names no key, or a key this cluster does not have")]
    UnknownKey,
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token was not issued by this cluster")]
    Issuer,
    #[error("the token carries no uid")]
    MissingUid,
    #[error("the token's user no longer exists")]
    UnknownUser,
}

/// The `alg` of a JWT's header, read without trusting anything else in it (jsonwebtoken
/// cannot even parse `alg: none`, which must count as a wrong algorithm, not as noise).
fn header_alg(token: &str) -> Result<String, VerifyError> {
    use base64::Engine;
    let header = token.split('.').next().ok_or(VerifyError::Malformed)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .map_err(|_| VerifyError::Malformed)?;
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|_| VerifyError::Malformed)?;
    value
        .get("alg")
        .and_then(|a| a.as_str())
        .map(str::to_owned)
        .ok_or(VerifyError::Malformed)
}

fn map_jwt_error(e: &jsonwebtoken::errors::Error) -> VerifyError {
    use jsonwebtoken::errors::ErrorKind;
    match e.kind() {
        ErrorKind::InvalidSignature => VerifyError::BadSignature,
        ErrorKind::ExpiredSignature => VerifyError::Expired,
        ErrorKind::InvalidIssuer => VerifyError::Issuer,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => VerifyError::Algorithm,
        ErrorKind::MissingRequiredClaim(c) if c == "exp" => VerifyError::Expired,
        ErrorKind::MissingRequiredClaim(c) if c == "iss" => VerifyError::Issuer,
        _ => VerifyError::Malformed,
    }
}

/// Signs a login token for `uid` with `key`.
pub fn issue(key: &SigningKey, uid: &str, issuer: &str, exp: u64) -> Result<String, VerifyError> {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(key.kid.clone());
    let claims = Claims {
        uid: uid.to_owned(),
        exp,
        iss: issuer.to_owned(),
    };
    jsonwebtoken::encode(&header, &claims, &key.encoding).map_err(|e| {
        tracing::error!(error = %e, kid = %key.kid, "Signing a token failed");
        VerifyError::BadSignature
    })
}

/// Verifies a cluster login token's form, key, signature, expiry and issuer at time `now`
/// (seconds). Whether its uid still exists is the caller's check.
pub fn verify<'k>(
    token: &str,
    issuer: &str,
    now: u64,
    key: impl FnOnce(&str) -> Option<&'k SigningKey>,
) -> Result<Claims, VerifyError> {
    if header_alg(token)? != "RS256" {
        return Err(VerifyError::Algorithm);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|e| map_jwt_error(&e))?;
    if header.alg != Algorithm::RS256 {
        return Err(VerifyError::Algorithm);
    }
    let kid = header.kid.as_deref().ok_or(VerifyError::UnknownKey)?;
    let key = key(kid).ok_or(VerifyError::UnknownKey)?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.leeway = 0;
    validation.validate_exp = false; // checked below against `now`, not the wall clock
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp", "iss"]);
    validation.set_issuer(&[issuer]);
    let data = jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation)
        .map_err(|e| map_jwt_error(&e))?;
    let claims = data.claims;
    if claims.iss != issuer {
        return Err(VerifyError::Issuer);
    }
    if claims.exp <= now {
        return Err(VerifyError::Expired);
    }
    if claims.uid.is_empty() {
        return Err(VerifyError::MissingUid);
    }
    Ok(claims)
}

/// What a service account's login token claims.
#[derive(Debug, Clone, Deserialize)]
struct ServiceClaims {
    #[serde(default)]
    uid: String,
    #[serde(default)]
    exp: u64,
}

/// Verifies a service account's login token (RS256 `{"uid","exp"}` signed with the account's
/// private key) for account `uid` at time `now`: the signature, `uid` equal to the account's,
/// and `exp` neither past (beyond [`SERVICE_LOGIN_SKEW_SECS`]) nor further ahead than
/// [`SERVICE_LOGIN_MAX_AHEAD_SECS`].
pub fn verify_service_login(
    token: &str,
    uid: &str,
    key: &PublicKey,
    now: u64,
) -> Result<(), VerifyError> {
    if header_alg(token)? != "RS256" {
        return Err(VerifyError::Algorithm);
    }
    let mut validation = Validation::new(Algorithm::RS256);
    validation.leeway = 0;
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp"]);
    let data = jsonwebtoken::decode::<ServiceClaims>(token, &key.decoding, &validation)
        .map_err(|e| map_jwt_error(&e))?;
    let claims = data.claims;
    if claims.uid != uid {
        return Err(VerifyError::MissingUid);
    }
    if claims.exp.saturating_add(SERVICE_LOGIN_SKEW_SECS) <= now {
        return Err(VerifyError::Expired);
    }
    if claims.exp > now + SERVICE_LOGIN_MAX_AHEAD_SECS + SERVICE_LOGIN_SKEW_SECS {
        return Err(VerifyError::Expired);
    }
    Ok(())
}

/// A service account's login token, as `dcos auth login --private-key` makes it: RS256
/// `{"uid","exp"}` signed with the account's private key (PKCS#8 PEM), no `kid`. For tools and
/// tests; the server only verifies these.
pub fn service_login_token(
    private_key_pem: &str,
    uid: &str,
    exp: u64,
) -> Result<String, crate::keys::KeyError> {
    let key = crate::keys::load(&crate::keys::KeyRecord {
        kid: String::new(),
        private_key_pem: private_key_pem.to_owned(),
        created_ms: 0,
    })?;
    let claims = serde_json::json!({"uid": uid, "exp": exp});
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key.encoding)
        .map_err(|e| crate::keys::KeyError::Parse(e.to_string()))
}

/// The token a request carries, as Admin Router finds it: `Authorization: token=<t>`, else
/// `Authorization: Bearer <t>`, else — only when there is no `Authorization` header at all —
/// the `dcos-acs-auth-cookie` cookie.
pub fn token_from_headers(headers: &http::HeaderMap) -> Option<String> {
    let mut saw_authorization = false;
    for value in headers.get_all(http::header::AUTHORIZATION) {
        saw_authorization = true;
        let Ok(value) = value.to_str() else { continue };
        let value = value.trim();
        if let Some(t) = value.strip_prefix("token=") {
            let t = t.trim();
            if !t.is_empty() {
                return Some(t.to_owned());
            }
        }
    }
    for value in headers.get_all(http::header::AUTHORIZATION) {
        let Ok(value) = value.to_str() else { continue };
        let value = value.trim();
        let Some((scheme, t)) = value.split_once(' ') else {
            continue;
        };
        let t = t.trim();
        if scheme.eq_ignore_ascii_case("bearer") && !t.is_empty() {
            return Some(t.to_owned());
        }
    }
    if saw_authorization {
        return None;
    }
    cookie(headers, AUTH_COOKIE)
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .map(|(k, v)| (k.trim(), v.trim().trim_matches('"').trim()))
        // A quoted empty value (`name=""`, or a lone `"`) is no cookie (found by fuzz.rs).
        .find(|(k, v)| *k == name && !v.is_empty())
        .map(|(_, v)| v.to_owned())
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::EncodingKey;

    use super::*;
    use crate::keys::{self, KeyRecord};

    const ISS: &str = "capstan";
    const NOW: u64 = 1_700_000_000;

    /// Two keys, generated once per test binary (generation is the slow part).
    fn records() -> &'static (KeyRecord, KeyRecord) {
        static KEYS: OnceLock<(KeyRecord, KeyRecord)> = OnceLock::new();
        KEYS.get_or_init(|| (keys::generate(1).unwrap(), keys::generate(2).unwrap()))
    }

    pub(super) fn key() -> SigningKey {
        keys::load(&records().0).unwrap()
    }

    fn other() -> SigningKey {
        keys::load(&records().1).unwrap()
    }

    fn check(token: &str) -> Result<Claims, VerifyError> {
        let k = key();
        verify(token, ISS, NOW, |kid| (kid == k.kid).then_some(&k))
    }

    fn b64(v: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    fn good_claims() -> serde_json::Value {
        serde_json::json!({"uid": "alice", "exp": NOW + 3600, "iss": ISS})
    }

    #[test]
    fn a_token_we_issued_verifies() {
        let k = key();
        let t = issue(&k, "alice", ISS, NOW + 3600).unwrap();
        let claims = check(&t).unwrap();
        assert_eq!(claims.uid, "alice");
        assert_eq!(claims.exp, NOW + 3600);
        assert_eq!(claims.iss, ISS);
        let header = jsonwebtoken::decode_header(&t).unwrap();
        assert_eq!(header.kid.as_deref(), Some(k.kid.as_str()));
        assert_eq!(header.alg, Algorithm::RS256);
    }

    #[test]
    fn forged_and_wrong_tokens_are_refused() {
        let k = key();
        let kid = k.kid.clone();
        let good = issue(&k, "alice", ISS, NOW + 3600).unwrap();
        let parts: Vec<&str> = good.split('.').collect();
        let (header_b64, sig_b64) = (parts[0], parts[2]);

        // alg none, with and without a signature.
        let none_header = b64(&serde_json::json!({"alg": "none", "typ": "JWT", "kid": kid}));
        let alg_none = format!("{none_header}.{}.", b64(&good_claims()));
        let alg_none_sig = format!("{none_header}.{}.{sig_b64}", b64(&good_claims()));

        // HS256 "signed" with the public key (the classic RS/HS confusion).
        let public_pem = keys::public_pem(&records().0).unwrap();
        let mut hs_header = Header::new(Algorithm::HS256);
        hs_header.kid = Some(kid.clone());
        let hs256 = jsonwebtoken::encode(
            &hs_header,
            &good_claims(),
            &EncodingKey::from_secret(public_pem.as_bytes()),
        )
        .unwrap();

        // Tampered payload, original signature.
        let tampered = format!(
            "{header_b64}.{}.{sig_b64}",
            b64(&serde_json::json!({"uid": "root", "exp": NOW + 3600, "iss": ISS}))
        );
        // Signed by a key the cluster does not have, under our kid and under its own.
        let o = other();
        let mut foreign = o.clone();
        foreign.kid = kid.clone();
        let foreign_same_kid = issue(&foreign, "alice", ISS, NOW + 3600).unwrap();
        let unknown_kid = issue(&o, "alice", ISS, NOW + 3600).unwrap();
        let mut no_kid_header = Header::new(Algorithm::RS256);
        no_kid_header.kid = None;
        let no_kid = jsonwebtoken::encode(&no_kid_header, &good_claims(), &k.encoding).unwrap();
        let sign = |claims: serde_json::Value| {
            let mut h = Header::new(Algorithm::RS256);
            h.kid = Some(kid.clone());
            jsonwebtoken::encode(&h, &claims, &k.encoding).unwrap()
        };

        let cases: Vec<(&str, String, VerifyError)> = vec![
            ("alg none", alg_none, VerifyError::Algorithm),
            (
                "alg none with a signature",
                alg_none_sig,
                VerifyError::Algorithm,
            ),
            ("HS256 with the public key", hs256, VerifyError::Algorithm),
            ("tampered payload", tampered, VerifyError::BadSignature),
            (
                "foreign key, our kid",
                foreign_same_kid,
                VerifyError::BadSignature,
            ),
            ("unknown kid", unknown_kid, VerifyError::UnknownKey),
            ("no kid", no_kid, VerifyError::UnknownKey),
            (
                "expired",
                issue(&k, "alice", ISS, NOW - 1).unwrap(),
                VerifyError::Expired,
            ),
            (
                "expires now",
                issue(&k, "alice", ISS, NOW).unwrap(),
                VerifyError::Expired,
            ),
            (
                "wrong issuer",
                issue(&k, "alice", "someone-else", NOW + 3600).unwrap(),
                VerifyError::Issuer,
            ),
            (
                "no issuer",
                sign(serde_json::json!({"uid": "alice", "exp": NOW + 3600})),
                VerifyError::Issuer,
            ),
            (
                "no exp",
                sign(serde_json::json!({"uid": "alice", "iss": ISS})),
                VerifyError::Expired,
            ),
            (
                "no uid",
                sign(serde_json::json!({"exp": NOW + 3600, "iss": ISS})),
                VerifyError::MissingUid,
            ),
            (
                "empty uid",
                issue(&k, "", ISS, NOW + 3600).unwrap(),
                VerifyError::MissingUid,
            ),
            ("garbage", "not.a.jwt".into(), VerifyError::Malformed),
            ("empty", String::new(), VerifyError::Malformed),
            (
                "two parts",
                format!("{header_b64}.{}", b64(&good_claims())),
                VerifyError::Malformed,
            ),
        ];
        for (what, token, want) in cases {
            assert_eq!(check(&token), Err(want), "{what}");
        }
    }

    #[test]
    fn service_login_tokens() {
        let account = keys::load(&records().1).unwrap();
        let public = keys::parse_public_key(&keys::public_pem(&records().1).unwrap()).unwrap();
        let sign = |claims: serde_json::Value| {
            // What `dcos auth login --private-key` sends: no kid.
            jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &account.encoding)
                .unwrap()
        };
        let ok = |exp: u64| serde_json::json!({"uid": "svc", "exp": exp});
        let cases: Vec<(&str, String, Result<(), VerifyError>)> = vec![
            ("now + 300", sign(ok(NOW + 300)), Ok(())),
            ("just expired, within skew", sign(ok(NOW - 10)), Ok(())),
            ("expired", sign(ok(NOW - 3600)), Err(VerifyError::Expired)),
            (
                "too far ahead",
                sign(ok(NOW + 3600)),
                Err(VerifyError::Expired),
            ),
            (
                "other uid",
                sign(serde_json::json!({"uid": "other", "exp": NOW + 300})),
                Err(VerifyError::MissingUid),
            ),
            (
                "no exp",
                sign(serde_json::json!({"uid": "svc"})),
                Err(VerifyError::Expired),
            ),
            (
                "signed by another key",
                jsonwebtoken::encode(
                    &Header::new(Algorithm::RS256),
                    &ok(NOW + 300),
                    &key().encoding,
                )
                .unwrap(),
                Err(VerifyError::BadSignature),
            ),
            (
                "HS256 with the public key",
                jsonwebtoken::encode(
                    &Header::new(Algorithm::HS256),
                    &ok(NOW + 300),
                    &EncodingKey::from_secret(public.pem.as_bytes()),
                )
                .unwrap(),
                Err(VerifyError::Algorithm),
            ),
        ];
        for (what, token, want) in cases {
            assert_eq!(
                verify_service_login(&token, "svc", &public, NOW),
                want,
                "{what}"
            );
        }
    }

    #[test]
    fn tokens_are_found_where_admin_router_looks() {
        fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
            let mut h = http::HeaderMap::new();
            for (k, v) in pairs {
                h.append(
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    http::HeaderValue::from_str(v).unwrap(),
                );
            }
            h
        }
        let cookie = "dcos-acs-auth-cookie=C; other=x";
        type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>);
        let cases: &[Case] = &[
            (&[("authorization", "token=T")], Some("T")),
            (&[("authorization", "Bearer B")], Some("B")),
            (&[("authorization", "bearer  B ")], Some("B")),
            (
                &[("authorization", "Bearer B"), ("authorization", "token=T")],
                Some("T"),
            ),
            (
                &[("authorization", "token=T"), ("cookie", cookie)],
                Some("T"),
            ),
            (&[("cookie", cookie)], Some("C")),
            (&[("cookie", "a=1"), ("cookie", cookie)], Some("C")),
            (&[("cookie", "x=1; dcos-acs-auth-cookie=\"Q\"")], Some("Q")),
            // An Authorization header of another kind hides the cookie (as Admin Router).
            (&[("authorization", "Basic Zm9v"), ("cookie", cookie)], None),
            (&[("authorization", "token="), ("cookie", cookie)], None),
            (&[("cookie", "dcos-acs-auth-cookie=")], None),
            (&[("cookie", "dcos-acs-info-cookie=I")], None),
            (&[], None),
        ];
        for (pairs, want) in cases {
            assert_eq!(
                token_from_headers(&headers(pairs)).as_deref(),
                *want,
                "{pairs:?}"
            );
        }
    }
}
