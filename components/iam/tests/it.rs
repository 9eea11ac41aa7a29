//! The identity service against a real in-process coord, through its HTTP API on loopback:
//! first-administrator import and legacy re-hash, logins and their cookies, user and service
//! account administration, key rotation, deleted users, the failed-login brake, and two
//! instances sharing one coord.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use capstan_coord_client::Client;
use capstan_iam::keys::{self, KeyRecord};
use capstan_iam::{Iam, Options, VerifyError};
use capstan_testkit::wait_until;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(10);
const ADMIN: &str = "bootstrapuser";
const ADMIN_PASSWORD: &str = "deleteme-now";

struct Coord {
    _dir: capstan_testkit::TempDir,
    _server: capstan_coord::ServerHandle,
    client: Client,
}

async fn coord() -> Result<Coord> {
    let dir = capstan_testkit::temp_dir()?;
    let server =
        capstan_coord::Server::start_single(dir.path().join("coord"), CancellationToken::new())
            .await
            .context("coord starts")?;
    let addr = server.local_addr();
    let client = Client::new([addr.to_string()])?;
    Ok(Coord {
        _dir: dir,
        _server: server,
        client,
    })
}

/// The installer's legacy hash of `password` (as `capstan_install::state::hash_password`).
fn legacy_hash(password: &str) -> String {
    let salt = b"0123456789abcdef";
    let mut out = [0u8; 32];
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA256,
        std::num::NonZeroU32::new(1000).unwrap(),
        salt,
        password.as_bytes(),
        &mut out,
    );
    format!(
        "pbkdf2-sha256$1000${}${}",
        hex::encode(salt),
        hex::encode(out)
    )
}

async fn write_admin(coord: &Client) -> Result<()> {
    let admin = capstan_types::cluster::AdminRecord {
        uid: ADMIN.into(),
        password_hash: legacy_hash(ADMIN_PASSWORD),
    };
    coord
        .put("/capstan/cluster/admin", serde_json::to_vec(&admin)?)
        .await?;
    Ok(())
}

/// An Iam and its API served on loopback.
struct Node {
    iam: Iam,
    url: String,
    http: reqwest::Client,
    shutdown: CancellationToken,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn node(coord: &Client) -> Result<Node> {
    let shutdown = CancellationToken::new();
    let iam = Iam::start(coord.clone(), Options::default(), shutdown.clone()).await?;
    serve(iam, shutdown).await
}

async fn serve(iam: Iam, shutdown: CancellationToken) -> Result<Node> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let app = iam
        .api()
        .into_make_service_with_connect_info::<SocketAddr>();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
    });
    Ok(Node {
        iam,
        url,
        http: capstan_http_client::client(),
        shutdown,
    })
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Node {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        extra: &[(&str, &str)],
    ) -> Result<Answer> {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.header("authorization", format!("token={t}"));
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await?;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .with_context(|| format!("{path}: not JSON: {}", String::from_utf8_lossy(&bytes)))?
        };
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    async fn login(&self, uid: &str, password: &str) -> Result<Answer> {
        self.call(
            reqwest::Method::POST,
            "/acs/api/v1/auth/login",
            None,
            Some(json!({"uid": uid, "password": password})),
            &[],
        )
        .await
    }

    async fn token(&self, uid: &str, password: &str) -> Result<String> {
        let a = self.login(uid, password).await?;
        anyhow::ensure!(a.status == 200, "login {uid}: {} {}", a.status, a.body);
        Ok(a.body["token"].as_str().context("token")?.to_owned())
    }
}

fn cookies(a: &Answer) -> Vec<String> {
    a.headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap_or_default().to_owned())
        .collect()
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token)
        .ok()
        .and_then(|h| h.kid)
        .unwrap_or_default()
}

#[tokio::test]
async fn the_first_admin_is_imported_once_and_logs_in_with_cookies() -> Result<()> {
    let c = coord().await?;
    write_admin(&c.client).await?;
    let n = node(&c.client).await?;

    let bad = n.login(ADMIN, "wrong").await?;
    assert_eq!(bad.status, 401);
    assert_eq!(bad.body["code"], "ERR_INVALID_CREDENTIALS");
    assert_eq!(bad.body["title"], "Unauthorized");
    let unknown = n.login("nobody", ADMIN_PASSWORD).await?;
    assert_eq!(unknown.status, 401);

    let ok = n.login(ADMIN, ADMIN_PASSWORD).await?;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let token = ok.body["token"].as_str().context("token")?.to_owned();
    let claims = n.iam.verify(&token)?;
    assert_eq!(claims.uid, ADMIN);
    assert_eq!(claims.iss, "capstan");
    assert_eq!(kid_of(&token), n.iam.current_kid().context("a key")?);
    let set = cookies(&ok);
    let auth = set
        .iter()
        .find(|c| c.starts_with("dcos-acs-auth-cookie="))
        .context("auth cookie")?;
    assert!(
        auth.starts_with(&format!("dcos-acs-auth-cookie={token};")),
        "{auth}"
    );
    for attr in ["Path=/", "HttpOnly", "SameSite=Strict"] {
        assert!(auth.contains(attr), "{auth} lacks {attr}");
    }
    assert!(!auth.contains("Secure"), "plain http: {auth}");
    let info = set
        .iter()
        .find(|c| c.starts_with("dcos-acs-info-cookie="))
        .context("info cookie")?;
    let info_value = info
        .trim_start_matches("dcos-acs-info-cookie=")
        .split(';')
        .next()
        .unwrap_or_default();
    use base64::Engine;
    let info_json: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(info_value)?,
    )?;
    assert_eq!(info_json["uid"], ADMIN);

    // Over https (as the router says), the cookies are Secure.
    let tls = n
        .call(
            reqwest::Method::POST,
            "/acs/api/v1/auth/login",
            None,
            Some(json!({"uid": ADMIN, "password": ADMIN_PASSWORD})),
            &[("x-forwarded-proto", "https")],
        )
        .await?;
    assert_eq!(cookies(&tls).len(), 2);
    assert!(cookies(&tls).iter().all(|c| c.contains("; Secure")));

    // The legacy hash was replaced by argon2id, and the password still works.
    let key = format!("/capstan/router/users/{ADMIN}");
    wait_until("the admin's password re-hashed", DEADLINE, async || {
        let kv = c.client.get(&key).await?.context("admin user")?;
        let v: Value = serde_json::from_slice(&kv.value)?;
        anyhow::ensure!(
            v["password_hash"]
                .as_str()
                .is_some_and(|h| h.starts_with("$argon2id$")),
            "still {}",
            v["password_hash"]
        );
        Ok(())
    })
    .await?;
    n.token(ADMIN, ADMIN_PASSWORD).await?;

    // Logout expires both cookies.
    let out = n
        .call(
            reqwest::Method::GET,
            "/acs/api/v1/auth/logout",
            None,
            None,
            &[],
        )
        .await?;
    assert_eq!(out.status, 200);
    let expired = cookies(&out);
    assert_eq!(expired.len(), 2, "{expired:?}");
    assert!(
        expired.iter().all(|c| c.contains("Max-Age=0")),
        "{expired:?}"
    );

    // Deleted, the admin is not imported again by the next router.
    let admin_token = n.token(ADMIN, ADMIN_PASSWORD).await?;
    let del = n
        .call(
            reqwest::Method::DELETE,
            &format!("/acs/api/v1/users/{ADMIN}"),
            Some(&admin_token),
            None,
            &[],
        )
        .await?;
    assert_eq!(del.status, 204, "{}", del.body);
    let n2 = node(&c.client).await?;
    assert_eq!(n2.login(ADMIN, ADMIN_PASSWORD).await?.status, 401);
    Ok(())
}

#[tokio::test]
async fn the_admin_record_written_after_start_is_imported_at_the_first_login() -> Result<()> {
    let c = coord().await?;
    let n = node(&c.client).await?;
    assert_eq!(n.login(ADMIN, ADMIN_PASSWORD).await?.status, 401);
    write_admin(&c.client).await?;
    n.token(ADMIN, ADMIN_PASSWORD).await?;
    Ok(())
}

#[tokio::test]
async fn administrators_manage_users_and_deleted_users_lose_access() -> Result<()> {
    let c = coord().await?;
    write_admin(&c.client).await?;
    let n = node(&c.client).await?;
    let admin = n.token(ADMIN, ADMIN_PASSWORD).await?;
    let get = reqwest::Method::GET;
    let put = reqwest::Method::PUT;

    // Without a token (or with a forged one), nothing.
    let anon = n
        .call(get.clone(), "/acs/api/v1/users", None, None, &[])
        .await?;
    assert_eq!(anon.status, 401);
    assert_eq!(anon.headers["www-authenticate"], "acsjwt");
    assert_eq!(anon.body["code"], "ERR_MISSING_AUTH_TOKEN");
    let forged = n
        .call(
            get.clone(),
            "/acs/api/v1/users",
            Some("eyJhbGciOiJub25lIn0.e30."),
            None,
            &[],
        )
        .await?;
    assert_eq!(forged.status, 401);
    let rotate_anon = n
        .call(
            reqwest::Method::POST,
            "/acs/api/v1/auth/keys/rotate",
            None,
            None,
            &[],
        )
        .await?;
    assert_eq!(
        rotate_anon.status, 401,
        "rotation is under /auth/ but not open"
    );

    let body = json!({"password": "bobs-secret", "description": "Bob"});
    let created = n
        .call(
            put.clone(),
            "/acs/api/v1/users/bob",
            Some(&admin),
            Some(body.clone()),
            &[],
        )
        .await?;
    assert_eq!(created.status, 201, "{}", created.body);
    let again = n
        .call(
            put.clone(),
            "/acs/api/v1/users/bob",
            Some(&admin),
            Some(body),
            &[],
        )
        .await?;
    assert_eq!(again.status, 409);
    assert_eq!(again.body["code"], "ERR_USER_EXISTS");

    // Bad input is a 4xx JSON error.
    for (path, body) in [
        ("/acs/api/v1/users/bad%20uid", json!({"password": "x"})),
        (
            "/acs/api/v1/users/carol",
            json!({"description": "no password"}),
        ),
        ("/acs/api/v1/users/carol", json!({"password": ""})),
        ("/acs/api/v1/users/carol", json!(["not", "an", "object"])),
    ] {
        let a = n
            .call(put.clone(), path, Some(&admin), Some(body), &[])
            .await?;
        assert_eq!(a.status, 400, "{path}: {}", a.body);
        assert_eq!(a.body["code"], "ERR_INVALID_DATA");
    }
    let raw = n
        .http
        .put(format!("{}/acs/api/v1/users/carol", n.url))
        .header("authorization", format!("token={admin}"))
        .body("{not json")
        .send()
        .await?;
    assert_eq!(raw.status(), 400);
    let unknown_path = n
        .call(get.clone(), "/acs/api/v1/nothing", Some(&admin), None, &[])
        .await?;
    assert_eq!(unknown_path.status, 404);

    let list = n
        .call(get.clone(), "/acs/api/v1/users", Some(&admin), None, &[])
        .await?;
    assert_eq!(list.status, 200);
    let uids: Vec<&str> = list.body["array"]
        .as_array()
        .context("array")?
        .iter()
        .filter_map(|u| u["uid"].as_str())
        .collect();
    assert_eq!(uids, ["bob", ADMIN], "sorted by uid");
    let bob = n
        .call(
            get.clone(),
            "/acs/api/v1/users/bob",
            Some(&admin),
            None,
            &[],
        )
        .await?;
    assert_eq!(
        bob.body,
        json!({"uid": "bob", "description": "Bob", "url": "/acs/api/v1/users/bob",
               "is_remote": false, "is_service": false, "role": "viewer"})
    );

    let patched = n
        .call(
            reqwest::Method::PATCH,
            "/acs/api/v1/users/bob",
            Some(&admin),
            Some(json!({"password": "new-secret", "description": "Robert"})),
            &[],
        )
        .await?;
    assert_eq!(patched.status, 204, "{}", patched.body);
    assert_eq!(n.login("bob", "bobs-secret").await?.status, 401);
    let bob_token = n.token("bob", "new-secret").await?;
    assert_eq!(n.iam.verify(&bob_token)?.uid, "bob");
    // Any authenticated user administers, for now.
    let by_bob = n
        .call(
            get.clone(),
            "/acs/api/v1/users/bob",
            Some(&bob_token),
            None,
            &[],
        )
        .await?;
    assert_eq!(by_bob.body["description"], "Robert");

    let deleted = n
        .call(
            reqwest::Method::DELETE,
            "/acs/api/v1/users/bob",
            Some(&admin),
            None,
            &[],
        )
        .await?;
    assert_eq!(deleted.status, 204);
    assert_eq!(n.iam.verify(&bob_token), Err(VerifyError::UnknownUser));
    let gone = n
        .call(
            get.clone(),
            "/acs/api/v1/users/bob",
            Some(&admin),
            None,
            &[],
        )
        .await?;
    assert_eq!(gone.status, 404);
    assert_eq!(gone.body["code"], "ERR_UNKNOWN_USER_ID");
    let gone_again = n
        .call(
            reqwest::Method::DELETE,
            "/acs/api/v1/users/bob",
            Some(&admin),
            None,
            &[],
        )
        .await?;
    assert_eq!(gone_again.status, 404);
    assert_eq!(
        n.call(get, "/acs/api/v1/users", Some(&bob_token), None, &[])
            .await?
            .status,
        401
    );
    Ok(())
}

/// A service account's key pair, generated once per test binary.
fn account_key() -> &'static KeyRecord {
    static KEY: std::sync::OnceLock<KeyRecord> = std::sync::OnceLock::new();
    KEY.get_or_init(|| keys::generate(0).expect("key generation"))
}

#[tokio::test]
async fn service_accounts_log_in_with_a_signed_token() -> Result<()> {
    let c = coord().await?;
    write_admin(&c.client).await?;
    let n = node(&c.client).await?;
    let admin = n.token(ADMIN, ADMIN_PASSWORD).await?;
    let key = account_key();
    let public = keys::public_pem(key)?;

    let bad_key = n
        .call(
            reqwest::Method::PUT,
            "/acs/api/v1/service-accounts/svc",
            Some(&admin),
            Some(json!({"public_key": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"})),
            &[],
        )
        .await?;
    assert_eq!(bad_key.status, 400, "{}", bad_key.body);
    let created = n
        .call(
            reqwest::Method::PUT,
            "/acs/api/v1/service-accounts/svc",
            Some(&admin),
            Some(json!({"public_key": public, "description": "a service"})),
            &[],
        )
        .await?;
    assert_eq!(created.status, 201, "{}", created.body);
    let taken = n
        .call(
            reqwest::Method::PUT,
            "/acs/api/v1/users/svc",
            Some(&admin),
            Some(json!({"password": "x"})),
            &[],
        )
        .await?;
    assert_eq!(taken.status, 409, "one uid space");
    let shown = n
        .call(
            reqwest::Method::GET,
            "/acs/api/v1/service-accounts/svc",
            Some(&admin),
            None,
            &[],
        )
        .await?;
    assert_eq!(shown.body["is_service"], true);
    assert_eq!(shown.body["public_key"], public.as_str());
    let listed = n
        .call(
            reqwest::Method::GET,
            "/acs/api/v1/users?type=service",
            Some(&admin),
            None,
            &[],
        )
        .await?;
    assert_eq!(listed.body["array"][0]["uid"], "svc");

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let login = |token: String| {
        n.call(
            reqwest::Method::POST,
            "/acs/api/v1/auth/login",
            None,
            Some(json!({"uid": "svc", "token": token})),
            &[],
        )
    };
    let ok = login(capstan_iam::service_login_token(
        &key.private_key_pem,
        "svc",
        now + 300,
    )?)
    .await?;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let token = ok.body["token"].as_str().context("token")?;
    assert_eq!(n.iam.verify(token)?.uid, "svc");

    let far = login(capstan_iam::service_login_token(
        &key.private_key_pem,
        "svc",
        now + 7200,
    )?)
    .await?;
    assert_eq!(far.status, 401, "exp two hours ahead");
    let expired = login(capstan_iam::service_login_token(
        &key.private_key_pem,
        "svc",
        now - 3600,
    )?)
    .await?;
    assert_eq!(expired.status, 401);
    let other_uid = login(capstan_iam::service_login_token(
        &key.private_key_pem,
        "other",
        now + 300,
    )?)
    .await?;
    assert_eq!(other_uid.status, 401);

    let deleted = n
        .call(
            reqwest::Method::DELETE,
            "/acs/api/v1/service-accounts/svc",
            Some(&admin),
            None,
            &[],
        )
        .await?;
    assert_eq!(deleted.status, 204);
    assert_eq!(n.iam.verify(token), Err(VerifyError::UnknownUser));
    Ok(())
}

#[tokio::test]
async fn rotated_keys_keep_verifying_and_two_routers_agree_on_keys() -> Result<()> {
    let c = coord().await?;
    write_admin(&c.client).await?;
    // Two routers starting at once on an empty coord settle on one signing key.
    let (a, b) = tokio::join!(node(&c.client), node(&c.client));
    let (a, b) = (a?, b?);
    let kid = a.iam.current_kid().context("a key")?;
    assert_eq!(b.iam.current_kid().as_deref(), Some(kid.as_str()));
    let list = c.client.list_all("/capstan/router/keys/").await?;
    assert_eq!(list.kvs.len(), 1, "one key stored");

    // A token from one verifies at the other.
    let old = a.token(ADMIN, ADMIN_PASSWORD).await?;
    assert_eq!(b.iam.verify(&old)?.uid, ADMIN);

    let rotated = a
        .call(
            reqwest::Method::POST,
            "/acs/api/v1/auth/keys/rotate",
            Some(&old),
            None,
            &[],
        )
        .await?;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let new_kid = rotated.body["kid"].as_str().context("kid")?.to_owned();
    assert_ne!(new_kid, kid);
    let fresh = a.token(ADMIN, ADMIN_PASSWORD).await?;
    assert_eq!(kid_of(&fresh), new_kid);
    assert_eq!(a.iam.verify(&old)?.uid, ADMIN, "the old key still verifies");
    assert_eq!(a.iam.verify(&fresh)?.uid, ADMIN);
    wait_until("the other router sees the rotation", DEADLINE, async || {
        b.iam.current_kid().as_deref() == Some(new_kid.as_str())
    })
    .await?;
    b.iam.verify(&fresh)?;
    b.iam.verify(&old)?;
    let from_b = b.token(ADMIN, ADMIN_PASSWORD).await?;
    assert_eq!(kid_of(&from_b), new_kid);

    let jwks = a
        .call(
            reqwest::Method::GET,
            "/acs/api/v1/auth/jwks",
            None,
            None,
            &[],
        )
        .await?;
    let kids: Vec<&str> = jwks.body["keys"]
        .as_array()
        .context("keys")?
        .iter()
        .filter_map(|k| k["kid"].as_str())
        .collect();
    assert_eq!(kids, [new_kid.as_str(), kid.as_str()], "current first");
    assert_eq!(jwks.body["keys"][0]["kty"], "RSA");
    assert_eq!(jwks.body["keys"][0]["alg"], "RS256");

    // A user created at one router can log in at the other, and its deletion reaches it.
    let created = a
        .call(
            reqwest::Method::PUT,
            "/acs/api/v1/users/dave",
            Some(&fresh),
            Some(json!({"password": "daves-secret"})),
            &[],
        )
        .await?;
    assert_eq!(created.status, 201);
    let dave = b.token("dave", "daves-secret").await?;
    a.call(
        reqwest::Method::DELETE,
        "/acs/api/v1/users/dave",
        Some(&fresh),
        None,
        &[],
    )
    .await?;
    wait_until(
        "the deletion reaches the other router",
        DEADLINE,
        async || b.iam.verify(&dave) == Err(VerifyError::UnknownUser),
    )
    .await?;

    let providers = b
        .call(
            reqwest::Method::GET,
            "/acs/api/v1/auth/providers",
            None,
            None,
            &[],
        )
        .await?;
    assert_eq!(
        providers.body["dcos-users"]["authentication-type"],
        "dcos-uid-password"
    );
    assert_eq!(
        providers.body["dcos-services"]["authentication-type"],
        "dcos-uid-servicekey"
    );
    Ok(())
}

#[tokio::test]
async fn repeated_failed_logins_are_slowed_down() -> Result<()> {
    let c = coord().await?;
    write_admin(&c.client).await?;
    let n = node(&c.client).await?;
    let attempt = async |ip: &'static str| {
        n.call(
            reqwest::Method::POST,
            "/acs/api/v1/auth/login",
            None,
            Some(json!({"uid": ADMIN, "password": "guess"})),
            &[("x-real-ip", ip)],
        )
        .await
    };
    for i in 0..5 {
        assert_eq!(attempt("192.0.2.1").await?.status, 401, "attempt {i}");
    }
    // The sixth attempt waits (a very slow machine may let the first 1 s wait pass; the waits
    // double, so some attempt soon falls inside one).
    let mut blocked = attempt("192.0.2.1").await?;
    for _ in 0..8 {
        if blocked.status != 401 {
            break;
        }
        blocked = attempt("192.0.2.1").await?;
    }
    assert_eq!(blocked.status, 429, "{}", blocked.body);
    assert_eq!(blocked.body["code"], "ERR_TOO_MANY_ATTEMPTS");
    let retry: u64 = blocked.headers["retry-after"].to_str()?.parse()?;
    assert!(retry >= 1);
    // The uid is braked from any address, even with the right password.
    assert_eq!(n.login(ADMIN, ADMIN_PASSWORD).await?.status, 429);
    // Other uids from another address are not.
    assert_eq!(n.login("someone", "x").await?.status, 401);
    Ok(())
}

#[tokio::test]
async fn roles_limit_what_accounts_may_change_and_other_daemons_verify_credentials() -> Result<()> {
    use capstan_runtime::auth::Authenticator as _;
    use capstan_types::Role;
    let c = coord().await?;
    write_admin(&c.client).await?;
    let n = node(&c.client).await?;
    let admin = n.token(ADMIN, ADMIN_PASSWORD).await?;
    let put = reqwest::Method::PUT;
    let patch = reqwest::Method::PATCH;

    // A new user is a viewer unless told otherwise; an unknown role is a 400.
    for (uid, body, status) in [
        ("vera", json!({"password": "vera-pw"}), 201),
        (
            "otto",
            json!({"password": "otto-pw", "role": "operator"}),
            201,
        ),
        ("eve", json!({"password": "eve-pw", "role": "root"}), 400),
    ] {
        let a = n
            .call(
                put.clone(),
                &format!("/acs/api/v1/users/{uid}"),
                Some(&admin),
                Some(body),
                &[],
            )
            .await?;
        assert_eq!(a.status, status, "{uid}: {}", a.body);
    }
    let vera = n
        .call(
            reqwest::Method::GET,
            "/acs/api/v1/users/vera",
            Some(&admin),
            None,
            &[],
        )
        .await?;
    assert_eq!(vera.body["role"], "viewer", "{}", vera.body);
    let admin_record = n
        .call(
            reqwest::Method::GET,
            &format!("/acs/api/v1/users/{ADMIN}"),
            Some(&admin),
            None,
            &[],
        )
        .await?;
    assert_eq!(admin_record.body["role"], "admin", "{}", admin_record.body);

    // A viewer reads identities but changes none; made an admin, she may.
    let vera_token = n.token("vera", "vera-pw").await?;
    let list = n
        .call(
            reqwest::Method::GET,
            "/acs/api/v1/users",
            Some(&vera_token),
            None,
            &[],
        )
        .await?;
    assert_eq!(list.status, 200);
    let body = json!({"password": "x-pw"});
    let refused = n
        .call(
            put.clone(),
            "/acs/api/v1/users/x",
            Some(&vera_token),
            Some(body.clone()),
            &[],
        )
        .await?;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(refused.body["code"], "ERR_FORBIDDEN");
    let promoted = n
        .call(
            patch.clone(),
            "/acs/api/v1/users/vera",
            Some(&admin),
            Some(json!({"role": "admin"})),
            &[],
        )
        .await?;
    assert_eq!(promoted.status, 204, "{}", promoted.body);
    let allowed = n
        .call(
            put.clone(),
            "/acs/api/v1/users/x",
            Some(&vera_token),
            Some(body),
            &[],
        )
        .await?;
    assert_eq!(allowed.status, 201, "{}", allowed.body);

    // Another daemon's verifier: tokens and basic credentials, with the account's role, and
    // nothing written to coord by it.
    let before = c.client.list_all("/capstan/router/").await?.revision;
    let shutdown = CancellationToken::new();
    let verifier = Iam::verifier(c.client.clone(), Options::default(), shutdown.clone()).await?;
    let otto_token = n.token("otto", "otto-pw").await?;
    let account = verifier
        .verify_token(&otto_token)
        .map_err(anyhow::Error::msg)?;
    assert_eq!(
        (account.uid.as_str(), account.role),
        ("otto", Role::Operator)
    );
    assert!(verifier.verify_token("eyJhbGciOiJub25lIn0.e30.").is_err());
    let basic = verifier.verify_basic("otto", "otto-pw").await?;
    assert_eq!(basic.role, Role::Operator);
    assert!(verifier.verify_basic("otto", "guess").await.is_err());
    assert!(verifier.verify_basic("nobody", "otto-pw").await.is_err());
    // A changed password ends the remembered basic credential.
    let changed = n
        .call(
            patch,
            "/acs/api/v1/users/otto",
            Some(&admin),
            Some(json!({"password": "otto-new"})),
            &[],
        )
        .await?;
    assert_eq!(changed.status, 204);
    wait_until("the old password refused", DEADLINE, async || {
        verifier.verify_basic("otto", "otto-pw").await.is_err()
    })
    .await?;
    assert_eq!(
        verifier.verify_basic("otto", "otto-new").await?.role,
        Role::Operator
    );
    let after = c.client.list_all("/capstan/router/").await?;
    let written: Vec<&str> = after
        .kvs
        .iter()
        .filter(|kv| kv.version > before)
        .map(|kv| kv.key.as_str())
        .collect();
    assert_eq!(
        written,
        ["/capstan/router/users/otto"],
        "only the API's change, nothing by the verifier"
    );
    shutdown.cancel();
    Ok(())
}
