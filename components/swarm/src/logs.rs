//! Container logs: the task's `stdout` and `stderr` files in its sandbox, read through the
//! agent's Mesos-style `/files/read` API (the agent copies the container's output there), and
//! framed as Docker's multiplexed stream (an 8-byte header `[stream,0,0,0,len_be32]` per
//! chunk) unless the container has a TTY. The agent's address comes from the master's state
//! summary and the sandbox from the agent's `/state`; both are remembered in the record.
//!
//! Limits of this first slice: the two files carry no per-line times, so `timestamps=1`
//! stamps each line with the time swarm read it, and lines of stdout and stderr written in
//! the same interval come stdout first.

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::Value;

/// One multiplexed frame (1 = stdout, 2 = stderr).
pub fn frame(stream: u8, data: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(8 + data.len());
    b.put_u8(stream);
    b.put_bytes(0, 3);
    b.put_u32(data.len() as u32);
    b.put_slice(data);
    b.freeze()
}

/// The last `n` lines of `text` (all with `None`).
pub fn tail(text: &str, n: Option<usize>) -> &str {
    let Some(n) = n else { return text };
    if n == 0 {
        return "";
    }
    let body = text.strip_suffix('\n').unwrap_or(text);
    let mut count = 0;
    for (i, b) in body.bytes().enumerate().rev() {
        if b == b'\n' {
            count += 1;
            if count == n {
                return &text[i + 1..];
            }
        }
    }
    text
}

/// Puts `stamp` and a space before every line of `text`.
pub fn stamp_lines(text: &str, stamp: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        out.push_str(stamp);
        out.push(' ');
        out.push_str(line);
    }
    out
}

/// `slave(1)@127.0.2.1:5051` → `127.0.2.1:5051`.
pub fn agent_address(pid: &str) -> Option<&str> {
    pid.split_once('@').map(|(_, a)| a)
}

/// The sandbox of task `task_id` in an agent's `/state`.
pub fn sandbox_of(state: &Value, task_id: &str) -> Option<String> {
    for fw in state["frameworks"].as_array().into_iter().flatten().chain(
        state["completed_frameworks"]
            .as_array()
            .into_iter()
            .flatten(),
    ) {
        for ex in fw["executors"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(fw["completed_executors"].as_array().into_iter().flatten())
        {
            let has = ex["id"] == task_id
                || ["tasks", "completed_tasks", "queued_tasks"]
                    .iter()
                    .any(|k| {
                        ex[*k]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|t| t["id"] == task_id)
                    });
            if has {
                return ex["directory"].as_str().map(str::to_owned);
            }
        }
    }
    None
}

/// Query of `GET /containers/{id}/logs`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogQuery {
    pub stdout: bool,
    pub stderr: bool,
    pub follow: bool,
    pub timestamps: bool,
    pub tail: Option<usize>,
}

impl LogQuery {
    pub fn parse(q: &std::collections::HashMap<String, String>) -> Result<LogQuery, String> {
        let flag = |k: &str| {
            q.get(k)
                .is_some_and(|v| matches!(v.as_str(), "1" | "true" | "True"))
        };
        let tail = match q.get("tail").map(String::as_str) {
            None | Some("") | Some("all") => None,
            Some(n) => Some(
                n.parse::<i64>()
                    .map_err(|_| format!("invalid tail {n:?}"))?,
            )
            .filter(|n| *n >= 0)
            .map(|n| n as usize),
        };
        let query = LogQuery {
            stdout: flag("stdout"),
            stderr: flag("stderr"),
            follow: flag("follow"),
            timestamps: flag("timestamps"),
            tail,
        };
        if !query.stdout && !query.stderr {
            return Err("Bad parameters: you must choose at least one stream".into());
        }
        Ok(query)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn frames_carry_the_stream_and_length() {
        assert_eq!(&frame(2, b"hi")[..], &[2, 0, 0, 0, 0, 0, 0, 2, b'h', b'i']);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let cases = [
            ("a\nb\nc\n", Some(2), "b\nc\n"),
            ("a\nb\nc", Some(1), "c"),
            ("a\nb\n", Some(5), "a\nb\n"),
            ("a\nb\n", None, "a\nb\n"),
            ("a\n", Some(0), ""),
        ];
        for (text, n, want) in cases {
            assert_eq!(tail(text, n), want, "{text:?} {n:?}");
        }
        assert_eq!(stamp_lines("a\nb", "T"), "T a\nT b");
    }

    #[test]
    fn the_sandbox_is_found_among_running_and_completed_executors() {
        let state = json!({"frameworks": [{"executors": [], "completed_executors": [
            {"id": "t1", "directory": "/w/slaves/A/frameworks/F/executors/t1/runs/C", "completed_tasks": [{"id": "t1"}]}]}]});
        assert_eq!(
            sandbox_of(&state, "t1").as_deref(),
            Some("/w/slaves/A/frameworks/F/executors/t1/runs/C")
        );
        assert_eq!(sandbox_of(&state, "t2"), None);
        assert_eq!(
            agent_address("slave(1)@127.0.2.1:5051"),
            Some("127.0.2.1:5051")
        );
    }

    #[test]
    fn log_queries_need_a_stream() {
        let q = |pairs: &[(&str, &str)]| {
            LogQuery::parse(
                &pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        assert!(q(&[]).is_err());
        let got = q(&[("stdout", "1"), ("tail", "5"), ("follow", "1")]).unwrap();
        assert_eq!(
            (got.stdout, got.stderr, got.follow, got.tail),
            (true, false, true, Some(5))
        );
        assert_eq!(q(&[("stderr", "1"), ("tail", "all")]).unwrap().tail, None);
        assert!(q(&[("stdout", "1"), ("tail", "x")]).is_err());
    }
}
