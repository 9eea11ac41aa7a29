//! Config loading: YAML into a `deny_unknown_fields` struct, then [`Validate`].
//!
//! Every error names the file, the field path (`master.listen`) and the problem, because the
//! person reading it is an operator looking at one YAML file.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// Exit code for "configuration error" (`EX_CONFIG` from `sysexits.h`).
pub const EX_CONFIG: i32 = 78;

/// One thing wrong with a config value that parsed but makes no sense.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted path of the field, e.g. `master.listen` (empty for the whole document).
    pub field: String,
    /// What is wrong, e.g. "must be at least 1".
    pub message: String,
}

impl ConfigProblem {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigProblem {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same problem seen from a parent section: `listen` under `master` is `master.listen`.
    pub fn under(self, section: &str) -> Self {
        let field = match (section.is_empty(), self.field.is_empty()) {
            (true, _) => self.field,
            (false, true) => section.to_owned(),
            (false, false) => format!("{section}.{}", self.field),
        };
        ConfigProblem { field, ..self }
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// Semantic checks run after a config parsed. Report every problem, not just the first.
pub trait Validate {
    /// Field paths are relative to `self`; a parent prefixes them with [`ConfigProblem::under`].
    fn validate(&self) -> Vec<ConfigProblem>;
}

impl<T: Validate> Validate for Option<T> {
    fn validate(&self) -> Vec<ConfigProblem> {
        self.as_ref().map(Validate::validate).unwrap_or_default()
    }
}

/// Why a config file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadConfigError {
    #[error("cannot read config file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", parse_message(path, field, *line, *column, message))]
    Parse {
        path: PathBuf,
        /// Dotted field path; empty when the problem is the document itself.
        field: String,
        /// 1-based line of the offending value, when the parser knows it.
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
    #[error("{}", invalid_message(path, problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<ConfigProblem>,
    },
}

impl LoadConfigError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            LoadConfigError::Read { path, .. }
            | LoadConfigError::Parse { path, .. }
            | LoadConfigError::Invalid { path, .. } => path,
        }
    }

    /// Every bad field named by this error (one for a parse error, all for a validation error).
    pub fn fields(&self) -> Vec<&str> {
        match self {
            LoadConfigError::Read { .. } => Vec::new(),
            LoadConfigError::Parse { field, .. } => vec![field.as_str()],
            LoadConfigError::Invalid { problems, .. } => {
                problems.iter().map(|p| p.field.as_str()).collect()
            }
        }
    }
}

fn parse_message(
    path: &Path,
    field: &str,
    line: Option<usize>,
    column: Option<usize>,
    message: &str,
) -> String {
    let mut out = format!("invalid config file {}", path.display());
    match (line, column) {
        (Some(l), Some(c)) => out.push_str(&format!(" (line {l}, column {c})")),
        (Some(l), None) => out.push_str(&format!(" (line {l})")),
        _ => {}
    }
    out.push_str(": ");
    if !field.is_empty() {
        out.push_str(&format!("field `{field}`: "));
    }
    out.push_str(message);
    out
}

fn invalid_message(path: &Path, problems: &[ConfigProblem]) -> String {
    let mut out = format!(
        "invalid config file {}: {} problem{}",
        path.display(),
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems {
        if p.field.is_empty() {
            out.push_str(&format!("\n  - {}", p.message));
        } else {
            out.push_str(&format!("\n  - field `{}`: {}", p.field, p.message));
        }
    }
    out
}

/// Reads, parses and validates a YAML config file.
pub fn load_config<T: DeserializeOwned + Validate>(
    path: impl AsRef<Path>,
) -> Result<T, LoadConfigError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| LoadConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_config(path, &text)
}

/// Parses and validates YAML text; `path` is only used to name the source in errors.
pub fn parse_config<T: DeserializeOwned + Validate>(
    path: impl AsRef<Path>,
    text: &str,
) -> Result<T, LoadConfigError> {
    let path = path.as_ref();
    // An empty file (or one holding only comments) means "all defaults".
    let text = if text.trim().is_empty() || is_only_comments(text) {
        "{}"
    } else {
        text
    };
    if let Some(value) = with_cluster_defaults(path, text)? {
        return validated(path, value);
    }
    let de = serde_yaml_ng::Deserializer::from_str(text);
    let value: T = serde_path_to_error::deserialize(de).map_err(|err| {
        let field = path_string(err.path());
        let inner = err.inner();
        let location = inner.location();
        let (field, message) = split_message(&field, &inner.to_string(), location.as_ref());
        LoadConfigError::Parse {
            path: path.to_owned(),
            field,
            line: location.as_ref().map(|l| l.line()),
            column: location.as_ref().map(|l| l.column()),
            message,
        }
    })?;
    validated(path, value)
}

fn validated<T: Validate>(path: &Path, value: T) -> Result<T, LoadConfigError> {
    let problems = value.validate();
    if problems.is_empty() {
        Ok(value)
    } else {
        Err(LoadConfigError::Invalid {
            path: path.to_owned(),
            problems,
        })
    }
}

/// A document with a `cluster:` section: its daemon sections filled from it, then parsed.
/// (Parsed from the filled document, so errors name the field but not the line.) `None`
/// without a `cluster:` section.
fn with_cluster_defaults<T: DeserializeOwned>(
    path: &Path,
    text: &str,
) -> Result<Option<T>, LoadConfigError> {
    let parse_error = |field: String, message: String| LoadConfigError::Parse {
        path: path.to_owned(),
        field,
        line: None,
        column: None,
        message,
    };
    // A document that is no mapping is left to the typed parse, which explains it better.
    let Ok(mut doc) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text) else {
        return Ok(None);
    };
    if doc.get("cluster").is_none() {
        return Ok(None);
    }
    crate::cluster::apply_cluster_defaults(&mut doc).map_err(|e| match e {
        crate::cluster::ClusterSectionError::Parse { field, message } => {
            parse_error(field, message)
        }
        crate::cluster::ClusterSectionError::Invalid(problems) => LoadConfigError::Invalid {
            path: path.to_owned(),
            problems,
        },
    })?;
    let value = serde_path_to_error::deserialize(doc).map_err(|err| {
        let field = path_string(err.path());
        let (field, message) = split_message(&field, &err.inner().to_string(), None);
        parse_error(field, message)
    })?;
    Ok(Some(value))
}

fn is_only_comments(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .all(|l| l.is_empty() || l.starts_with('#') || l == "---")
}

/// `master.listen`; segments the parser could not name (`?`, on syntax errors) are dropped.
fn path_string(path: &serde_path_to_error::Path) -> String {
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            serde_path_to_error::Segment::Unknown => break,
            serde_path_to_error::Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            other => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&other.to_string());
            }
        }
    }
    out
}

/// Turns serde_yaml_ng's message ("master: unknown field `lisen`, expected ... at line 2
/// column 3") into a field path and a bare problem. A missing field is reported at its parent,
/// so its key is appended to the path.
fn split_message(
    field: &str,
    display: &str,
    location: Option<&serde_yaml_ng::Location>,
) -> (String, String) {
    // The location is reported separately; libyaml puts it mid-message on syntax errors.
    let without_location = match location {
        Some(loc) => display.replace(
            &format!(" at line {} column {}", loc.line(), loc.column()),
            "",
        ),
        None => display.to_owned(),
    };
    let mut message = without_location.as_str();
    // serde_yaml_ng prefixes its own idea of the path: drop it, ours is explicit.
    if let Some((prefix, rest)) = message.split_once(": ") {
        let looks_like_path =
            !prefix.is_empty() && !prefix.contains(char::is_whitespace) && !prefix.contains('`');
        if prefix == field || looks_like_path {
            message = rest;
        }
    }
    let mut field = field.to_owned();
    for lead in ["unknown field `", "missing field `"] {
        if let Some(rest) = message.strip_prefix(lead)
            && let Some((key, _)) = rest.split_once('`')
        {
            // serde_path_to_error already ends the path with an unknown key; not a missing one.
            if field.is_empty() {
                field = key.to_owned();
            } else if field.rsplit('.').next() != Some(key) {
                field = format!("{field}.{key}");
            }
        }
    }
    (field, message.to_owned())
}

/// `#[serde(with = "capstan_runtime::duration_secs")]` for a [`std::time::Duration`] written as
/// a number of seconds (`timeout: 5` or `timeout: 0.25`).
pub mod duration_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        if d.subsec_nanos() == 0 {
            s.serialize_u64(d.as_secs())
        } else {
            s.serialize_f64(d.as_secs_f64())
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(|_| {
            D::Error::custom(format!(
                "expected a non-negative number of seconds, got {secs}"
            ))
        })
    }
}

/// `#[serde(with = "capstan_runtime::duration_millis")]` for a [`std::time::Duration`] written
/// as a whole number of milliseconds (`election_timeout: 150`).
pub mod duration_millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields, default)]
    struct Node {
        master: Option<Master>,
        name: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Master {
        listen: SocketAddr,
        #[serde(default = "default_quorum")]
        quorum: u32,
        #[serde(with = "duration_secs", default)]
        timeout: Duration,
        #[serde(with = "duration_millis", default)]
        tick: Duration,
    }

    fn default_quorum() -> u32 {
        1
    }

    impl Validate for Node {
        fn validate(&self) -> Vec<ConfigProblem> {
            self.master
                .validate()
                .into_iter()
                .map(|p| p.under("master"))
                .collect()
        }
    }

    impl Validate for Master {
        fn validate(&self) -> Vec<ConfigProblem> {
            let mut out = Vec::new();
            if self.quorum == 0 {
                out.push(ConfigProblem::new("quorum", "must be at least 1"));
            }
            if self.timeout.is_zero() {
                out.push(ConfigProblem::new("timeout", "must be positive"));
            }
            out
        }
    }

    fn parse(text: &str) -> Result<Node, LoadConfigError> {
        parse_config("/etc/capstan/config.yaml", text)
    }

    fn parse_err(text: &str) -> (String, String, String) {
        match parse(text) {
            Err(e @ LoadConfigError::Parse { .. }) => {
                let LoadConfigError::Parse { field, message, .. } = &e else {
                    unreachable!()
                };
                (field.clone(), message.clone(), e.to_string())
            }
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn good_config_parses_with_socket_addr_and_seconds() {
        let node =
            parse("master:\n  listen: 127.0.0.1:5050\n  timeout: 0.5\n  tick: 20\n").unwrap();
        let m = node.master.unwrap();
        assert_eq!(m.listen, "127.0.0.1:5050".parse().unwrap());
        assert_eq!(m.timeout, Duration::from_millis(500));
        assert_eq!(m.tick, Duration::from_millis(20));
        assert_eq!(m.quorum, 1);
    }

    #[test]
    fn empty_or_comment_only_file_means_all_defaults() {
        assert!(parse("").unwrap().master.is_none());
        assert!(parse("# nothing here\n\n").unwrap().master.is_none());
    }

    #[test]
    fn unknown_nested_key_names_the_full_field_path() {
        let (field, message, shown) = parse_err("master:\n  lisen: 127.0.0.1:5050\n");
        assert_eq!(field, "master.lisen");
        assert!(message.starts_with("unknown field `lisen`"), "{message}");
        assert!(shown.contains("/etc/capstan/config.yaml"), "{shown}");
        assert!(shown.contains("line 2"), "{shown}");
        assert!(shown.contains("`master.lisen`"), "{shown}");
    }

    #[test]
    fn unknown_top_level_key_names_the_key() {
        let (field, _, _) = parse_err("mastr: {}\n");
        assert_eq!(field, "mastr");
    }

    #[test]
    fn bad_value_names_the_field_and_the_problem() {
        let (field, message, _) = parse_err("master:\n  listen: not-an-address\n");
        assert_eq!(field, "master.listen");
        assert!(message.contains("invalid socket address"), "{message}");
    }

    #[test]
    fn missing_required_field_names_it() {
        let (field, message, _) = parse_err("master:\n  quorum: 2\n");
        assert_eq!(field, "master.listen");
        assert!(message.contains("missing field"), "{message}");
    }

    #[test]
    fn negative_duration_is_rejected() {
        let (field, message, _) = parse_err("master:\n  listen: 127.0.0.1:1\n  timeout: -1\n");
        assert_eq!(field, "master.timeout");
        assert!(message.contains("non-negative"), "{message}");
    }

    #[test]
    fn validation_reports_every_problem_with_prefixed_fields() {
        let err = parse("master:\n  listen: 127.0.0.1:1\n  quorum: 0\n").unwrap_err();
        assert_eq!(err.fields(), vec!["master.quorum", "master.timeout"]);
        let shown = err.to_string();
        assert!(shown.contains("2 problems"), "{shown}");
        assert!(
            shown.contains("field `master.quorum`: must be at least 1"),
            "{shown}"
        );
    }

    #[test]
    fn syntax_error_gives_a_location_and_no_unknown_path_segments() {
        let err = parse("master: {\n").unwrap_err();
        let LoadConfigError::Parse {
            field,
            line,
            message,
            ..
        } = &err
        else {
            panic!("expected a parse error, got {err:?}");
        };
        assert!(!field.contains('?'), "{field}");
        assert_eq!(*line, Some(2));
        assert!(!message.contains("at line"), "{message}");
    }

    #[test]
    fn missing_file_names_the_file() {
        let err = load_config::<Node>("/nonexistent/capstan.yaml").unwrap_err();
        assert!(matches!(err, LoadConfigError::Read { .. }));
        assert!(err.to_string().contains("/nonexistent/capstan.yaml"));
    }

    #[test]
    fn split_message_table() {
        let cases = [
            (
                "",
                "invalid type: string \"x\", expected a map",
                "",
                "invalid type",
            ),
            ("a.b", "a.b: invalid digit", "a.b", "invalid digit"),
            (
                "a",
                "a: unknown field `c`, expected `d`",
                "a.c",
                "unknown field `c`",
            ),
            (
                "a.c",
                "a: unknown field `c`, expected `d`",
                "a.c",
                "unknown field `c`",
            ),
            (
                "",
                "unknown field `zz`, expected one of",
                "zz",
                "unknown field",
            ),
        ];
        for (field, display, want_field, want_start) in cases {
            let (f, m) = split_message(field, display, None);
            assert_eq!(f, want_field, "{display}");
            assert!(m.starts_with(want_start), "{display} -> {m}");
        }
    }

    #[test]
    fn problem_under_a_section_prefixes_the_field() {
        assert_eq!(ConfigProblem::new("x", "m").under("s").field, "s.x");
        assert_eq!(ConfigProblem::new("", "m").under("s").field, "s");
        assert_eq!(ConfigProblem::new("x", "m").under("").field, "x");
    }
}
