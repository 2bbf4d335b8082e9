//! Integration tests against real services.
mod monolith;
mod store;
