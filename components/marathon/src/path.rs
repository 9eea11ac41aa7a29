//! Marathon path ids: `/prod/web` is app `web` in group `/prod`.

use std::fmt;
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

static SEGMENT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^(([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])\.)*([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])$",
    )
    .expect("static regex")
});

/// The longest id (as written, `/a/b`) of an app or group. Ids are parts of store keys and of
/// every task id, so they are bounded well below coord's 4096-byte key limit.
pub const MAX_ID_BYTES: usize = 1024;

/// An absolute path id. The root group is the empty path (`/`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PathId(Vec<String>);

impl PathId {
    pub fn root() -> PathId {
        PathId(Vec::new())
    }

    /// Parses `s` relative to `base`: leading, trailing and repeated slashes are dropped, `.`
    /// and `..` resolved. Segments are not validated; see [`PathId::problems`].
    pub fn parse_relative(s: &str, base: &PathId) -> PathId {
        let mut parts = if s.starts_with('/') {
            Vec::new()
        } else {
            base.0.clone()
        };
        for seg in s.split('/').filter(|s| !s.is_empty()) {
            match seg {
                "." => {}
                ".." => {
                    parts.pop();
                }
                other => parts.push(other.to_string()),
            }
        }
        PathId(parts)
    }

    /// Parses an absolute id (a missing leading `/` is added).
    pub fn parse(s: &str) -> PathId {
        PathId::parse_relative(s, &PathId::root())
    }

    /// Why this id is not acceptable as an app id (empty if fine).
    pub fn problems(&self, is_app: bool) -> Vec<String> {
        let mut p = Vec::new();
        if is_app && self.0.is_empty() {
            p.push("path must not be empty".to_string());
        }
        let len = self.byte_len();
        if len > MAX_ID_BYTES {
            p.push(format!(
                "is {len} bytes long, at most {MAX_ID_BYTES} bytes are allowed"
            ));
            return p;
        }
        for seg in &self.0 {
            if !SEGMENT.is_match(seg) {
                p.push(format!(
                    "must fully match regular expression '^(([a-z0-9]|[a-z0-9][a-z0-9\\-]*[a-z0-9])\\.)*([a-z0-9]|[a-z0-9][a-z0-9\\-]*[a-z0-9])|(\\.|\\.\\.)$' (segment '{seg}')"
                ));
                break;
            }
        }
        if is_app
            && let Some(last) = self.0.last()
            && ["restart", "tasks", "versions"].contains(&last.as_str())
        {
            p.push(format!("must not end with '{last}'"));
        }
        p
    }

    /// The length of `to_string()` without building it.
    pub fn byte_len(&self) -> usize {
        self.0.iter().map(|s| s.len() + 1).sum::<usize>().max(1)
    }

    pub fn segments(&self) -> &[String] {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub fn parent(&self) -> PathId {
        let mut v = self.0.clone();
        v.pop();
        PathId(v)
    }

    pub fn child(&self, seg: &str) -> PathId {
        let mut v = self.0.clone();
        v.push(seg.to_string());
        PathId(v)
    }

    /// True if `self` equals `other` or lies below it.
    pub fn is_under(&self, other: &PathId) -> bool {
        self.0.len() >= other.0.len() && self.0[..other.0.len()] == other.0[..]
    }

    /// Every strict ancestor group, root first.
    pub fn ancestors(&self) -> Vec<PathId> {
        (0..self.0.len())
            .map(|n| PathId(self.0[..n].to_vec()))
            .collect()
    }

    /// `foo_bar` for `/foo/bar`: the prefix of task ids.
    pub fn safe_id(&self) -> String {
        self.0.join("_")
    }

    /// `bar.foo` for `/foo/bar`: Mesos task and discovery name (DNS `bar-foo` style names come
    /// from Mesos-DNS sanitising the dots away).
    pub fn reversed_dotted(&self) -> String {
        let mut v = self.0.clone();
        v.reverse();
        v.join(".")
    }
}

impl fmt::Display for PathId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}", self.0.join("/"))
    }
}

impl Serialize for PathId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PathId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(PathId::parse(&String::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_normalised_and_validated() {
        assert_eq!(PathId::parse("//grp//app/").to_string(), "/grp/app");
        assert_eq!(
            PathId::parse_relative("web", &PathId::parse("/prod")).to_string(),
            "/prod/web"
        );
        assert_eq!(
            PathId::parse_relative("../db", &PathId::parse("/prod/x")).to_string(),
            "/prod/db"
        );
        assert!(PathId::parse("/a/b-c.d").problems(true).is_empty());
        assert!(!PathId::parse("/A").problems(true).is_empty());
        assert!(!PathId::parse("/a/tasks").problems(true).is_empty());
        assert!(!PathId::parse("/").problems(true).is_empty());
        let long = format!("/{}", ["a"; 512].join("/"));
        assert_eq!(PathId::parse(&long).byte_len(), 1024);
        assert!(PathId::parse(&long).problems(true).is_empty());
        let too_long = format!("{long}/b");
        assert_eq!(PathId::parse(&too_long).byte_len(), too_long.len());
        assert_eq!(
            PathId::parse(&too_long).problems(true),
            ["is 1026 bytes long, at most 1024 bytes are allowed"]
        );
        assert_eq!(PathId::root().byte_len(), 1);
        assert_eq!(PathId::parse("/a/b").reversed_dotted(), "b.a");
        assert_eq!(PathId::parse("/a/b").safe_id(), "a_b");
        assert!(PathId::parse("/a/b").is_under(&PathId::parse("/a")));
        assert!(!PathId::parse("/ab").is_under(&PathId::parse("/a")));
    }
}
