//! Capstan's wire formats: the Mesos v1 protobuf messages (scheduler, executor, operator APIs)
//! plus any internal protocols, their Mesos-flavoured JSON mapping, and RecordIO framing.
//!
//! Key decision: we keep our own `.proto` files (proto2, so `required` and explicit
//! `[default = ...]` exist) under `proto/`, with Mesos' exact field numbers but only the
//! messages we speak. `build.rs` compiles every `.proto` found there with `protox` (pure Rust,
//! no `protoc`) into prost types and an embedded descriptor set. JSON is not serde-derived:
//! [`json`] walks prost-reflect descriptors, because Mesos' JSON differs from proto3-JSON
//! (defaults are emitted, enums are names, 64-bit integers are numbers, numeric strings are
//! accepted, missing `required` fields are errors).
//!
//! Layout: each proto package is a nested module, e.g. [`mesos::v1::TaskInfo`],
//! [`mesos::v1::scheduler::Call`], [`mesos::v1::executor::Event`], [`mesos::v1::master::Response`].

#[allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    rustdoc::all,
    non_camel_case_types
)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/_includes.rs"));
}
pub use generated::*;

pub mod json;
pub mod recordio;

#[cfg(test)]
mod fuzz;

use std::sync::LazyLock;

pub use json::{
    JsonError, from_json, from_json_slice, from_json_str, to_json, to_json_string, to_json_vec,
};
pub use prost;
pub use prost::Message;
pub use prost_reflect;

/// Encoded `FileDescriptorSet` of every `.proto` file of this crate (and their imports).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/file_descriptor_set.bin"));

static POOL: LazyLock<prost_reflect::DescriptorPool> = LazyLock::new(|| {
    match prost_reflect::DescriptorPool::decode(FILE_DESCRIPTOR_SET) {
        Ok(pool) => pool,
        // The set is produced by our own build script; failing here is a build bug.
        Err(err) => panic!("embedded descriptor set is invalid: {err}"),
    }
});

/// The reflection pool describing every generated message type.
pub fn descriptor_pool() -> &'static prost_reflect::DescriptorPool {
    &POOL
}

/// Encodes a message as protobuf bytes.
pub fn encode<M: Message>(msg: &M) -> Vec<u8> {
    msg.encode_to_vec()
}

/// Decodes a message from protobuf bytes.
pub fn decode<M: Message + Default>(bytes: &[u8]) -> Result<M, prost::DecodeError> {
    M::decode(bytes)
}

/// The two body encodings the Mesos HTTP APIs accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentType {
    /// `application/json`, with the Mesos JSON mapping.
    Json,
    /// `application/x-protobuf`.
    Protobuf,
}

impl ContentType {
    /// The media type string.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Protobuf => "application/x-protobuf",
        }
    }

    /// Matches a `Content-Type` header exactly, as Mesos does (no parameters, case-sensitive).
    pub fn from_header(value: &str) -> Option<Self> {
        match value {
            "application/json" => Some(Self::Json),
            "application/x-protobuf" => Some(Self::Protobuf),
            _ => None,
        }
    }

    /// Serialises `msg` in this encoding.
    pub fn encode<M: Message + prost::Name>(self, msg: &M) -> Vec<u8> {
        match self {
            Self::Json => to_json_vec(msg),
            Self::Protobuf => msg.encode_to_vec(),
        }
    }

    /// Parses `bytes` in this encoding; JSON also gets the required-field check.
    pub fn decode<M: Message + prost::Name + Default>(self, bytes: &[u8]) -> Result<M, BodyError> {
        match self {
            Self::Json => from_json_slice(bytes).map_err(BodyError::Json),
            Self::Protobuf => M::decode(bytes).map_err(BodyError::Protobuf),
        }
    }
}

/// Why a request or response body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The JSON body is malformed or does not fit the message.
    #[error(transparent)]
    Json(JsonError),
    /// The protobuf body is malformed.
    #[error("invalid protobuf body")]
    Protobuf(#[source] prost::DecodeError),
}
