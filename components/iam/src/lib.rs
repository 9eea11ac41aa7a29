//! Capstan's identity service, in the style of DC/OS's IAM: who may use the cluster through the
//! router, and the tokens that prove it. A library: the router daemon (`capstan-router`) starts
//! an [`Iam`], verifies every request's token with [`Iam::verify`] and hands `/acs/api/v1/…`
//! requests to [`Iam::api`].
//!
//! # Principals
//! - **Users**: a uid, a description and a password hashed with argon2id (memory-hard). The
//!   installer's legacy `pbkdf2-sha256$<iterations>$<salt hex>$<hash hex>` hashes are accepted
//!   too and re-hashed to argon2id at the first successful login.
//! - **Service accounts**: a uid, a description and an RSA public key (PEM). They log in with a
//!   short-lived RS256 JWT `{"uid","exp"}` signed by their private key, as
//!   `dcos auth login --username U --private-key K` sends it; `exp` may be at most 10 minutes
//!   ahead (plus a minute of clock skew) and not in the past (beyond that minute).
//!
//! Users and service accounts share one uid space (`A-Z a-z 0-9 . _ @ -`, 1–96 characters,
//! starting with a letter or digit). Every authenticated uid is an administrator for now.
//!
//! # Tokens
//! A login returns an RS256 JWT `{"uid","exp","iss"}` whose header `kid` names the cluster key
//! that signed it; `exp` is `token_ttl` ahead (default 5 days). [`Iam::verify`] accepts a token
//! only if its algorithm is RS256 (so `alg: none` and HS256 "signed" with the public key fail),
//! its `kid` is a key in the store, its signature verifies with that key, it is unexpired, its
//! `iss` is [`Options::issuer`], and its uid is still a user or service account — deleting a
//! user ends their sessions at once. Verification is in memory (no I/O): the records are cached
//! and kept current by a coord watch. [`token_from_headers`] finds the token where Admin Router
//! looks: `Authorization: token=<jwt>`, `Authorization: Bearer <jwt>`, or — only without any
//! `Authorization` header — the `dcos-acs-auth-cookie` cookie.
//!
//! # Storage (coord, under [`Options::prefix`], default `/capstan/router`)
//! `users/<uid>`, `service-accounts/<uid>`, `keys/<kid>` (2048-bit RSA signing keys, PKCS#8 PEM,
//! with their creation time), `signing-key` (`{"kid"}` of the key that signs new tokens) and
//! `admin-imported`. The first router to start generates the first key and installs key and
//! pointer in one transaction that requires the pointer absent, so routers starting together
//! agree on one key; rotation is a compare-and-swap of the pointer. Replaced keys keep verifying
//! for `token_ttl` (+5 min) after their replacement — the longest any token they signed can
//! live — and are then deleted. Private keys are stored in coord in the clear: coord's access
//! is the boundary (the security issue hardens it).
//!
//! # First administrator
//! The installer (and `capstan dev up`) writes `<cluster prefix>/admin`
//! ([`capstan_types::cluster::AdminRecord`], a legacy pbkdf2 hash). At start — and again at a
//! failed login while it has not happened, in case the record appeared later — it is imported
//! as a user, once: a transaction creates the user and the `admin-imported` marker only if both
//! are absent, so two routers never race and an administrator deleted later stays deleted.
//!
//! # Guessing
//! Failed logins are counted per uid and per source address (`X-Real-IP`, set by the router,
//! else the connection's peer when the server provides axum's `ConnectInfo<SocketAddr>`). After
//! 5 failures for a uid (20 for an address) each attempt must wait 1 s, doubling per further
//! failure up to 5 minutes; meanwhile login answers 429 with `Retry-After`. Counts are forgotten
//! after 15 quiet minutes or, for the uid, at a successful login. Unknown uids cost as much
//! time as wrong passwords. Password hashing runs on blocking threads, two at a time.
//!
//! # HTTP API ([`Iam::api`], full paths)
//! Open (the router does not authenticate `/acs/api/v1/auth/`):
//! - `POST /acs/api/v1/auth/login` `{"uid","password"}` or `{"uid","token"}` → 200
//!   `{"token"}`, and cookies `dcos-acs-auth-cookie=<token>; HttpOnly` and
//!   `dcos-acs-info-cookie=<base64url {"uid","description"}>`, both `Path=/; SameSite=Strict`,
//!   `Max-Age` = token lifetime, plus `Secure` when `X-Forwarded-Proto: https`. Bad credentials
//!   → 401 `{"title":"Unauthorized","description":…,"code":"ERR_INVALID_CREDENTIALS"}`.
//! - `GET|POST /acs/api/v1/auth/logout` → 200, both cookies expired.
//! - `GET /acs/api/v1/auth/providers` → the EE provider map: `dcos-users`
//!   (`dcos-uid-password`, `dcos-usercredential-post-receive-authtoken`) and `dcos-services`
//!   (`dcos-uid-servicekey`, `dcos-servicecredential-post-receive-authtoken`), both with
//!   `config.start_flow_url` `/acs/api/v1/auth/login`.
//! - `GET /acs/api/v1/auth/jwks` → `{"keys":[JWK…]}`, the current key first.
//!
//! Authenticated (checked here too, 401 with `WWW-Authenticate: acsjwt` otherwise):
//! - `POST /acs/api/v1/auth/keys/rotate` → 200 `{"kid"}` of the new signing key.
//! - `GET /acs/api/v1/users` → `{"array":[{uid, description, url, is_remote, is_service}]}`
//!   (`?type=service` lists service accounts); `GET /acs/api/v1/service-accounts` likewise.
//! - `GET|PUT|PATCH|DELETE /acs/api/v1/users/<uid>`: PUT `{"password","description"}` → 201
//!   (409 `ERR_USER_EXISTS` if the uid is taken), PATCH `{"password"?,"description"?}` → 204,
//!   DELETE → 204, unknown → 404 `ERR_UNKNOWN_USER_ID`.
//! - `GET|PUT|PATCH|DELETE /acs/api/v1/service-accounts/<uid>`: PUT
//!   `{"public_key","description"}` (RSA, 2048–8192 bits, SPKI or PKCS#1 PEM) → 201; GET adds
//!   `public_key`.
//!
//! Errors are JSON `{"title","description","code"}`: 400 `ERR_INVALID_DATA` for bad input, 404
//! for unknown paths, 405, 409, 429 `ERR_TOO_MANY_ATTEMPTS`, 503 when coord is unreachable.

mod api;
mod guard;
pub mod keys;
pub mod limiter;
pub mod password;
mod service;
pub mod store;
pub mod token;

use std::time::Duration;

pub use api::{ApiError, providers_json};
pub use guard::{GuardError, secure_api};
pub use service::{Iam, IamError, Login, Principal, valid_uid};
pub use token::{
    AUTH_COOKIE, Claims, INFO_COOKIE, VerifyError, service_login_token, token_from_headers,
};

/// How an [`Iam`] is set up.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the identity records live in coord.
    pub prefix: String,
    /// Where the cluster's records are (the first administrator is `<cluster_prefix>/admin`).
    pub cluster_prefix: String,
    /// Lifetime of login tokens (and so how long a replaced signing key keeps verifying).
    pub token_ttl: Duration,
    /// The `iss` claim of issued tokens, required when verifying.
    pub issuer: String,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            prefix: capstan_coord_client::keyspace::ROUTER.into(),
            cluster_prefix: capstan_coord_client::keyspace::CLUSTER.into(),
            token_ttl: Duration::from_secs(5 * 24 * 3600),
            issuer: "capstan".into(),
        }
    }
}

impl Iam {
    /// The HTTP API under `/acs/api/v1/` (full paths), state inside.
    pub fn api(&self) -> axum::Router {
        api::router(self.clone())
    }
}
