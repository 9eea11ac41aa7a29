//! The HTTP API under `/acs/api/v1/` (full paths, as the router hands requests over): login,
//! logout, providers and JWKS (open), and the administrators' user / service-account / key
//! endpoints. Every administrative endpoint checks the caller's token itself, even though the
//! router verifies first — `/acs/api/v1/auth/` is open at the router, and `keys/rotate` lives
//! there. Errors are always JSON `{"title","description","code"}`.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use capstan_types::Role;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::service::{Iam, IamError, Login, Principal};
use crate::token::{AUTH_COOKIE, Claims, INFO_COOKIE, token_from_headers};

/// Largest request body accepted.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub title: &'static str,
    pub description: String,
    pub code: &'static str,
    retry_after: Option<u64>,
    challenge: bool,
}

impl ApiError {
    fn new(
        status: StatusCode,
        title: &'static str,
        code: &'static str,
        description: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            title,
            description: description.into(),
            code,
            retry_after: None,
            challenge: false,
        }
    }

    fn bad_request(description: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "Bad Request",
            "ERR_INVALID_DATA",
            description,
        )
    }

    fn unauthenticated(description: impl Into<String>, code: &'static str) -> ApiError {
        ApiError {
            challenge: true,
            ..ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized", code, description)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"title": self.title, "description": self.description, "code": self.code});
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.challenge {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("acsjwt"));
        }
        resp
    }
}

impl From<IamError> for ApiError {
    fn from(e: IamError) -> ApiError {
        let text = e.to_string();
        match e {
            IamError::Invalid(_) => ApiError::bad_request(text),
            IamError::NoSuchUser(_) => ApiError::new(
                StatusCode::NOT_FOUND,
                "Not Found",
                "ERR_UNKNOWN_USER_ID",
                text,
            ),
            IamError::NoSuchAccount(_) => ApiError::new(
                StatusCode::NOT_FOUND,
                "Not Found",
                "ERR_UNKNOWN_SERVICE_ACCOUNT_ID",
                text,
            ),
            IamError::Exists(_) => {
                ApiError::new(StatusCode::CONFLICT, "Conflict", "ERR_USER_EXISTS", text)
            }
            IamError::Conflict(_) => ApiError::new(
                StatusCode::CONFLICT,
                "Conflict",
                "ERR_CONCURRENT_CHANGE",
                text,
            ),
            IamError::BadCredentials => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "ERR_INVALID_CREDENTIALS",
                "The login credentials are invalid",
            ),
            IamError::TooManyAttempts { retry_after } => {
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                ApiError {
                    retry_after: Some(secs.max(1)),
                    ..ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "Too Many Requests",
                        "ERR_TOO_MANY_ATTEMPTS",
                        text,
                    )
                }
            }
            IamError::Coord(_) | IamError::NoSigningKey => {
                tracing::warn!(error = %capstan_types::Chain(&e), "Identity request failed");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Service Unavailable",
                    "ERR_SERVICE_UNAVAILABLE",
                    "The identity store is unavailable; try again",
                )
            }
            IamError::Corrupt { .. } | IamError::Key(_) | IamError::Hash(_) | IamError::Task(_) => {
                tracing::error!(error = %capstan_types::Chain(&e), "Identity request failed");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal Server Error",
                    "ERR_INTERNAL",
                    "The identity service failed; see its log",
                )
            }
        }
    }
}

type ApiResult = Result<Response, ApiError>;

/// The HTTP API, with `iam` as its state.
pub fn router(iam: Iam) -> Router {
    Router::new()
        .route("/acs/api/v1/auth/login", post(login))
        .route("/acs/api/v1/auth/logout", get(logout).post(logout))
        .route("/acs/api/v1/auth/providers", get(providers))
        .route("/acs/api/v1/auth/jwks", get(jwks))
        .route("/acs/api/v1/auth/keys/rotate", post(rotate))
        .route("/acs/api/v1/users", get(list_users))
        .route(
            "/acs/api/v1/users/{uid}",
            get(get_user)
                .put(put_user)
                .patch(patch_user)
                .delete(delete_user),
        )
        .route("/acs/api/v1/service-accounts", get(list_accounts))
        .route(
            "/acs/api/v1/service-accounts/{uid}",
            get(get_account)
                .put(put_account)
                .patch(patch_account)
                .delete(delete_account),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(iam)
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "Not Found",
        "ERR_UNKNOWN_RESOURCE",
        "No such identity endpoint",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "Method Not Allowed",
        "ERR_METHOD_NOT_ALLOWED",
        "This endpoint does not support that method",
    )
}

// ---- request helpers ----

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("a JSON object body is required"));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    serde_json::from_value(value).map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))
}

fn uid_of(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(uid)| uid)
        .map_err(|e| ApiError::bad_request(format!("invalid uid in the path: {e}")))
}

/// The caller's address: `X-Real-IP` (set by the router), else the connection's peer.
fn source(headers: &HeaderMap, peer: Option<SocketAddr>) -> String {
    headers
        .get("x-real-ip")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .or_else(|| peer.map(|p| p.ip().to_string()))
        .unwrap_or_else(|| "unknown".into())
}

fn over_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .next()
                .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
        })
}

/// The verified caller of an administrative endpoint that only reads (any authenticated uid).
fn authenticate(iam: &Iam, headers: &HeaderMap) -> Result<Claims, ApiError> {
    let token = token_from_headers(headers).ok_or_else(|| {
        ApiError::unauthenticated(
            "no authentication token was given",
            "ERR_MISSING_AUTH_TOKEN",
        )
    })?;
    iam.verify(&token).map_err(|e| {
        ApiError::unauthenticated(
            format!("invalid authentication token: {e}"),
            "ERR_INVALID_AUTH_TOKEN",
        )
    })
}

/// The verified caller of an endpoint that changes identities or keys: an administrator.
fn authorize_admin(iam: &Iam, headers: &HeaderMap) -> Result<Claims, ApiError> {
    let claims = authenticate(iam, headers)?;
    if iam.role_of(&claims.uid) != Some(Role::Admin) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "ERR_FORBIDDEN",
            format!(
                "{} may not change identities or keys: it needs the admin role",
                claims.uid
            ),
        ));
    }
    Ok(claims)
}

/// A role named in a request body.
fn parse_role(role: Option<&str>) -> Result<Option<Role>, ApiError> {
    role.map(|r| {
        r.parse::<Role>()
            .map_err(|e| ApiError::bad_request(e.to_string()))
    })
    .transpose()
}

fn principal_json(p: &Principal) -> Value {
    let base = if p.is_service {
        "/acs/api/v1/service-accounts"
    } else {
        "/acs/api/v1/users"
    };
    let mut v = json!({
        "uid": p.uid,
        "description": p.description,
        "url": format!("{base}/{}", p.uid),
        "is_remote": false,
        "is_service": p.is_service,
        "role": p.role,
    });
    if let Some(k) = &p.public_key {
        v["public_key"] = json!(k);
    }
    v
}

fn status(code: StatusCode) -> Response {
    code.into_response()
}

// ---- open endpoints ----

#[derive(Deserialize)]
struct LoginBody {
    uid: Option<String>,
    password: Option<String>,
    token: Option<String>,
}

fn cookie_attrs(secure: bool) -> &'static str {
    if secure {
        "; Path=/; SameSite=Strict; Secure"
    } else {
        "; Path=/; SameSite=Strict"
    }
}

fn login_response(login: &Login, max_age: u64, secure: bool) -> Response {
    let info = json!({"uid": login.claims.uid, "description": login.description});
    let info = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&info).unwrap_or_default());
    let attrs = cookie_attrs(secure);
    let auth_cookie = format!(
        "{AUTH_COOKIE}={}; HttpOnly; Max-Age={max_age}{attrs}",
        login.token
    );
    let info_cookie = format!("{INFO_COOKIE}={info}; Max-Age={max_age}{attrs}");
    let mut resp = (StatusCode::OK, axum::Json(json!({"token": login.token}))).into_response();
    for c in [auth_cookie, info_cookie] {
        if let Ok(v) = HeaderValue::from_str(&c) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    resp
}

/// The connection's peer, when the server was started with connect info.
struct Peer(Option<SocketAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(a)| *a),
        ))
    }
}

async fn login(
    State(iam): State<Iam>,
    Peer(peer): Peer,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let body: LoginBody = parse_body(&body)?;
    let from = source(&headers, peer);
    let login = match (body.uid, body.password, body.token) {
        (Some(uid), Some(password), None) => iam.login_password(&uid, &password, &from).await,
        (Some(uid), None, Some(token)) => iam.login_service(&uid, &token, &from).await,
        _ => {
            return Err(ApiError::bad_request(
                "expected {\"uid\", \"password\"} or {\"uid\", \"token\"}",
            ));
        }
    }
    .map_err(ApiError::from)?;
    Ok(login_response(
        &login,
        iam.options().token_ttl.as_secs(),
        over_https(&headers),
    ))
}

async fn logout(headers: HeaderMap) -> Response {
    let attrs = cookie_attrs(over_https(&headers));
    let expired = "Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT";
    let mut resp = StatusCode::OK.into_response();
    for c in [
        format!("{AUTH_COOKIE}=; HttpOnly; {expired}{attrs}"),
        format!("{INFO_COOKIE}=; {expired}{attrs}"),
    ] {
        if let Ok(v) = HeaderValue::from_str(&c) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    resp
}

/// The EE-style provider map `dcos auth list-providers` and `dcos auth login` read.
pub fn providers_json() -> Value {
    json!({
        "dcos-users": {
            "authentication-type": "dcos-uid-password",
            "client-method": "dcos-usercredential-post-receive-authtoken",
            "config": {"start_flow_url": "/acs/api/v1/auth/login"},
            "description": "Default DC/OS login provider",
        },
        "dcos-services": {
            "authentication-type": "dcos-uid-servicekey",
            "client-method": "dcos-servicecredential-post-receive-authtoken",
            "config": {"start_flow_url": "/acs/api/v1/auth/login"},
            "description": "Default DC/OS login provider",
        },
    })
}

async fn providers() -> Response {
    axum::Json(providers_json()).into_response()
}

async fn jwks(State(iam): State<Iam>) -> Response {
    axum::Json(json!({"keys": iam.jwks()})).into_response()
}

async fn rotate(State(iam): State<Iam>, headers: HeaderMap) -> ApiResult {
    let who = authorize_admin(&iam, &headers)?;
    let kid = iam.rotate_keys().await?;
    tracing::info!(by = %who.uid, %kid, "Signing key rotated on request");
    Ok(axum::Json(json!({"kid": kid})).into_response())
}

// ---- users ----

async fn list_users(
    State(iam): State<Iam>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult {
    authenticate(&iam, &headers)?;
    let service = query
        .as_deref()
        .is_some_and(|q| q.split('&').any(|kv| kv == "type=service"));
    let array: Vec<Value> = iam.list(service).iter().map(principal_json).collect();
    Ok(axum::Json(json!({"array": array})).into_response())
}

async fn get_user(
    State(iam): State<Iam>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult {
    authenticate(&iam, &headers)?;
    let uid = uid_of(path)?;
    Ok(axum::Json(principal_json(&iam.user(&uid)?)).into_response())
}

#[derive(Deserialize)]
struct PutUserBody {
    password: Option<String>,
    #[serde(default)]
    description: String,
    /// `viewer` (the default for a new user), `operator` or `admin`.
    role: Option<String>,
}

async fn put_user(
    State(iam): State<Iam>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> ApiResult {
    authorize_admin(&iam, &headers)?;
    let uid = uid_of(path)?;
    let body: PutUserBody = parse_body(&body)?;
    let role = parse_role(body.role.as_deref())?.unwrap_or(Role::Viewer);
    let password = body
        .password
        .ok_or_else(|| ApiError::bad_request("password is required"))?;
    iam.create_user(&uid, &password, &body.description, role)
        .await?;
    Ok(status(StatusCode::CREATED))
}

#[derive(Deserialize)]
struct PatchUserBody {
    password: Option<String>,
    description: Option<String>,
    role: Option<String>,
}

async fn patch_user(
    State(iam): State<Iam>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> ApiResult {
    authorize_admin(&iam, &headers)?;
    let uid = uid_of(path)?;
    let body: PatchUserBody = parse_body(&body)?;
    let role = parse_role(body.role.as_deref())?;
    if body.password.is_none() && body.description.is_none() && role.is_none() {
        return Err(ApiError::bad_request(
            "nothing to change: give password, description and/or role",
        ));
    }
    iam.update_user(
        &uid,
        body.password.as_deref(),
        body.description.as_deref(),
        role,
    )
    .await?;
    Ok(status(StatusCode::NO_CONTENT))
}

async fn delete_user(
    State(iam): State<Iam>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult {
    authorize_admin(&iam, &headers)?;
    let uid = uid_of(path)?;
    iam.delete_user(&uid).await?;
    Ok(status(StatusCode::NO_CONTENT))
}

// ---- service accounts ----

async fn list_accounts(State(iam): State<Iam>, headers: HeaderMap) -> ApiResult {
    authenticate(&iam, &headers)?;
    let array: Vec<Value> = iam.list(true).iter().map(principal_json).collect();
    Ok(axum::Json(json!({"array": array})).into_response())
}

async fn get_account(
    State(iam): State<Iam>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult {
    authenticate(&iam, &headers)?;
    let uid = uid_of(path)?;
    Ok(axum::Json(principal_json(&iam.service_account(&uid)?)).into_response())
}

#[derive(Deserialize)]
struct PutAccountBody {
    public_key: Option<String>,
    #[serde(default)]
    description: String,
    /// `viewer` (the default for a new account), `operator` or `admin`.
    role: Option<String>,
}

async fn put_account(
    State(iam): State<Iam>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> ApiResult {
    authorize_admin(&iam, &headers)?;
    let uid = uid_of(path)?;
    let body: PutAccountBody = parse_body(&body)?;
    let role = parse_role(body.role.as_deref())?.unwrap_or(Role::Viewer);
    let key = body
        .public_key
        .ok_or_else(|| ApiError::bad_request("public_key is required"))?;
    iam.create_service_account(&uid, &key, &body.description, role)
        .await?;
    Ok(status(StatusCode::CREATED))
}

#[derive(Deserialize)]
struct PatchAccountBody {
    public_key: Option<String>,
    description: Option<String>,
    role: Option<String>,
}

async fn patch_account(
    State(iam): State<Iam>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> ApiResult {
    authorize_admin(&iam, &headers)?;
    let uid = uid_of(path)?;
    let body: PatchAccountBody = parse_body(&body)?;
    let role = parse_role(body.role.as_deref())?;
    if body.public_key.is_none() && body.description.is_none() && role.is_none() {
        return Err(ApiError::bad_request(
            "nothing to change: give public_key, description and/or role",
        ));
    }
    iam.update_service_account(
        &uid,
        body.public_key.as_deref(),
        body.description.as_deref(),
        role,
    )
    .await?;
    Ok(status(StatusCode::NO_CONTENT))
}

async fn delete_account(
    State(iam): State<Iam>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult {
    authorize_admin(&iam, &headers)?;
    let uid = uid_of(path)?;
    iam.delete_service_account(&uid).await?;
    Ok(status(StatusCode::NO_CONTENT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_is_x_real_ip_then_the_peer() {
        let peer: SocketAddr = "10.0.0.9:5555".parse().unwrap();
        let mut h = HeaderMap::new();
        assert_eq!(source(&h, None), "unknown");
        assert_eq!(source(&h, Some(peer)), "10.0.0.9");
        h.insert("x-real-ip", HeaderValue::from_static("192.0.2.7"));
        assert_eq!(source(&h, Some(peer)), "192.0.2.7");
    }

    #[test]
    fn https_is_told_by_x_forwarded_proto() {
        let mut h = HeaderMap::new();
        assert!(!over_https(&h));
        h.insert("x-forwarded-proto", HeaderValue::from_static("HTTPS"));
        assert!(over_https(&h));
        h.insert("x-forwarded-proto", HeaderValue::from_static("http, https"));
        assert!(!over_https(&h));
    }

    #[test]
    fn bodies_must_be_json_objects() {
        assert!(parse_body::<LoginBody>(b"").is_err());
        assert!(parse_body::<LoginBody>(b"[1]").is_err());
        assert!(parse_body::<LoginBody>(b"{").is_err());
        assert!(parse_body::<LoginBody>(br#"{"uid": 5}"#).is_err());
        let b: LoginBody = parse_body(br#"{"uid": "a", "password": "p", "extra": 1}"#).unwrap();
        assert_eq!(b.uid.as_deref(), Some("a"));
    }

    #[test]
    fn providers_are_the_ee_defaults() {
        let p = providers_json();
        assert_eq!(p["dcos-users"]["authentication-type"], "dcos-uid-password");
        assert_eq!(
            p["dcos-services"]["client-method"],
            "dcos-servicecredential-post-receive-authtoken"
        );
        assert_eq!(
            p["dcos-users"]["config"]["start_flow_url"],
            "/acs/api/v1/auth/login"
        );
    }
}
