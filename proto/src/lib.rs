//! The farm's wire protocol: generated tonic/prost code for `pastiche.proto`, and the
//! one place where it meets the domain types of `pastiche-spec`.

mod convert;
pub mod liveness;
pub mod metrics_http;
pub mod runtime;
pub mod security;

/// Generated from pastiche.proto.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("pastiche.v2");
}

/// Encoded descriptors of pastiche.proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/pastiche_descriptor.bin"));

pub use convert::ConversionError;
