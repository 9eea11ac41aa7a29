//! Docker image references (`container.docker.image`), checked against the grammar of
//! Docker's `distribution/reference`: `[host[:port]/]name[:tag][@digest]`. A definition whose
//! image cannot be a reference is rejected at the API, instead of failing later on the agent
//! with an unrelated-looking Docker error.

use std::sync::LazyLock;

use regex::Regex;

/// The longest repository name (host and path, without tag and digest) Docker accepts.
pub const MAX_IMAGE_NAME_BYTES: usize = 255;

/// `host[:port]/path-component(/path-component)*`: a path component is lower-case
/// alphanumerics joined by `.`, `_`, `__` or dashes; the optional host is a domain name, an
/// IPv4 address or a bracketed IPv6 address.
static NAME: LazyLock<Regex> = LazyLock::new(|| {
    let component = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*";
    let domain_component = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
    let host = format!(r"(?:{domain_component}(?:\.{domain_component})*|\[[0-9a-fA-F:]+\])");
    Regex::new(&format!(
        r"^(?:{host}(?::[0-9]+)?/)?{component}(?:/{component})*$"
    ))
    .expect("static regex")
});

static TAG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$").expect("static regex"));

static DIGEST: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$")
        .expect("static regex")
});

/// Why `image` is not a valid Docker image reference; `Ok` if it is one.
pub fn check_reference(image: &str) -> Result<(), String> {
    let (rest, digest) = match image.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (image, None),
    };
    // A `:` after the last `/` starts the tag; one before it belongs to `host:port`.
    let (name, tag) = match rest.rfind(':') {
        Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
        _ => (rest, None),
    };
    if name.is_empty() {
        return Err("an image reference needs a repository name".into());
    }
    if name.len() > MAX_IMAGE_NAME_BYTES {
        return Err(format!(
            "the repository name is {} bytes long, at most {MAX_IMAGE_NAME_BYTES} are allowed",
            name.len()
        ));
    }
    if !NAME.is_match(name) {
        return Err(format!(
            "'{name}' is not a repository name: [host[:port]/]name, with name components of \
             lower-case letters and digits separated by '.', '_', '__' or '-'"
        ));
    }
    if let Some(tag) = tag
        && !TAG.is_match(tag)
    {
        return Err(format!(
            "'{tag}' is not a tag: up to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'"
        ));
    }
    if let Some(digest) = digest
        && !DIGEST.is_match(digest)
    {
        return Err(format!(
            "'{digest}' is not a digest: algorithm:hex (at least 32 hex digits)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_follow_the_docker_reference_grammar() {
        let sha = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let valid = [
            "capstan/redis".to_string(),
            "capstan/http".into(),
            "capstan/busybox".into(),
            "capstan/busybox:latest".into(),
            "redis".into(),
            "nginx:1.25-alpine".into(),
            "johncosta/redis".into(),
            "library/ubuntu:22.04".into(),
            "my_org__x/a.b-c--d:TAG_1".into(),
            "localhost/app".into(),
            "localhost:5000/app:v1".into(),
            "registry.example.com:443/team/app".into(),
            "Registry.Example.com/team/app".into(),
            "127.0.0.1:5000/x".into(),
            "[::1]:5000/x".into(),
            format!("redis@{sha}"),
            format!("redis:7@{sha}"),
            format!("{}:{}", "a".repeat(MAX_IMAGE_NAME_BYTES), "t".repeat(128)),
        ];
        for image in &valid {
            assert_eq!(check_reference(image), Ok(()), "{image}");
        }
        let invalid = [
            "".to_string(),
            "../../x; rm -rf /".into(),
            "Capstan/Redis".into(),
            "UPPER".into(),
            "a b".into(),
            "/redis".into(),
            "redis/".into(),
            "capstan//redis".into(),
            "-redis".into(),
            "redis-".into(),
            "re..dis".into(),
            "re___dis".into(),
            "redis:".into(),
            "redis:.tag".into(),
            "redis:-tag".into(),
            format!("redis:{}", "t".repeat(129)),
            "redis@".into(),
            "redis@sha256:abc".into(),
            "redis@:0123456789abcdef0123456789abcdef".into(),
            "host:port/x".into(),
            "a".repeat(MAX_IMAGE_NAME_BYTES + 1),
            "redis\n".into(),
            "$(reboot)".into(),
        ];
        for image in &invalid {
            assert!(
                check_reference(image).is_err(),
                "{image:?} should be invalid"
            );
        }
    }
}
