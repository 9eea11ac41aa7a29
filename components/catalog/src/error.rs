//! Cosmos's errors: every failure of the API is one of these, answered with the error media
//! type and `{"type": <name>, "message": <text>, "data": <object>?}`; the `type` names and
//! messages are Cosmos's, because `dcos package` formats some of them by `type`.

use serde_json::{Value, json};

/// One Cosmos error.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CosmosError {
    #[error("Package [{0}] not found")]
    PackageNotFound(String),
    #[error("Version [{version}] of package [{name}] not found")]
    VersionNotFound { name: String, version: String },
    #[error("Package is already installed")]
    PackageAlreadyInstalled,
    #[error("Package [{0}] is not installed")]
    PackageNotInstalled(String),
    #[error("Multiple apps named [{name}] are installed: [{}]", ids.join(", "))]
    AmbiguousAppId { name: String, ids: Vec<String> },
    /// `errors` in the shape `dcos package` reads (`instance.pointer`, `found`, ...).
    #[error("Options JSON failed validation")]
    JsonSchemaMismatch { errors: Vec<Value> },
    #[error("No options are allowed for package [{0}]")]
    OptionsNotAllowed(String),
    #[error("Rendered Marathon JSON must be a JSON object")]
    MarathonTemplateMustBeJsonObject,
    #[error("Package [{name}] has an invalid Marathon template: {message}")]
    InvalidTemplate { name: String, message: String },
    #[error("Package [{name}] version [{version}] has no Marathon template")]
    PackageHasNoMarathonTemplate { name: String, version: String },
    #[error("Marathon: {message}")]
    MarathonBadResponse {
        status: u16,
        message: String,
        errors: Vec<Value>,
    },
    #[error("Could not reach Marathon: {0}")]
    ServiceUnavailable(String),
    #[error("Repository name [{0}] is already present in the list")]
    RepositoryAlreadyPresent(String),
    #[error("Repository [{0}] is not present in the list")]
    RepositoryNotPresent(String),
    #[error("Could not access data at URI [{uri}]: {message}")]
    RepositoryUriError { uri: String, message: String },
    #[error("Repository [{uri}] is not valid: {message}")]
    RepositoryInvalid { uri: String, message: String },
    #[error("Unsupported URI scheme in [{0}]")]
    UnsupportedRepositoryUri(String),
    #[error("Unsupported Content-Type [{found}], expected [{expected}]")]
    UnsupportedContentType { found: String, expected: String },
    #[error("Accept [{found}] is not satisfiable, available: [{available}]")]
    NotAcceptable { found: String, available: String },
    #[error("{0}")]
    MalformedRequest(String),
    #[error("URL [{0}] is not a resource of any configured repository")]
    Forbidden(String),
    #[error("Service [{0}] was not installed from a package")]
    ServiceNotFound(String),
    #[error("The options of the current service were not stored")]
    OptionsNotStored,
    #[error("The new appId {new} must be equal to the old appId {old}")]
    AppIdChanged { new: String, old: String },
    /// Capstan's: open Cosmos refused every version change; the catalog allows the moves
    /// the packages' `upgradesFrom`/`downgradesTo` name.
    #[error(
        "Package [{name}] version [{current}] cannot move to version [{requested}]: neither its downgradesTo nor the new version's upgradesFrom allows it"
    )]
    VersionChangeNotAllowed {
        name: String,
        current: String,
        requested: String,
        upgrades_to: Vec<String>,
        downgrades_to: Vec<String>,
    },
    #[error("Multiple frameworks named [{name}] are registered: [{}]", ids.join(", "))]
    MultipleFrameworkIds { name: String, ids: Vec<String> },
    /// Capstan's image store: no archive of this image.
    #[error("Image [{0}] is not in the cluster's image store")]
    ImageNotFound(String),
    /// Capstan's image store: an upload over `max_image_bytes`.
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    Internal(String),
}

impl CosmosError {
    /// The `type` of the error body: Cosmos's error class name.
    pub fn kind(&self) -> &'static str {
        match self {
            CosmosError::PackageNotFound(_) => "PackageNotFound",
            CosmosError::VersionNotFound { .. } => "VersionNotFound",
            CosmosError::PackageAlreadyInstalled => "PackageAlreadyInstalled",
            CosmosError::PackageNotInstalled(_) => "PackageNotInstalled",
            CosmosError::AmbiguousAppId { .. } => "AmbiguousAppId",
            CosmosError::JsonSchemaMismatch { .. } => "JsonSchemaMismatch",
            CosmosError::OptionsNotAllowed(_) => "OptionsNotAllowed",
            CosmosError::MarathonTemplateMustBeJsonObject => "MarathonTemplateMustBeJsonObject",
            CosmosError::InvalidTemplate { .. } => "InvalidTemplate",
            CosmosError::PackageHasNoMarathonTemplate { .. } => "PackageHasNoMarathonTemplate",
            CosmosError::MarathonBadResponse { .. } => "MarathonBadResponse",
            CosmosError::ServiceUnavailable(_) => "ServiceUnavailable",
            CosmosError::RepositoryAlreadyPresent(_) => "RepositoryAlreadyPresent",
            CosmosError::RepositoryNotPresent(_) => "RepositoryNotPresent",
            CosmosError::RepositoryUriError { .. } => "RepositoryUriError",
            CosmosError::RepositoryInvalid { .. } => "RepositoryInvalid",
            CosmosError::UnsupportedRepositoryUri(_) => "UnsupportedRepositoryUri",
            CosmosError::UnsupportedContentType { .. } => "UnsupportedContentType",
            CosmosError::NotAcceptable { .. } => "NotAcceptable",
            CosmosError::MalformedRequest(_) => "MalformedRequest",
            CosmosError::Forbidden(_) => "Forbidden",
            CosmosError::ServiceNotFound(_) => "ServiceNotFound",
            CosmosError::OptionsNotStored => "OptionsNotStored",
            CosmosError::AppIdChanged { .. } => "AppIdChanged",
            CosmosError::VersionChangeNotAllowed { .. } => "VersionChangeNotAllowed",
            CosmosError::MultipleFrameworkIds { .. } => "MultipleFrameworkIds",
            CosmosError::ImageNotFound(_) => "ImageNotFound",
            CosmosError::PayloadTooLarge(_) => "PayloadTooLarge",
            CosmosError::Internal(_) => "Internal",
        }
    }

    /// The HTTP status Cosmos answers this error with.
    pub fn status(&self) -> u16 {
        match self {
            CosmosError::PackageAlreadyInstalled => 409,
            CosmosError::Forbidden(_) => 403,
            CosmosError::ImageNotFound(_) => 404,
            CosmosError::PayloadTooLarge(_) => 413,
            CosmosError::ServiceUnavailable(_) => 503,
            CosmosError::RepositoryUriError { .. } => 502,
            CosmosError::Internal(_) => 500,
            CosmosError::MarathonBadResponse { status, .. } if *status >= 500 => 502,
            _ => 400,
        }
    }

    /// The `data` of the error body, if this error has one.
    pub fn data(&self) -> Option<Value> {
        match self {
            CosmosError::PackageNotFound(name) => Some(json!({"packageName": name})),
            CosmosError::VersionNotFound { name, version } => {
                Some(json!({"packageName": name, "packageVersion": version}))
            }
            CosmosError::PackageNotInstalled(name) => Some(json!({"packageName": name})),
            CosmosError::ServiceNotFound(id) => Some(json!({"appId": id})),
            CosmosError::ImageNotFound(name) => Some(json!({"image": name})),
            CosmosError::AmbiguousAppId { name, ids } => {
                Some(json!({"packageName": name, "appIds": ids}))
            }
            CosmosError::JsonSchemaMismatch { errors } => Some(json!({ "errors": errors })),
            CosmosError::MarathonBadResponse { errors, .. } => Some(json!({ "errors": errors })),
            CosmosError::RepositoryAlreadyPresent(name)
            | CosmosError::RepositoryNotPresent(name) => Some(json!({ "name": name })),
            CosmosError::AppIdChanged { new, old } => {
                Some(json!({"newAppId": new, "oldAppId": old}))
            }
            CosmosError::VersionChangeNotAllowed {
                name,
                current,
                requested,
                upgrades_to,
                downgrades_to,
            } => Some(json!({
                "packageName": name,
                "currentVersion": current,
                "requestedVersion": requested,
                "upgradesTo": upgrades_to,
                "downgradesTo": downgrades_to,
            })),
            CosmosError::MultipleFrameworkIds { name, ids } => {
                Some(json!({"frameworkName": name, "frameworkIds": ids}))
            }
            _ => None,
        }
    }

    /// The error body.
    pub fn body(&self) -> Value {
        let mut b = json!({"type": self.kind(), "message": self.to_string()});
        if let Some(d) = self.data() {
            b["data"] = d;
        }
        b
    }
}
