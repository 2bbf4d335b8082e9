//! Acceptance tests of "many replicas" (DESIGN §2) on real services: three
//! `recon serve` processes sharing one PostgreSQL replica database, one
//! consumer group on a real broker and one etcd service prefix (or one
//! ZooKeeper node: [`zookeeper`] runs the failover, zombie, follower, pause,
//! max_pause, abort and orphaned-run scenarios there), reconciling against a
//! real `recon monolith` while it keeps changing.
//!
//! What is checked, and how:
//! * end state: `compare_databases`, plain SQL over both databases;
//! * units: the coordinator's history of the service prefix, recorded by a
//!   watch of the test's own ([`history`]) — every put of a done-record, so a unit
//!   completed twice shows up even though the second put overwrites the
//!   first key;
//! * the pause: each replica's `recon_consumer_events_received_total`, which
//!   must stay flat between its acknowledgement and the barrier;
//! * leaders and epochs: `GET /cluster` of a surviving replica, and the
//!   global fence in the replica database.
//!
//! Needs `RECON_TEST_POSTGRES_URL`, `RECON_TEST_ETCD_ENDPOINTS`,
//! `RECON_TEST_ZOOKEEPER` and the `recon` binary (`scripts/test.sh`
//! provides them all).

mod abort;
mod admin;
mod catalog;
mod checks;
mod completes;
mod coordinators;
mod database;
mod etcd_outage;
mod failover;
mod fixture;
mod follower;
mod frozen;
mod generation;
mod history;
mod kafka_cluster;
mod never;
mod observability;
mod pause;
mod pause_only;
mod quick_restart;
mod run_ids;
mod schedule;
mod scoped;
mod secrets;
mod status_page;
mod tracing;
mod zombie;
