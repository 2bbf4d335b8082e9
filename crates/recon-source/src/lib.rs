//! The Source API client of recon.
//!
//! [`HttpSource`] implements the engine's [`recon_core::ports::Source`]
//! port over the monolith's HTTP API (`proto/source-api.openapi.json`):
//! one keyset page per call, with timeouts, retries with backoff for
//! transient failures, a request-rate limit shared by all calls, a cap on
//! the response body, and the bearer token.
//!
//! Deletions are inferred from absence, so a page is only handed out after
//! [`validate`] found it sound: any broken page is a permanent error, never
//! "rows are gone". What one page cannot show — a key repeated across pages,
//! a walk that stops before the last page — [`SourceWalk`] checks across
//! the pages of one (tenant, kind).
//!
//! [`openapi_document`] writes the Source API's contract for any declared
//! schema; the checked-in documents are its output.
//!
//! Messages name the URL and the status or problem, never the token or a
//! password in the base URL.

pub mod client;
pub mod config;
pub mod declared;
pub mod digests;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod validate;
pub mod walk;
mod wire;

pub use client::HttpSource;
pub use config::SourceConfig;
pub use error::{Error, Result};
pub use metrics::SourceMetrics;
pub use openapi::openapi_document;
pub use validate::{PageViolation, check_page};
pub use walk::{SourceWalk, WalkSummary, WalkViolation};
