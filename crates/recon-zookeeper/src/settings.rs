//! Where ZooKeeper is, under which node the service's state lives, and who
//! this member is.

use crate::error::{Error, Result};
use recon_coord::MemberInfo;
use std::time::Duration;

/// How a [`ZooKeeperBackend`](crate::ZooKeeperBackend) connects and
/// registers.
#[derive(Debug, Clone)]
pub struct ZooKeeperSettings {
    /// The ensemble's client addresses, `host:port,host:port` (ZooKeeper's
    /// connect string, without a chroot).
    pub servers: String,
    /// The service's node, e.g. `/recon/<service>`; every replica of one
    /// service uses the same one. Created, with its parents, if missing.
    pub prefix: String,
    /// This member, as the others see it under `members/`.
    pub member: MemberInfo,
    /// The session timeout asked for: how long a silent member still counts
    /// as alive. The server bounds it (by default to 2–20 ticks).
    pub session_timeout: Duration,
}

impl ZooKeeperSettings {
    /// The session timeout when none is configured.
    pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(6);

    /// Settings with the default session timeout.
    pub fn new(servers: impl Into<String>, prefix: impl Into<String>, member: MemberInfo) -> Self {
        Self {
            servers: servers.into(),
            prefix: prefix.into(),
            member,
            session_timeout: Self::DEFAULT_SESSION_TIMEOUT,
        }
    }

    /// Checks every field once, naming the one that is wrong.
    pub(crate) fn validate(&self) -> Result<()> {
        validate_servers(&self.servers)?;
        validate_prefix(&self.prefix)?;
        if self.member.id.is_empty() {
            return Err(invalid("member.id", "must not be empty"));
        }
        let allowed = Duration::from_secs(1)..=Duration::from_secs(600);
        if !allowed.contains(&self.session_timeout) {
            return Err(invalid("session_timeout", "must be between 1 s and 10 min"));
        }
        Ok(())
    }

    /// The deadline of one request (not of a campaign, which waits for as
    /// long as it takes): half the session timeout, within 2–5 s.
    pub(crate) fn request_timeout(&self) -> Duration {
        request_timeout(self.session_timeout)
    }
}

/// Half of `session_timeout`, within 2–5 s.
pub(crate) fn request_timeout(session_timeout: Duration) -> Duration {
    (session_timeout / 2).clamp(Duration::from_secs(2), Duration::from_secs(5))
}

/// A connect string of `host:port` entries, no chroot (the prefix is ours).
pub(crate) fn validate_servers(servers: &str) -> Result<()> {
    if servers.trim().is_empty() || servers.split(',').any(|server| server.trim().is_empty()) {
        return Err(invalid(
            "servers",
            "needs host:port entries separated by commas",
        ));
    }
    if servers.contains('/') {
        return Err(invalid(
            "servers",
            "must not hold a chroot path; use prefix",
        ));
    }
    Ok(())
}

/// An absolute node path, not the root, not under `/zookeeper`, without
/// empty, `.` or `..` segments.
pub(crate) fn validate_prefix(prefix: &str) -> Result<()> {
    let trimmed = prefix.trim_end_matches('/');
    let Some(relative) = trimmed.strip_prefix('/') else {
        return Err(invalid(
            "prefix",
            "must be an absolute node path like /recon/<service>",
        ));
    };
    let segments: Vec<&str> = relative.split('/').collect();
    if relative.is_empty()
        || segments
            .iter()
            .any(|segment| matches!(*segment, "" | "." | ".."))
    {
        return Err(invalid(
            "prefix",
            "must not be `/` nor hold empty, `.` or `..` segments",
        ));
    }
    if segments[0] == "zookeeper" {
        return Err(invalid("prefix", "/zookeeper is reserved by ZooKeeper"));
    }
    Ok(())
}

fn invalid(field: &'static str, reason: &str) -> Error {
    Error::InvalidSettings {
        field,
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_must_be_absolute_plain_paths_outside_zookeeper() {
        for good in ["/recon/users", "/recon/users/", "/a"] {
            assert!(validate_prefix(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/",
            "recon/users",
            "/recon//users",
            "/recon/./x",
            "/zookeeper/x",
        ] {
            assert!(validate_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn servers_are_host_port_lists_without_chroot() {
        assert!(validate_servers("127.0.0.1:2181,zk2:2181").is_ok());
        for bad in ["", " ", "a:1,,b:2", "127.0.0.1:2181/chroot"] {
            assert!(validate_servers(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn request_deadlines_follow_the_session_timeout_within_bounds() {
        assert_eq!(
            request_timeout(Duration::from_secs(2)),
            Duration::from_secs(2)
        );
        assert_eq!(
            request_timeout(Duration::from_secs(6)),
            Duration::from_secs(3)
        );
        assert_eq!(
            request_timeout(Duration::from_secs(60)),
            Duration::from_secs(5)
        );
    }
}
