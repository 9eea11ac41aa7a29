//! Tearing down the Mesos framework a package ran, as Cosmos's uninstall did for apps
//! labelled `DCOS_PACKAGE_FRAMEWORK_NAME`: the master's `/master/frameworks` names the
//! framework's id, `POST /master/teardown` removes it (and its tasks). The masters are tried
//! in order; a standby answers with a redirect to the leader, which reqwest follows.

use serde::Deserialize;

use crate::error::CosmosError;

/// The masters' HTTP API.
#[derive(Debug, Clone)]
pub struct Masters {
    urls: Vec<String>,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct Frameworks {
    #[serde(default)]
    frameworks: Vec<Framework>,
}

#[derive(Deserialize)]
struct Framework {
    id: String,
    name: String,
    #[serde(default = "yes")]
    active: bool,
}

fn yes() -> bool {
    true
}

/// The ids of the registered frameworks named `name` in a `/master/frameworks` answer.
pub fn ids_named(frameworks_json: &[u8], name: &str) -> Result<Vec<String>, CosmosError> {
    let f: Frameworks = serde_json::from_slice(frameworks_json)
        .map_err(|e| CosmosError::Internal(format!("the master's frameworks: {e}")))?;
    Ok(f.frameworks
        .into_iter()
        .filter(|f| f.name == name && f.active)
        .map(|f| f.id)
        .collect())
}

fn unavailable(e: impl std::fmt::Display) -> CosmosError {
    CosmosError::ServiceUnavailable(format!("the master: {e}"))
}

impl Masters {
    /// The masters at `endpoints`, bare `host:port` ones reached with `scheme`.
    pub fn new(endpoints: &[String], scheme: &str, http: reqwest::Client) -> Masters {
        Masters {
            urls: endpoints
                .iter()
                .map(|e| crate::config::url_with_scheme(e, scheme))
                .collect(),
            http,
        }
    }

    /// Whether any master is configured (without one, uninstall cannot tear down).
    pub fn configured(&self) -> bool {
        !self.urls.is_empty()
    }

    async fn first_ok(
        &self,
        call: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, CosmosError> {
        let mut last = None;
        for u in &self.urls {
            match call(u).send().await {
                Ok(r) if r.status().is_success() => return Ok(r),
                Ok(r) => last = Some(unavailable(format!("{u}: HTTP {}", r.status()))),
                Err(e) => last = Some(unavailable(e)),
            }
        }
        Err(last.unwrap_or_else(|| unavailable("no master is configured")))
    }

    /// The registered frameworks named `name`; more than one is `MultipleFrameworkIds`.
    pub async fn framework_named(&self, name: &str) -> Result<Option<String>, CosmosError> {
        let r = self
            .first_ok(|u| self.http.get(format!("{u}/master/frameworks")))
            .await?;
        let body = r.bytes().await.map_err(unavailable)?;
        let mut ids = ids_named(&body, name)?;
        match ids.len() {
            0 => Ok(None),
            1 => Ok(ids.pop()),
            _ => Err(CosmosError::MultipleFrameworkIds {
                name: name.to_owned(),
                ids,
            }),
        }
    }

    /// `POST /master/teardown` of framework `id`.
    pub async fn teardown(&self, id: &str) -> Result<(), CosmosError> {
        let body = format!("frameworkId={id}");
        self.first_ok(|u| {
            self.http
                .post(format!("{u}/master/teardown"))
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(body.clone())
        })
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frameworks_are_found_by_name_among_the_active_ones() {
        let body = br#"{"frameworks": [
            {"id": "f1", "name": "kafka", "active": true},
            {"id": "f2", "name": "marathon"},
            {"id": "f3", "name": "kafka", "active": false}
        ], "completed_frameworks": [{"id": "f0", "name": "kafka"}]}"#;
        assert_eq!(ids_named(body, "kafka").unwrap(), ["f1"]);
        assert_eq!(ids_named(body, "marathon").unwrap(), ["f2"]);
        assert!(ids_named(body, "none").unwrap().is_empty());
        assert!(ids_named(b"\"x\"", "x").is_err());
    }
}
