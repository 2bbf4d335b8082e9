//! The etcd side of the conformance suite ([`EtcdCluster`]), and what only
//! etcd has: the keep-alive over several TTLs, a frozen member, revocation,
//! shutdown, unreadable values.

use super::Cluster;
use super::fixtures::{expect_fenced_off, member_ids, plan, until_gone, within};
use anyhow::{Context, bail, ensure};
use etcd_client::Client;
use recon_core::ports::FailureKind;
use recon_engine::cluster::{Coordinator, MemberInfo, MemberRole};
use recon_etcd::{EtcdCoordinator, EtcdSettings};
use recon_tests::proxy::FreezableProxy;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Where the test etcd listens (comma-separated URLs).
const ENDPOINTS_VAR: &str = "RECON_TEST_ETCD_ENDPOINTS";

/// A short lease, so that expiry fits in a test.
const TEST_TTL_SECS: i64 = 2;

/// The test etcd's endpoints, or an error saying how to get one.
fn endpoints() -> anyhow::Result<Vec<String>> {
    let value = std::env::var(ENDPOINTS_VAR).unwrap_or_default();
    let endpoints: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(str::to_owned)
        .collect();
    if endpoints.is_empty() {
        bail!(
            "{ENDPOINTS_VAR} is not set: run the tests through scripts/test.sh, which \
             installs and starts etcd, or start one and export {ENDPOINTS_VAR}=http://127.0.0.1:PORT"
        );
    }
    Ok(endpoints)
}

/// Members of one service on the test etcd, under a prefix of their own.
pub(crate) struct EtcdCluster {
    endpoints: Vec<String>,
    prefix: String,
    admin: Client,
    shutdown: CancellationToken,
    members: Mutex<BTreeMap<String, EtcdCoordinator>>,
}

impl EtcdCluster {
    pub(crate) async fn start() -> anyhow::Result<Self> {
        let endpoints = endpoints()?;
        let admin = Client::connect(&endpoints, None)
            .await
            .context("connect to the test etcd")?;
        Ok(Self {
            endpoints,
            prefix: format!("/recon-test/{}", uuid::Uuid::new_v4().simple()),
            admin,
            shutdown: CancellationToken::new(),
            members: Mutex::new(BTreeMap::new()),
        })
    }

    /// Connects a member through `endpoints` with a lease of
    /// `lease_ttl_secs`, ending with `shutdown`.
    async fn connect(
        &self,
        id: &str,
        endpoints: Vec<String>,
        shutdown: CancellationToken,
        lease_ttl_secs: i64,
    ) -> anyhow::Result<EtcdCoordinator> {
        let member = MemberInfo {
            id: id.to_owned(),
            admin_url: Some(format!("http://127.0.0.1:1/{id}")),
            joined_unix_ms: 1_700_000_000_000,
            role: MemberRole::Reconciler,
        };
        let settings = EtcdSettings {
            endpoints,
            prefix: self.prefix.clone(),
            member,
            lease_ttl_secs,
            security: Default::default(),
        };
        recon_etcd::connect(settings, shutdown)
            .await
            .with_context(|| format!("connect member {id} to etcd"))
    }

    async fn direct_member(&self, id: &str) -> anyhow::Result<EtcdCoordinator> {
        self.member_with_ttl(id, TEST_TTL_SECS).await
    }

    async fn member_with_ttl(&self, id: &str, ttl_secs: i64) -> anyhow::Result<EtcdCoordinator> {
        let member = self
            .connect(
                id,
                self.endpoints.clone(),
                self.shutdown.child_token(),
                ttl_secs,
            )
            .await?;
        self.members_lock().insert(id.to_owned(), member.clone());
        Ok(member)
    }

    fn members_lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, EtcdCoordinator>> {
        self.members
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The first endpoint as a socket address, for the proxy.
    fn first_address(&self) -> anyhow::Result<SocketAddr> {
        let url = &self.endpoints[0];
        let address = url
            .strip_prefix("http://")
            .unwrap_or(url)
            .trim_end_matches('/');
        address
            .parse()
            .with_context(|| format!("{ENDPOINTS_VAR} {url} is not http://IP:PORT"))
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Cluster for EtcdCluster {
    async fn member(&self, id: &str) -> anyhow::Result<Arc<dyn Coordinator>> {
        Ok(Arc::new(self.direct_member(id).await?))
    }

    async fn patient_member(&self, id: &str) -> anyhow::Result<Arc<dyn Coordinator>> {
        let ttl_secs = super::PATIENT_SESSION.as_secs() as i64;
        Ok(Arc::new(self.member_with_ttl(id, ttl_secs).await?))
    }

    async fn stored_keys(&self) -> anyhow::Result<Option<usize>> {
        let options = etcd_client::GetOptions::new()
            .with_prefix()
            .with_count_only();
        let answer = self
            .admin
            .clone()
            .get(format!("{}/", self.prefix), Some(options))
            .await?;
        Ok(Some(usize::try_from(answer.count())?))
    }

    /// Revokes the member's lease from outside, as its expiry would.
    async fn kill(&self, id: &str) -> anyhow::Result<()> {
        let member = self.members_lock().get(id).cloned();
        let member = member.with_context(|| format!("no member {id} to kill"))?;
        self.admin
            .clone()
            .lease_revoke(member.backend().lease_id())
            .await
            .with_context(|| format!("revoke {id}'s lease"))?;
        within(
            "the killed member to notice",
            member.session_lost().cancelled(),
        )
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_holds_the_member_across_several_ttls() -> anyhow::Result<()> {
    let cluster = EtcdCluster::start().await?;
    let member = cluster.direct_member("a").await?;
    member.ack_pause("r1").await?;
    let leadership = within("campaign", member.campaign(&CancellationToken::new())).await??;
    // Time passing is the point: three TTLs without a request of ours.
    tokio::time::sleep(Duration::from_secs(3 * TEST_TTL_SECS as u64)).await;
    ensure!(
        !member.session_lost().is_cancelled(),
        "the session survived"
    );
    ensure!(!leadership.lost.is_cancelled(), "the leadership survived");
    ensure!(member_ids(&member).await? == ["a"], "still a member");
    ensure!(
        member.pause_acks("r1").await?.contains("a"),
        "the ack is still there"
    );
    ensure!(
        member.leader().await? == Some(("a".to_owned(), leadership.epoch)),
        "still leads"
    );
    let lease = cluster
        .admin
        .clone()
        .lease_time_to_live(member.backend().lease_id(), None)
        .await?;
    ensure!(
        lease.ttl() > 0,
        "etcd still counts down the lease ({} s left)",
        lease.ttl()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_member_stops_before_its_keys_expire() -> anyhow::Result<()> {
    let cluster = EtcdCluster::start().await?;
    let proxy = FreezableProxy::start(cluster.first_address()?).await?;
    // A longer TTL than elsewhere: the margin between the member stopping
    // (two thirds of a TTL) and etcd expiring its lease is a third of it.
    let frozen = cluster
        .connect(
            "frozen",
            vec![proxy.url.clone()],
            cluster.shutdown.child_token(),
            3,
        )
        .await?;
    let observer = cluster.direct_member("observer").await?;
    let leadership = within("campaign", frozen.campaign(&CancellationToken::new())).await??;
    frozen.ack_pause("r1").await?;
    frozen.assign(&leadership, "r1", "t1", "frozen").await?;
    ensure!(frozen.claim("r1", "t1").await?, "claim before the freeze");

    let frozen_at = Instant::now();
    proxy.freeze();
    within(
        "the frozen member's session to be lost",
        frozen.session_lost().cancelled(),
    )
    .await?;
    let lost_after = frozen_at.elapsed();
    ensure!(
        leadership.lost.is_cancelled(),
        "leadership ends with the session"
    );
    let listed_when_lost = member_ids(&observer).await?.contains(&"frozen".to_owned());
    let gone_after = lost_after + until_gone(&observer, "frozen").await?;
    eprintln!(
        "frozen member: session lost after {lost_after:?}, keys expired after {gone_after:?}"
    );
    ensure!(
        listed_when_lost,
        "the member must stop acting before etcd expires its lease (lost after {lost_after:?})"
    );
    ensure!(
        observer.pause_acks("r1").await?.is_empty(),
        "the ack expired with the lease"
    );
    ensure!(
        observer.claims("r1").await?.is_empty(),
        "the claim expired with the lease"
    );
    let next = within(
        "observer's campaign",
        observer.campaign(&CancellationToken::new()),
    )
    .await??;
    ensure!(
        next.epoch > leadership.epoch,
        "epoch {} follows {}",
        next.epoch,
        leadership.epoch
    );
    expect_fenced_off(
        "frozen put_plan",
        frozen.put_plan(&leadership, &plan("r1", 1)).await,
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resign_cut_off_from_etcd_returns_once_the_session_is_lost() -> anyhow::Result<()> {
    let cluster = EtcdCluster::start().await?;
    let proxy = FreezableProxy::start(cluster.first_address()?).await?;
    let leader = cluster
        .connect(
            "cut-off",
            vec![proxy.url.clone()],
            cluster.shutdown.child_token(),
            TEST_TTL_SECS,
        )
        .await?;
    let observer = cluster.direct_member("observer").await?;
    let leadership = within("campaign", leader.campaign(&CancellationToken::new())).await??;
    proxy.freeze();
    within("resign while cut off", leader.resign(&leadership)).await??;
    ensure!(
        leadership.lost.is_cancelled(),
        "resigning stops the leader at once"
    );
    ensure!(
        leader.session_lost().is_cancelled(),
        "resign returned because the session ended"
    );
    let next = within(
        "observer's campaign",
        observer.campaign(&CancellationToken::new()),
    )
    .await??;
    ensure!(
        next.epoch > leadership.epoch,
        "epoch {} follows {}",
        next.epoch,
        leadership.epoch
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_lease_is_noticed_within_a_third_of_the_ttl() -> anyhow::Result<()> {
    let cluster = EtcdCluster::start().await?;
    let member = cluster.direct_member("a").await?;
    let leadership = within("campaign", member.campaign(&CancellationToken::new())).await??;
    let revoked_at = Instant::now();
    cluster
        .admin
        .clone()
        .lease_revoke(member.backend().lease_id())
        .await?;
    within("leadership to be lost", leadership.lost.cancelled()).await?;
    let leadership_lost_after = revoked_at.elapsed();
    within("session to be lost", member.session_lost().cancelled()).await?;
    let session_lost_after = revoked_at.elapsed();
    eprintln!(
        "revoked lease: leadership lost after {leadership_lost_after:?}, \
         session lost after {session_lost_after:?}"
    );
    let third_of_ttl = Duration::from_millis(TEST_TTL_SECS as u64 * 1000 / 3);
    let slack = Duration::from_millis(500);
    ensure!(
        leadership_lost_after < slack,
        "the leader-key watch noticed at once"
    );
    ensure!(
        session_lost_after < third_of_ttl + slack,
        "the next keep-alive noticed"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_the_session_and_revokes_the_lease() -> anyhow::Result<()> {
    let cluster = EtcdCluster::start().await?;
    let observer = cluster.direct_member("observer").await?;
    let shutdown = CancellationToken::new();
    let leaving = cluster
        .connect(
            "leaving",
            cluster.endpoints.clone(),
            shutdown.clone(),
            TEST_TTL_SECS,
        )
        .await?;
    let leadership = within("campaign", leaving.campaign(&CancellationToken::new())).await??;
    leaving.ack_pause("r1").await?;
    shutdown.cancel();
    ensure!(
        leaving.session_lost().is_cancelled(),
        "shutdown ends the session at once"
    );
    ensure!(leadership.lost.is_cancelled(), "and the leadership");
    let gone_after = until_gone(&observer, "leaving").await?;
    eprintln!("shutdown: keys gone after {gone_after:?}");
    ensure!(
        gone_after < Duration::from_secs(TEST_TTL_SECS as u64),
        "revoked, not expired"
    );
    ensure!(observer.leader().await?.is_none(), "nobody leads");
    ensure!(
        observer.pause_acks("r1").await?.is_empty(),
        "the ack went with the lease"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_values_are_permanent_errors() -> anyhow::Result<()> {
    let cluster = EtcdCluster::start().await?;
    let member = cluster.direct_member("a").await?;
    let key = format!("{}/run/current", cluster.prefix);
    cluster.admin.clone().put(key, "{not json", None).await?;
    match member.current_run().await {
        Err(error) => ensure!(error.kind == FailureKind::Permanent, "got {error:?}"),
        Ok(run) => bail!("garbage read as {run:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn connecting_to_nothing_fails_in_time() -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let member = MemberInfo {
        id: "lonely".to_owned(),
        admin_url: None,
        joined_unix_ms: 0,
        role: MemberRole::Reconciler,
    };
    let port = recon_tests::free_port()?;
    let settings = EtcdSettings::new(vec![format!("http://127.0.0.1:{port}")], "/recon/x", member);
    let outcome = within(
        "connect to nothing",
        recon_etcd::connect(settings, shutdown),
    )
    .await?;
    ensure!(outcome.is_err(), "connecting to a closed port fails");
    Ok(())
}
