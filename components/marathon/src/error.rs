//! What can go wrong talking to Marathon: no answer, an answer that is an error (kept with its
//! status and Marathon's `{message, details}` body), or an answer that is not what the API
//! promises.

use crate::app::Violation;
use crate::sse::SseError;
use crate::views::ErrorBody;

/// An error of one [`crate::Client`] call. `request` names it (`POST http://…/v2/apps`).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No answer: connection refused, timed out, or the body was cut off.
    #[error("{request}: no answer from Marathon")]
    Transport {
        request: String,
        #[source]
        source: reqwest::Error,
    },
    /// 422 (or a 400 naming fields): the input is invalid; `violations` says where and why.
    #[error("{request}: {status} {}{}", body.message, list(violations))]
    Invalid {
        request: String,
        status: u16,
        body: Box<ErrorBody>,
        violations: Vec<Violation>,
    },
    /// 409: the app is locked by the `deployments` in progress (retry with `force`), or the
    /// app or group already exists (`deployments` is empty).
    #[error("{request}: 409 {}", body.message)]
    Conflict {
        request: String,
        body: Box<ErrorBody>,
        deployments: Vec<String>,
    },
    /// 404: no such app, task, group, deployment or version.
    #[error("{request}: 404 {}", body.message)]
    NotFound {
        request: String,
        body: Box<ErrorBody>,
    },
    /// Any other error status.
    #[error("{request}: {status} {}", body.message)]
    Status {
        request: String,
        status: u16,
        body: Box<ErrorBody>,
    },
    /// A success whose body is not what the API promises.
    #[error("{request}: {status} with a body that is not the expected JSON")]
    Decode {
        request: String,
        status: u16,
        #[source]
        source: serde_json::Error,
    },
    /// A success that lacks something the API promises (such as the deployment id of a
    /// new app).
    #[error("{request}: {status} without {missing}")]
    Incomplete {
        request: String,
        status: u16,
        missing: &'static str,
    },
    /// The request body could not be written as JSON.
    #[error("{request}: the request body is not JSON")]
    Encode {
        request: String,
        #[source]
        source: serde_json::Error,
    },
    /// The event stream could not be decoded.
    #[error("{request}: the event stream is broken")]
    Events {
        request: String,
        #[source]
        source: SseError,
    },
}

fn list(violations: &[Violation]) -> String {
    if violations.is_empty() {
        return String::new();
    }
    let v: Vec<String> = violations.iter().map(Violation::to_string).collect();
    format!(" ({})", v.join(", "))
}

impl ClientError {
    /// The HTTP status of an answer, `None` if there was none.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Transport { .. } | ClientError::Encode { .. } => None,
            ClientError::Invalid { status, .. }
            | ClientError::Status { status, .. }
            | ClientError::Decode { status, .. }
            | ClientError::Incomplete { status, .. } => Some(*status),
            ClientError::Conflict { .. } => Some(409),
            ClientError::NotFound { .. } => Some(404),
            ClientError::Events { .. } => Some(200),
        }
    }

    /// Marathon's error body, for an error status.
    pub fn body(&self) -> Option<&ErrorBody> {
        match self {
            ClientError::Invalid { body, .. }
            | ClientError::Conflict { body, .. }
            | ClientError::NotFound { body, .. }
            | ClientError::Status { body, .. } => Some(body),
            _ => None,
        }
    }

    /// The violations of an invalid request (empty for every other error).
    pub fn violations(&self) -> &[Violation] {
        match self {
            ClientError::Invalid { violations, .. } => violations,
            _ => &[],
        }
    }

    /// The error of an answer with `status` (not 2xx) and `body`.
    pub(crate) fn from_status(request: String, status: u16, body: &[u8]) -> ClientError {
        let body = Box::new(
            serde_json::from_slice::<ErrorBody>(body).unwrap_or_else(|_| ErrorBody {
                message: String::from_utf8_lossy(body).trim().to_string(),
                details: None,
                deployments: Vec::new(),
            }),
        );
        match status {
            404 => ClientError::NotFound { request, body },
            409 => ClientError::Conflict {
                request,
                deployments: body.deployments.iter().map(|d| d.id.clone()).collect(),
                body,
            },
            422 => ClientError::Invalid {
                request,
                status,
                violations: body.violations().unwrap_or_default(),
                body,
            },
            400 if body.violations().is_some() => ClientError::Invalid {
                request,
                status,
                violations: body.violations().unwrap_or_default(),
                body,
            },
            _ => ClientError::Status {
                request,
                status,
                body,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn from(status: u16, body: serde_json::Value) -> ClientError {
        ClientError::from_status("POST /v2/apps".into(), status, body.to_string().as_bytes())
    }

    #[test]
    fn error_answers_keep_the_status_and_marathons_body() {
        let e = from(
            422,
            json!({"message": "Object is not valid", "details": [
                {"path": "/cpus", "errors": ["got 0, expected 0.001 or more"]},
                {"path": "/id", "errors": ["a", "b"]}]}),
        );
        assert_eq!(e.status(), Some(422));
        let paths: Vec<&str> = e.violations().iter().map(|v| v.path.as_str()).collect();
        assert_eq!(paths, ["/cpus", "/id"]);
        assert_eq!(
            e.to_string(),
            "POST /v2/apps: 422 Object is not valid (/cpus: got 0, expected 0.001 or more, /id: a; b)"
        );

        let e = from(
            409,
            json!({"message": "App is locked", "deployments": [{"id": "d-1"}]}),
        );
        assert!(matches!(&e, ClientError::Conflict { deployments, .. } if deployments == &["d-1"]));

        let e = from(
            400,
            json!({"message": "Invalid JSON", "details": "EOF at 1"}),
        );
        assert!(matches!(&e, ClientError::Status { status: 400, .. }));
        assert_eq!(
            e.body().and_then(|b| b.details.clone()),
            Some(json!("EOF at 1"))
        );
        let e = from(
            400,
            json!({"message": "Invalid JSON", "details": [{"path": "/cpus", "errors": ["x"]}]}),
        );
        assert_eq!(e.violations().len(), 1);

        let e = ClientError::from_status("GET /x".into(), 503, b"upstream down\n");
        assert_eq!(e.status(), Some(503));
        assert_eq!(e.body().map(|b| b.message.as_str()), Some("upstream down"));
        assert!(matches!(
            from(404, json!({"message": "nope"})),
            ClientError::NotFound { .. }
        ));
    }
}
