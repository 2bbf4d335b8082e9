//! Where etcd is, under which prefix the service's keys live, and who this
//! member is.

use crate::error::{Error, Result};
use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};
use recon_coord::MemberInfo;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// How to reach a secured etcd: TLS (a CA to trust, a client certificate
/// for `--client-cert-auth`) and etcd's user/password authentication.
/// Both are off by default (plain `http://` endpoints).
#[derive(Clone, Default)]
pub struct EtcdSecurity {
    /// PEM file of the CA that signed etcd's server certificate; setting it
    /// turns TLS on.
    pub ca_file: Option<PathBuf>,
    /// PEM files of this client's certificate and key, for etcd's
    /// `--client-cert-auth`.
    pub client_identity: Option<(PathBuf, PathBuf)>,
    /// User name and password for etcd's authentication.
    pub credentials: Option<(String, String)>,
}

impl fmt::Debug for EtcdSecurity {
    /// Shows who, never the password.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("EtcdSecurity")
            .field("ca_file", &self.ca_file)
            .field("client_identity", &self.client_identity)
            .field("user", &self.credentials.as_ref().map(|(user, _)| user))
            .finish()
    }
}

impl EtcdSecurity {
    /// Client options with `timeout` for connecting; fails naming the file
    /// that cannot be read.
    pub fn connect_options(&self, timeout: Duration) -> Result<ConnectOptions> {
        let mut options = ConnectOptions::new().with_connect_timeout(timeout);
        if self.ca_file.is_some() || self.client_identity.is_some() {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &self.ca_file {
                tls = tls.ca_certificate(Certificate::from_pem(read("ca_file", ca)?));
            }
            if let Some((certificate, key)) = &self.client_identity {
                tls = tls.identity(Identity::from_pem(
                    read("client certificate", certificate)?,
                    read("client key", key)?,
                ));
            }
            options = options.with_tls(tls);
        }
        if let Some((user, password)) = &self.credentials {
            options = options.with_user(user.clone(), password.clone());
        }
        Ok(options)
    }
}

fn read(field: &'static str, path: &PathBuf) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|error| Error::InvalidSettings {
        field,
        reason: format!("cannot read {}: {error}", path.display()),
    })
}

/// How an [`EtcdBackend`](crate::EtcdBackend) connects and registers.
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
    /// TLS and authentication.
    pub security: EtcdSecurity,
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
            security: EtcdSecurity::default(),
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
