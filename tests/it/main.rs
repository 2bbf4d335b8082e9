//! Integration tests against real services.
mod consumer;
mod monolith;
mod relay;
mod store;
