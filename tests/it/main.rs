//! Integration tests against real services.
mod consumer;
mod monolith;
mod pipeline;
mod reconcile;
mod relay;
mod source_client;
mod store;
