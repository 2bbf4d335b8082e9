//! Integration tests against real services.
mod monolith;
mod relay;
mod store;
