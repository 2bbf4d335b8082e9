//! Integration tests against real services.
mod admin_auth;
mod broker;
mod cluster;
mod consumer;
mod consumer_faults;
mod coordinator;
mod deploy;
mod group_lag;
mod monolith;
mod pipeline;
mod recon_binary;
mod reconcile;
mod relay;
mod replica_metrics;
mod source_client;
mod store;
mod store_upkeep;
