//! Typed ids for the objects every Mesos API names: frameworks, agents, tasks, offers and
//! executors. On the wire each is a `{"value": "..."}` message (`mesos.v1.FrameworkID` …);
//! inside Capstan it is a newtype over the string, so a task id can never be passed where an
//! agent id is expected, and maps keyed by ids say what they hold.
//!
//! Key decision: the types are transparent for serde (a plain string), because that is how
//! Capstan's own persisted records (apps' store, the master's registry) have always written
//! them; the Mesos `{"value": …}` shape is produced at the wire edge by [`FrameworkId::to_wire`]
//! and friends, and read back with `from_wire`.

use std::borrow::Borrow;
use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The id as it travels.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The string inside.
            pub fn into_string(self) -> String {
                self.0
            }

            /// The Mesos wire shape, `{"value": "<id>"}`, as a JSON value.
            pub fn to_wire(&self) -> serde_json::Value {
                serde_json::json!({ "value": self.0 })
            }

            /// The id of a Mesos `{"value": "<id>"}` object; `None` when the object or its
            /// `value` string is missing.
            pub fn from_wire(v: Option<&serde_json::Value>) -> Option<Self> {
                v?.get("value")?.as_str().map(|s| Self(s.to_owned()))
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        /// Lets a map keyed by this id be looked up with a `&str`.
        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
    };
}

id_type!(
    /// A framework's id (`mesos.v1.FrameworkID`), chosen by the master at first SUBSCRIBE.
    FrameworkId
);
id_type!(
    /// An agent's id (`mesos.v1.AgentID`), chosen by the master when the agent registers.
    AgentId
);
id_type!(
    /// A task's id (`mesos.v1.TaskID`), chosen by its framework; unique within it.
    TaskId
);
id_type!(
    /// An offer's id (`mesos.v1.OfferID`), chosen by the master.
    OfferId
);
id_type!(
    /// An executor's id (`mesos.v1.ExecutorID`), chosen by the framework (or the agent for
    /// command tasks); unique within its framework on one agent.
    ExecutorId
);

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn ids_are_plain_strings_in_serde_and_display() {
        let id = TaskId::from("redis.1234");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"redis.1234\"");
        let back: TaskId = serde_json::from_str("\"redis.1234\"").unwrap();
        assert_eq!(back, id);
        assert_eq!(id.to_string(), "redis.1234");
        assert_eq!(format!("{id:?}"), "TaskId(\"redis.1234\")");
        assert_eq!(id, "redis.1234");
    }

    #[test]
    fn maps_keyed_by_ids_are_looked_up_by_str() {
        let mut m = BTreeMap::new();
        m.insert(AgentId::from("a-S1"), 1);
        assert_eq!(m.get("a-S1"), Some(&1));
        assert_eq!(m.get("a-S2"), None);
    }

    #[test]
    fn wire_shape_is_a_value_object() {
        let id = FrameworkId::from("m-0001");
        assert_eq!(id.to_wire(), serde_json::json!({"value": "m-0001"}));
        assert_eq!(FrameworkId::from_wire(Some(&id.to_wire())), Some(id));
        assert_eq!(FrameworkId::from_wire(None), None);
        assert_eq!(
            FrameworkId::from_wire(Some(&serde_json::json!({"value": 1}))),
            None
        );
        assert_eq!(FrameworkId::from_wire(Some(&serde_json::json!({}))), None);
    }
}
