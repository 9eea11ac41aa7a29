//! The route table, pure: a method and path (unversioned or `/v1.NN/…`) become a [`Route`],
//! the API version it asked for is checked against the range swarm serves, and every path
//! swarm does not serve gets a clear answer naming it instead of a hang or an empty 404.

use http::Method;

/// The API version swarm advertises (`Api-Version`, `/version`'s `ApiVersion`): at least 1.44
/// (docker CLI 29.0–29.2 refuses less) and below 1.52 (which drops the legacy `/events`
/// fields compose v1 reads).
pub const API_VERSION: &str = "1.51";
pub const MAX_VERSION: (u32, u32) = (1, 51);
/// The oldest `/v1.NN` path served (as Docker 28's minimum).
pub const MIN_API_VERSION: &str = "1.24";
pub const MIN_VERSION: (u32, u32) = (1, 24);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /_capstan/health`: swarm's own liveness probe, answered without a token.
    Health,
    Ping,
    Version,
    Info,
    ContainersList,
    ContainerCreate,
    ContainerInspect(String),
    ContainerStart(String),
    ContainerStop(String),
    ContainerKill(String),
    ContainerRestart(String),
    ContainerWait(String),
    ContainerLogs(String),
    ContainerAttach(String),
    ContainerRemove(String),
    ContainerExec(String),
    ExecStart(String),
    ExecResize(String),
    ContainerResize(String),
    ExecInspect(String),
    ContainerTop(String),
    ContainerPause(String),
    ContainerUnpause(String),
    ContainerStats(String),
    ImagesList,
    ImageInspect(String),
    ImageCreate,
    ContainerRename(String),
    NetworksList,
    NetworkInspect(String),
    NetworkCreate,
    NetworkRemove(String),
    NetworkConnect(String),
    NetworkDisconnect(String),
    NetworksPrune,
    VolumesList,
    VolumeCreate,
    VolumeInspect(String),
    VolumeRemove(String),
    VolumesPrune,
    Events,
    /// `/plugins/X/json`: `docker inspect` asks these in turn and moves on
    /// at a 404, so they answer "no such …".
    NoSuchObject(&'static str),
    /// A Docker endpoint swarm knows but cannot serve; the text says why (501).
    Unsupported(&'static str),
}

/// A request swarm does not route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unrouted {
    /// `/v1.NN` outside the served range (Docker's 400 and message).
    BadVersion(String),
    /// A Docker API endpoint swarm does not serve (yet).
    NotSupported,
}

/// The version of a `/v1.NN/…` path and the path without it.
pub fn split_version(path: &str) -> (Option<&str>, &str) {
    if let Some(rest) = path.strip_prefix("/v")
        && let Some(slash) = rest.find('/')
    {
        let v = &rest[..slash];
        if !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return (Some(v), &rest[slash..]);
        }
    }
    (None, path)
}

fn parse_version(v: &str) -> Option<(u32, u32)> {
    let (a, b) = v.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Checks a path's version against the served range.
pub fn check_version(v: &str) -> Result<(), Unrouted> {
    let parsed = parse_version(v)
        .ok_or_else(|| Unrouted::BadVersion(format!("invalid API version {v:?}")))?;
    if parsed < MIN_VERSION {
        return Err(Unrouted::BadVersion(format!(
            "client version {v} is too old. Minimum supported API version is {MIN_API_VERSION}, please upgrade your client to a newer version"
        )));
    }
    if parsed > MAX_VERSION {
        return Err(Unrouted::BadVersion(format!(
            "client version {v} is too new. Maximum supported API version is {API_VERSION}"
        )));
    }
    Ok(())
}

/// Routes a request.
pub fn route(method: &Method, full_path: &str) -> Result<Route, Unrouted> {
    let (version, path) = split_version(full_path);
    if let Some(v) = version {
        check_version(v)?;
    }
    let path = path.trim_end_matches('/');
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let get = method == Method::GET || method == Method::HEAD;
    let post = method == Method::POST;
    let r = match parts.as_slice() {
        ["_capstan", "health"] if get && version.is_none() => Route::Health,
        ["_ping"] if get => Route::Ping,
        ["version"] if get => Route::Version,
        ["info"] if get => Route::Info,
        ["containers", "json"] if get => Route::ContainersList,
        ["containers", "create"] if post => Route::ContainerCreate,
        ["containers", id, "json"] if get => Route::ContainerInspect((*id).to_owned()),
        ["containers", id, "start"] if post => Route::ContainerStart((*id).to_owned()),
        ["containers", id, "stop"] if post => Route::ContainerStop((*id).to_owned()),
        ["containers", id, "kill"] if post => Route::ContainerKill((*id).to_owned()),
        ["containers", id, "restart"] if post => Route::ContainerRestart((*id).to_owned()),
        ["containers", id, "wait"] if post => Route::ContainerWait((*id).to_owned()),
        ["containers", id, "logs"] if get => Route::ContainerLogs((*id).to_owned()),
        ["containers", id, "attach"] if post => Route::ContainerAttach((*id).to_owned()),
        ["containers", id] if method == Method::DELETE => Route::ContainerRemove((*id).to_owned()),
        ["containers", id, "rename"] if post => Route::ContainerRename((*id).to_owned()),
        ["containers", id, "exec"] if post => Route::ContainerExec((*id).to_owned()),
        ["exec", id, "start"] if post => Route::ExecStart((*id).to_owned()),
        ["exec", id, "resize"] if post => Route::ExecResize((*id).to_owned()),
        ["containers", id, "resize"] if post => Route::ContainerResize((*id).to_owned()),
        ["exec", id, "json"] if get => Route::ExecInspect((*id).to_owned()),
        ["containers", id, "top"] if get => Route::ContainerTop((*id).to_owned()),
        ["containers", id, "pause"] if post => Route::ContainerPause((*id).to_owned()),
        ["containers", id, "unpause"] if post => Route::ContainerUnpause((*id).to_owned()),
        ["containers", id, "stats"] if get => Route::ContainerStats((*id).to_owned()),
        ["networks"] if get => Route::NetworksList,
        ["networks", "create"] if post => Route::NetworkCreate,
        ["networks", "prune"] if post => Route::NetworksPrune,
        ["networks", id] if get => Route::NetworkInspect((*id).to_owned()),
        ["networks", id] if method == Method::DELETE => Route::NetworkRemove((*id).to_owned()),
        ["networks", id, "connect"] if post => Route::NetworkConnect((*id).to_owned()),
        ["networks", id, "disconnect"] if post => Route::NetworkDisconnect((*id).to_owned()),
        ["volumes"] if get => Route::VolumesList,
        ["volumes", "create"] if post => Route::VolumeCreate,
        ["volumes", "prune"] if post => Route::VolumesPrune,
        ["volumes", name] if get => Route::VolumeInspect((*name).to_owned()),
        ["volumes", name] if method == Method::DELETE => Route::VolumeRemove((*name).to_owned()),
        ["events"] if get => Route::Events,
        ["images", "json"] if get => Route::ImagesList,
        ["images", "create"] if post => Route::ImageCreate,
        ["images", name @ .., "json"] if get && !name.is_empty() => {
            Route::ImageInspect(name.join("/"))
        }
        ["plugins", _, "json"] if get => Route::NoSuchObject("plugin"),
        _ => return Err(Unrouted::NotSupported),
    };
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_route_unversioned_and_versioned() {
        let cases: [(Method, &str, Result<Route, Unrouted>); 30] = [
            (
                Method::POST,
                "/v1.41/volumes/create",
                Ok(Route::VolumeCreate),
            ),
            (
                Method::GET,
                "/volumes/p_data",
                Ok(Route::VolumeInspect("p_data".into())),
            ),
            (
                Method::DELETE,
                "/v1.51/volumes/p_data",
                Ok(Route::VolumeRemove("p_data".into())),
            ),
            (Method::POST, "/volumes/prune", Ok(Route::VolumesPrune)),
            (Method::GET, "/_capstan/health", Ok(Route::Health)),
            (
                Method::GET,
                "/v1.51/_capstan/health",
                Err(Unrouted::NotSupported),
            ),
            (Method::HEAD, "/_ping", Ok(Route::Ping)),
            (Method::GET, "/v1.51/_ping", Ok(Route::Ping)),
            (Method::GET, "/v1.44/version", Ok(Route::Version)),
            (Method::GET, "/info", Ok(Route::Info)),
            (
                Method::POST,
                "/v1.50/containers/x/attach",
                Ok(Route::ContainerAttach("x".into())),
            ),
            (
                Method::POST,
                "/v1.50/containers/create",
                Ok(Route::ContainerCreate),
            ),
            (
                Method::GET,
                "/v1.50/containers/json",
                Ok(Route::ContainersList),
            ),
            (
                Method::GET,
                "/containers/web/json",
                Ok(Route::ContainerInspect("web".into())),
            ),
            (
                Method::POST,
                "/v1.41/containers/abc/wait",
                Ok(Route::ContainerWait("abc".into())),
            ),
            (
                Method::DELETE,
                "/v1.41/containers/abc",
                Ok(Route::ContainerRemove("abc".into())),
            ),
            (
                Method::GET,
                "/images/capstan/http/json",
                Ok(Route::ImageInspect("capstan/http".into())),
            ),
            (
                Method::GET,
                "/v1.50/networks/x",
                Ok(Route::NetworkInspect("x".into())),
            ),
            (Method::POST, "/networks/create", Ok(Route::NetworkCreate)),
            (
                Method::POST,
                "/v1.41/networks/p_default/disconnect",
                Ok(Route::NetworkDisconnect("p_default".into())),
            ),
            (Method::GET, "/v1.41/events", Ok(Route::Events)),
            (
                Method::POST,
                "/v1.41/containers/c/exec",
                Ok(Route::ContainerExec("c".into())),
            ),
            (
                Method::POST,
                "/v1.51/exec/e1/start",
                Ok(Route::ExecStart("e1".into())),
            ),
            (
                Method::GET,
                "/exec/e1/json",
                Ok(Route::ExecInspect("e1".into())),
            ),
            (
                Method::GET,
                "/v1.51/containers/c/top",
                Ok(Route::ContainerTop("c".into())),
            ),
            (
                Method::GET,
                "/containers/c/stats",
                Ok(Route::ContainerStats("c".into())),
            ),
            (
                Method::POST,
                "/v1.41/containers/c/rename",
                Ok(Route::ContainerRename("c".into())),
            ),
            (
                Method::POST,
                "/v1.50/containers/abc/update",
                Err(Unrouted::NotSupported),
            ),
            (
                Method::GET,
                "/containers/create",
                Err(Unrouted::NotSupported),
            ),
            (Method::GET, "/nothing", Err(Unrouted::NotSupported)),
        ];
        for (m, p, want) in cases {
            assert_eq!(route(&m, p), want, "{m} {p}");
        }
        assert_eq!(
            route(&Method::POST, "/v1.50/containers/abc/pause"),
            Ok(Route::ContainerPause("abc".into()))
        );
        assert_eq!(
            route(&Method::POST, "/containers/abc/unpause"),
            Ok(Route::ContainerUnpause("abc".into()))
        );
    }

    #[test]
    fn versions_outside_the_range_get_dockers_messages() {
        let Err(Unrouted::BadVersion(old)) = route(&Method::GET, "/v1.12/info") else {
            panic!("1.12 accepted")
        };
        assert!(old.contains("too old") && old.contains("1.24"), "{old}");
        let Err(Unrouted::BadVersion(new)) = route(&Method::GET, "/v1.99/info") else {
            panic!("1.99 accepted")
        };
        assert!(
            new.contains("too new") && new.contains(API_VERSION),
            "{new}"
        );
        assert_eq!(split_version("/version"), (None, "/version"));
        assert_eq!(split_version("/v1.51/version"), (Some("1.51"), "/version"));
    }
}
