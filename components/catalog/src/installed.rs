//! Installs are Marathon apps: creating one through the apps API, and finding them again
//! from their `DCOS_PACKAGE_*` labels for `package list` and `package uninstall`.

use capstan_marathon::{App, AppDefinition, Client, ClientError, ListApps, PathId};
use serde_json::{Value, json};

use crate::error::CosmosError;
use crate::render::{
    LABEL_DEFINITION, LABEL_METADATA, LABEL_NAME, LABEL_VERSION, decode_definition,
    decode_json_label,
};

/// The apps API, through any of its instances (each proxies to the leader).
#[derive(Debug, Clone)]
pub struct Apps {
    clients: Vec<Client>,
}

fn marathon_err(e: ClientError) -> CosmosError {
    match e.status() {
        None => CosmosError::ServiceUnavailable(e.to_string()),
        Some(status) => {
            let errors: Vec<Value> = e
                .violations()
                .iter()
                .map(|v| json!({"path": v.path, "errors": v.errors}))
                .collect();
            CosmosError::MarathonBadResponse {
                status,
                message: e
                    .body()
                    .map(|b| b.message.clone())
                    .unwrap_or_else(|| e.to_string()),
                errors,
            }
        }
    }
}

impl Apps {
    pub fn new(endpoints: &[String]) -> Apps {
        Apps {
            clients: endpoints
                .iter()
                .map(|e| Client::new(crate::config::http_url(e)))
                .collect(),
        }
    }

    /// Clients sending through `http` (its TLS identity), bare `host:port` endpoints reached
    /// with `scheme`.
    pub fn with_http(endpoints: &[String], scheme: &str, http: reqwest::Client) -> Apps {
        Apps {
            clients: endpoints
                .iter()
                .map(|e| Client::with_http(crate::config::url_with_scheme(e, scheme), http.clone()))
                .collect(),
        }
    }

    /// Runs `call` on each instance in turn until one answers.
    async fn each<T, F, Fut>(&self, call: F) -> Result<T, ClientError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let mut last = None;
        for c in &self.clients {
            match call(c.clone()).await {
                Err(e @ ClientError::Transport { .. }) => {
                    tracing::debug!(apps = %c.base_url(), error = %e, "Apps instance unreachable");
                    last = Some(e);
                }
                other => return other,
            }
        }
        Err(last.unwrap_or(ClientError::Incomplete {
            request: "apps".into(),
            status: 0,
            missing: "an apps endpoint",
        }))
    }

    /// Creates the rendered app; Marathon's 409 is `PackageAlreadyInstalled`.
    pub async fn create(&self, app: &Value) -> Result<App, CosmosError> {
        let def: AppDefinition =
            serde_json::from_value(app.clone()).map_err(|e| CosmosError::MarathonBadResponse {
                status: 422,
                message: format!("the rendered app is not a Marathon app definition: {e}"),
                errors: Vec::new(),
            })?;
        match self
            .each(|c| {
                let def = def.clone();
                async move { c.create_app(&def).await }
            })
            .await
        {
            Ok(created) => Ok(created.app),
            Err(ClientError::Conflict { deployments, .. }) if deployments.is_empty() => {
                Err(CosmosError::PackageAlreadyInstalled)
            }
            Err(e) => Err(marathon_err(e)),
        }
    }

    /// Every app that is a package install.
    pub async fn installs(&self) -> Result<Vec<App>, CosmosError> {
        let q = ListApps {
            label: Some(LABEL_NAME.into()),
            ..ListApps::default()
        };
        let apps = self
            .each(|c| {
                let q = q.clone();
                async move { c.list_apps(&q).await }
            })
            .await
            .map_err(marathon_err)?;
        Ok(apps
            .into_iter()
            .filter(|a| a.definition.labels.contains_key(LABEL_NAME))
            .collect())
    }

    /// Replaces the definition of `app["id"]` (forced over a deployment in progress, so an
    /// install still starting can be fixed); the deployment's id.
    pub async fn update(&self, app: &Value) -> Result<String, CosmosError> {
        let def: AppDefinition =
            serde_json::from_value(app.clone()).map_err(|e| CosmosError::MarathonBadResponse {
                status: 422,
                message: format!("the rendered app is not a Marathon app definition: {e}"),
                errors: Vec::new(),
            })?;
        self.each(|c| {
            let def = def.clone();
            async move { c.update_app(&def, true).await }
        })
        .await
        .map(|d| d.deployment_id)
        .map_err(marathon_err)
    }

    /// Deletes an app (forced, as Cosmos does).
    pub async fn delete(&self, id: &PathId) -> Result<(), CosmosError> {
        match self
            .each(|c| {
                let id = id.clone();
                async move { c.delete_app(&id, true).await }
            })
            .await
        {
            Ok(_) | Err(ClientError::NotFound { .. }) => Ok(()),
            Err(e) => Err(marathon_err(e)),
        }
    }
}

/// The package JSON an install was made from: its definition label, else its metadata label.
pub fn package_of(app: &App) -> Option<Value> {
    let l = &app.definition.labels;
    l.get(LABEL_DEFINITION)
        .and_then(|d| decode_definition(d))
        .or_else(|| l.get(LABEL_METADATA).and_then(|m| decode_json_label(m)))
}

const DEFINITION_FIELDS: [&str; 14] = [
    "packagingVersion",
    "name",
    "version",
    "maintainer",
    "description",
    "tags",
    "selected",
    "scm",
    "website",
    "framework",
    "preInstallNotes",
    "postInstallNotes",
    "postUninstallNotes",
    "licenses",
];

/// `package list`: installs matching the filters, sorted by (name, appId).
pub fn list(apps: &[App], name: Option<&str>, app_id: Option<&PathId>) -> Value {
    let mut out: Vec<(String, String, Value)> = Vec::new();
    for app in apps {
        let Some(label_name) = app.definition.labels.get(LABEL_NAME) else {
            continue;
        };
        if name.is_some_and(|n| n != label_name)
            || app_id.is_some_and(|id| *id != app.definition.id)
        {
            continue;
        }
        let pkg = package_of(app).unwrap_or_else(
            || json!({"name": label_name, "version": app.definition.labels.get(LABEL_VERSION)}),
        );
        let mut def = serde_json::Map::new();
        for f in DEFINITION_FIELDS {
            if let Some(v) = pkg.get(f).filter(|v| !v.is_null()) {
                def.insert(f.to_owned(), v.clone());
            }
        }
        def.entry("name").or_insert_with(|| json!(label_name));
        let mut info = json!({ "packageDefinition": def });
        if let Some(r) = pkg.get("resource") {
            info["resourceDefinition"] = r.clone();
        }
        let id = app.definition.id.to_string();
        out.push((
            label_name.clone(),
            id.clone(),
            json!({"appId": id, "packageInformation": info}),
        ));
    }
    out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    json!({ "packages": out.into_iter().map(|(_, _, v)| v).collect::<Vec<_>>() })
}

/// What `package uninstall` removes: the installs of `name` (only `app_id`'s if given); more
/// than one without `all` is ambiguous, none is an error.
pub fn to_uninstall<'a>(
    apps: &'a [App],
    name: &str,
    app_id: Option<&PathId>,
    all: bool,
) -> Result<Vec<&'a App>, CosmosError> {
    let hits: Vec<&App> = apps
        .iter()
        .filter(|a| {
            a.definition
                .labels
                .get(LABEL_NAME)
                .is_some_and(|n| n == name)
        })
        .filter(|a| app_id.is_none_or(|id| *id == a.definition.id))
        .collect();
    match hits.len() {
        0 => Err(CosmosError::PackageNotInstalled(name.to_owned())),
        1 => Ok(hits),
        _ if all => Ok(hits),
        _ => Err(CosmosError::AmbiguousAppId {
            name: name.to_owned(),
            ids: hits.iter().map(|a| a.definition.id.to_string()).collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(id: &str, labels: Value) -> App {
        serde_json::from_value(json!({"id": id, "cmd": "x", "labels": labels})).unwrap()
    }

    #[test]
    fn uninstall_picks_installs_by_name_and_refuses_ambiguity() {
        let apps = vec![
            app("/r1", json!({LABEL_NAME: "redis"})),
            app("/r2", json!({LABEL_NAME: "redis"})),
            app("/h", json!({LABEL_NAME: "hello-world"})),
            app("/plain", json!({})),
        ];
        assert!(matches!(
            to_uninstall(&apps, "redis", None, false),
            Err(CosmosError::AmbiguousAppId { ids, .. }) if ids == ["/r1", "/r2"]
        ));
        assert_eq!(to_uninstall(&apps, "redis", None, true).unwrap().len(), 2);
        let id = PathId::parse("/r2");
        let one = to_uninstall(&apps, "redis", Some(&id), false).unwrap();
        assert_eq!(one[0].definition.id, id);
        assert_eq!(
            to_uninstall(&apps, "nginx", None, false).unwrap_err(),
            CosmosError::PackageNotInstalled("nginx".into())
        );
    }

    #[test]
    fn list_sorts_by_name_then_app_id_and_falls_back_to_labels() {
        let apps = vec![
            app("/z", json!({LABEL_NAME: "redis", LABEL_VERSION: "1"})),
            app("/b", json!({LABEL_NAME: "hello-world", LABEL_VERSION: "2"})),
            app("/a", json!({LABEL_NAME: "redis", LABEL_VERSION: "1"})),
        ];
        let v = list(&apps, None, None);
        let ids: Vec<&str> = v["packages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["appId"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["/b", "/a", "/z"]);
        assert_eq!(
            v["packages"][1]["packageInformation"]["packageDefinition"]["version"],
            "1"
        );
        assert_eq!(
            list(&apps, Some("hello-world"), None)["packages"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }
}
