//! Mesos task states: one enum with the protobuf numbers and JSON names of
//! `mesos.v1.TaskState`, so "is this state terminal" has one answer in every crate.

use std::fmt;

/// A Mesos task state (`mesos.v1.TaskState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TaskState {
    Staging,
    Starting,
    Running,
    Killing,
    Finished,
    Failed,
    Killed,
    Error,
    Lost,
    Dropped,
    Unreachable,
    Gone,
    GoneByOperator,
    Unknown,
}

/// A name or number that is no Mesos task state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown task state {0:?}")]
pub struct UnknownTaskState(pub String);

impl TaskState {
    /// Every state, in protobuf-number order.
    pub const ALL: [TaskState; 14] = [
        TaskState::Starting,
        TaskState::Running,
        TaskState::Finished,
        TaskState::Failed,
        TaskState::Killed,
        TaskState::Lost,
        TaskState::Staging,
        TaskState::Error,
        TaskState::Killing,
        TaskState::Dropped,
        TaskState::Unreachable,
        TaskState::Gone,
        TaskState::GoneByOperator,
        TaskState::Unknown,
    ];

    /// The JSON name, `TASK_RUNNING`.
    pub const fn name(self) -> &'static str {
        match self {
            TaskState::Staging => "TASK_STAGING",
            TaskState::Starting => "TASK_STARTING",
            TaskState::Running => "TASK_RUNNING",
            TaskState::Killing => "TASK_KILLING",
            TaskState::Finished => "TASK_FINISHED",
            TaskState::Failed => "TASK_FAILED",
            TaskState::Killed => "TASK_KILLED",
            TaskState::Error => "TASK_ERROR",
            TaskState::Lost => "TASK_LOST",
            TaskState::Dropped => "TASK_DROPPED",
            TaskState::Unreachable => "TASK_UNREACHABLE",
            TaskState::Gone => "TASK_GONE",
            TaskState::GoneByOperator => "TASK_GONE_BY_OPERATOR",
            TaskState::Unknown => "TASK_UNKNOWN",
        }
    }

    /// The protobuf enum number.
    pub const fn number(self) -> i32 {
        match self {
            TaskState::Starting => 0,
            TaskState::Running => 1,
            TaskState::Finished => 2,
            TaskState::Failed => 3,
            TaskState::Killed => 4,
            TaskState::Lost => 5,
            TaskState::Staging => 6,
            TaskState::Error => 7,
            TaskState::Killing => 8,
            TaskState::Dropped => 9,
            TaskState::Unreachable => 10,
            TaskState::Gone => 11,
            TaskState::GoneByOperator => 12,
            TaskState::Unknown => 13,
        }
    }

    /// The state with this JSON name.
    pub fn from_name(name: &str) -> Result<TaskState, UnknownTaskState> {
        TaskState::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| UnknownTaskState(name.to_string()))
    }

    /// The state with this protobuf number.
    pub fn from_number(n: i32) -> Result<TaskState, UnknownTaskState> {
        TaskState::ALL
            .into_iter()
            .find(|s| s.number() == n)
            .ok_or_else(|| UnknownTaskState(n.to_string()))
    }

    /// The state with this JSON name; any other name is `Unknown` (a newer master's state).
    pub fn from_name_or_unknown(name: &str) -> TaskState {
        TaskState::from_name(name).unwrap_or(TaskState::Unknown)
    }

    /// The state with this protobuf number; any other number is `Unknown`.
    pub fn from_number_or_unknown(n: i32) -> TaskState {
        TaskState::from_number(n).unwrap_or(TaskState::Unknown)
    }

    /// A task in this state will never run again (Mesos' `protobuf::isTerminalState`).
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Finished
                | TaskState::Failed
                | TaskState::Killed
                | TaskState::Error
                | TaskState::Lost
                | TaskState::Dropped
                | TaskState::Gone
                | TaskState::GoneByOperator
        )
    }

    /// Whether the JSON name `name` is a terminal state (unknown names are not).
    pub fn is_terminal_name(name: &str) -> bool {
        TaskState::from_name(name).is_ok_and(TaskState::is_terminal)
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for TaskState {
    type Err = UnknownTaskState;
    fn from_str(s: &str) -> Result<TaskState, UnknownTaskState> {
        TaskState::from_name(s)
    }
}

impl serde::Serialize for TaskState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for TaskState {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<TaskState, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        TaskState::from_name(&name).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_round_trip() {
        for s in TaskState::ALL {
            assert_eq!(TaskState::from_name(s.name()), Ok(s));
            assert_eq!(TaskState::from_number(s.number()), Ok(s));
            assert_eq!(s.to_string().parse::<TaskState>(), Ok(s));
        }
        let mut numbers: Vec<i32> = TaskState::ALL.iter().map(|s| s.number()).collect();
        numbers.sort_unstable();
        assert_eq!(numbers, (0..14).collect::<Vec<_>>());
        assert!(TaskState::from_name("TASK_RUNNIN").is_err());
        assert!(TaskState::from_number(14).is_err());
    }

    #[test]
    fn terminal_states_are_mesos_ones() {
        let terminal: Vec<&str> = TaskState::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .map(TaskState::name)
            .collect();
        assert_eq!(
            terminal,
            [
                "TASK_FINISHED",
                "TASK_FAILED",
                "TASK_KILLED",
                "TASK_LOST",
                "TASK_ERROR",
                "TASK_DROPPED",
                "TASK_GONE",
                "TASK_GONE_BY_OPERATOR"
            ]
        );
        assert!(!TaskState::is_terminal_name("TASK_UNREACHABLE"));
        assert!(!TaskState::is_terminal_name("bogus"));
    }
}
