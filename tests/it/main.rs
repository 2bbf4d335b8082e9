//! Integration tests against real services.
mod store;
mod monolith;
