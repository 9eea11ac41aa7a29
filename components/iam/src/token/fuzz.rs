//! Property-based fuzzing of the token parser: arbitrary strings, JWT-shaped strings with
//! arbitrary headers and claims, and mutations of a real token never panic and never verify
//! as anything but what was signed; the header scan never panics and returns only what a
//! header carried. The case count is small for CI; `CAPSTAN_FUZZ_CASES=100000` raises it.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proptest::prelude::*;

use super::tests::key;
use super::{VerifyError, issue, token_from_headers, verify};

const ISS: &str = "capstan";
const NOW: u64 = 1_700_000_000;

fn config(default_cases: u32) -> ProptestConfig {
    let cases = std::env::var("CAPSTAN_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(cases)
    }
}

fn check(token: &str) -> Result<super::Claims, VerifyError> {
    let k = key();
    verify(token, ISS, NOW, |kid| (kid == k.kid).then_some(&k))
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        prop_oneof![
            Just("RS256".to_owned()),
            Just("none".to_owned()),
            Just("HS256".to_owned()),
            Just(ISS.to_owned()),
            ".{0,8}",
        ]
        .prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("alg".to_owned()),
                    Just("kid".to_owned()),
                    Just("typ".to_owned()),
                    Just("uid".to_owned()),
                    Just("exp".to_owned()),
                    Just("iss".to_owned()),
                    "[a-z]{1,4}",
                ],
                inner,
                0..5,
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn arbitrary_strings_never_verify(token in ".{0,300}") {
        prop_assert!(check(&token).is_err());
    }

    #[test]
    fn jwt_shaped_strings_never_verify(
        header in json_value(),
        claims in json_value(),
        signature in proptest::collection::vec(any::<u8>(), 0..300),
        kid in any::<bool>(),
    ) {
        let mut header = header;
        if kid && let serde_json::Value::Object(m) = &mut header {
            m.insert("kid".to_owned(), serde_json::Value::String(key().kid.clone()));
        }
        let token = format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap()),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap()),
            URL_SAFE_NO_PAD.encode(&signature),
        );
        prop_assert!(check(&token).is_err(), "an unsigned token verified: {token}");
    }

    #[test]
    fn issued_tokens_round_trip(uid in "[a-zA-Z0-9_.@-]{0,40}", ahead in 0u64..10_000_000) {
        let token = issue(&key(), &uid, ISS, NOW + ahead).unwrap();
        match check(&token) {
            Ok(claims) => {
                prop_assert!(!uid.is_empty() && ahead > 0);
                prop_assert_eq!(claims.uid, uid);
                prop_assert_eq!(claims.exp, NOW + ahead);
            }
            Err(VerifyError::Expired) => prop_assert_eq!(ahead, 0),
            Err(VerifyError::MissingUid) => prop_assert!(uid.is_empty()),
            Err(e) => prop_assert!(false, "own token refused: {e}"),
        }
    }

    #[test]
    fn a_mutated_token_verifies_only_as_what_was_signed(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<char>()), 1..4),
    ) {
        let token = issue(&key(), "alice", ISS, NOW + 3600).unwrap();
        let mut chars: Vec<char> = token.chars().collect();
        for (at, c) in edits {
            let i = at.index(chars.len());
            chars[i] = c;
        }
        let mutated: String = chars.into_iter().collect();
        if let Ok(claims) = check(&mutated) {
            prop_assert_eq!(claims.uid, "alice");
            prop_assert_eq!(claims.exp, NOW + 3600);
        }
    }

    #[test]
    fn the_header_scan_returns_only_what_a_header_carried(
        values in proptest::collection::vec(
            (0usize..2, prop_oneof![
                "token=[ -~]{0,20}",
                "(Bearer|bearer|BEARER|Basic) ?[ -~]{0,20}",
                "[ -~]{0,30}",
                "dcos-acs-auth-cookie=[ -~]{0,20}(; [a-z]=[a-z])?",
            ]),
            0..5,
        ),
    ) {
        let mut headers = http::HeaderMap::new();
        let mut seen = Vec::new();
        for (which, v) in &values {
            let Ok(value) = http::HeaderValue::from_str(v) else { continue };
            let name = if *which == 0 { http::header::AUTHORIZATION } else { http::header::COOKIE };
            headers.append(name, value);
            seen.push(v.clone());
        }
        if let Some(t) = token_from_headers(&headers) {
            prop_assert!(!t.is_empty());
            prop_assert!(seen.iter().any(|v| v.contains(t.as_str())), "{t:?} is in no header");
        }
    }
}

/// Regression (found by `the_header_scan_returns_only_what_a_header_carried`): a cookie whose
/// value is only quotes was returned as an empty token instead of no token.
#[test]
fn a_quoted_empty_auth_cookie_is_no_token() {
    for value in [
        "dcos-acs-auth-cookie=\"",
        "dcos-acs-auth-cookie=\"\"",
        "dcos-acs-auth-cookie= \" \" ",
    ] {
        let mut headers = http::HeaderMap::new();
        headers.append(
            http::header::COOKIE,
            http::HeaderValue::from_str(value).unwrap(),
        );
        assert_eq!(token_from_headers(&headers), None, "{value}");
    }
    let mut headers = http::HeaderMap::new();
    headers.append(
        http::header::COOKIE,
        http::HeaderValue::from_static(
            "a=b; dcos-acs-auth-cookie=\"\"; dcos-acs-auth-cookie=\"t1\"",
        ),
    );
    assert_eq!(token_from_headers(&headers).as_deref(), Some("t1"));
}
