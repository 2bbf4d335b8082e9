//! Where etcd is, under which prefix the service's keys live, and who this
//! member is.

use crate::error::{Error, Result};
use recon_engine::cluster::MemberInfo;
use std::time::Duration;

/// How an [`EtcdCoordinator`](crate::EtcdCoordinator) connects and registers.
///
/// Holds no credentials: the endpoints are plain URLs.
#[derive(Debug, Clone)]
pub struct EtcdSettings {
    /// etcd client URLs, e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// The service's key prefix, e.g. `/recon/<service>`; every replica of one
    /// service uses the same one.
    pub prefix: String,
    /// This member, as the others see it under `members/`.
    pub member: MemberInfo,
    /// The lease's time-to-live in seconds: how long a silent member still
    /// counts as alive. etcd raises values below its minimum (about 2 s).
    pub lease_ttl_secs: i64,
}

impl EtcdSettings {
    /// The lease TTL when none is configured.
    pub const DEFAULT_LEASE_TTL_SECS: i64 = 10;

    /// Settings with the default lease TTL.
    pub fn new(endpoints: Vec<String>, prefix: impl Into<String>, member: MemberInfo) -> Self {
        Self {
            endpoints,
            prefix: prefix.into(),
            member,
            lease_ttl_secs: Self::DEFAULT_LEASE_TTL_SECS,
        }
    }

    /// Checks every field once, naming the one that is wrong.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.endpoints.is_empty() || self.endpoints.iter().any(|url| url.trim().is_empty()) {
            return Err(invalid("endpoints", "needs at least one non-empty URL"));
        }
        if self.prefix.trim_end_matches('/').is_empty() {
            return Err(invalid("prefix", "must not be empty or `/`"));
        }
        if self.member.id.is_empty() {
            return Err(invalid("member.id", "must not be empty"));
        }
        if !(1..=3600).contains(&self.lease_ttl_secs) {
            return Err(invalid("lease_ttl_secs", "must be between 1 and 3600"));
        }
        Ok(())
    }

    /// The deadline of one etcd request (not of a campaign, which waits for
    /// as long as it takes): half the TTL, within 2–5 s.
    pub(crate) fn request_timeout(&self) -> Duration {
        let half_ttl_ms = (self.lease_ttl_secs.max(1) as u64) * 500;
        Duration::from_millis(half_ttl_ms.clamp(2_000, 5_000))
    }
}

fn invalid(field: &'static str, reason: &str) -> Error {
    Error::InvalidSettings {
        field,
        reason: reason.to_owned(),
    }
}
