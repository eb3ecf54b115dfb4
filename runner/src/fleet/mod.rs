//! The fleet (docs/fleet.md): many sites, one hub, NATS JetStream as the
//! transport between them and nothing more. This module owns the formats
//! that cross the wire (signed job requests, shipped evidence messages) and,
//! with the `fleet` feature, the NATS client side: the evidence shipper,
//! the job inbox, capsule objects and trust root and governance announcements.
//!
//! It decides nothing about trust: a job request is authorised by the
//! site's trust root ([`request::authorize`]), a capsule by [`crate::trust`],
//! and shipped evidence is checked by [`crate::evidence`]'s verifier.

#[cfg(feature = "fleet")]
pub mod capsules;
pub mod collect;
#[cfg(feature = "fleet")]
pub mod cosigned;
#[cfg(feature = "fleet")]
pub mod jobs;
pub mod request;
#[cfg(feature = "fleet")]
pub mod ship;
pub mod status;
pub mod subjects;
#[cfg(feature = "fleet")]
pub mod updates;

pub use request::{
    AuthorizedRequest, JOB_REQUEST_CONTENT_TYPE, JOB_REQUEST_CONTEXT, JobRequest,
    MAX_JOB_INPUT_BYTES, MAX_JOB_REQUEST_BYTES, RequestRefusal, authorize, validate_job_id,
};
