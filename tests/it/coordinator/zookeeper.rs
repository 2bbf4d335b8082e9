//! The ZooKeeper side of the conformance suite ([`ZooKeeperCluster`]), and
//! what only ZooKeeper has: the session probe over several timeouts, a
//! frozen member, a deleted election node, shutdown and unreadable values.

use super::Cluster;
use super::fixtures::{
    barrier, expect_fenced_off, expect_session_lost, member_ids, plan, run, until_gone, within,
};
use anyhow::{Context, bail, ensure};
use recon_core::ports::FailureKind;
use recon_engine::cluster::{AbortRequest, Coordinator, MemberInfo, MemberRole};
use recon_tests::proxy::FreezableProxy;
use recon_zookeeper::{ZooKeeperCoordinator, ZooKeeperSettings};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use zookeeper_client as zk;

/// A short session, so that losing one fits in a test (the test server's
/// tick is 500 ms: 2 s is four ticks).
const TEST_SESSION_TIMEOUT: Duration = Duration::from_secs(2);

/// Members of one service on the test ZooKeeper, under a node of their own.
pub(crate) struct ZooKeeperCluster {
    servers: String,
    prefix: String,
    admin: zk::Client,
    shutdown: CancellationToken,
    /// Members and the proxy each talks to the server through.
    members: Mutex<BTreeMap<String, (ZooKeeperCoordinator, Arc<FreezableProxy>)>>,
    /// Proxies of earlier sessions of a member id joined again, kept so
    /// that those sessions live on.
    replaced: Mutex<Vec<Arc<FreezableProxy>>>,
}

impl ZooKeeperCluster {
    pub(crate) async fn start() -> anyhow::Result<Self> {
        let servers = recon_tests::zookeeper::shared_server()?;
        let admin = zk::Client::connect(&servers)
            .await
            .context("connect to the test ZooKeeper")?;
        Ok(Self {
            servers,
            prefix: format!("/recon-test/{}", uuid::Uuid::new_v4().simple()),
            admin,
            shutdown: CancellationToken::new(),
            members: Mutex::new(BTreeMap::new()),
            replaced: Mutex::new(Vec::new()),
        })
    }

    /// Connects a member through `servers` with `session_timeout`, ending
    /// with `shutdown`.
    async fn connect(
        &self,
        id: &str,
        servers: &str,
        shutdown: CancellationToken,
        session_timeout: Duration,
    ) -> anyhow::Result<ZooKeeperCoordinator> {
        let member = MemberInfo {
            id: id.to_owned(),
            admin_url: Some(format!("http://127.0.0.1:1/{id}")),
            joined_unix_ms: 1_700_000_000_000,
            role: MemberRole::Reconciler,
        };
        let mut settings = ZooKeeperSettings::new(servers, self.prefix.clone(), member);
        settings.session_timeout = session_timeout;
        recon_zookeeper::connect(settings, shutdown)
            .await
            .with_context(|| format!("connect member {id} to ZooKeeper"))
    }

    /// A member talking to the server through a proxy of its own (so that
    /// [`kill`](Cluster::kill) can keep it from reconnecting meanwhile).
    async fn direct_member(&self, id: &str) -> anyhow::Result<ZooKeeperCoordinator> {
        self.member_with_timeout(id, TEST_SESSION_TIMEOUT).await
    }

    async fn member_with_timeout(
        &self,
        id: &str,
        session_timeout: Duration,
    ) -> anyhow::Result<ZooKeeperCoordinator> {
        let proxy = Arc::new(FreezableProxy::start(self.address()?).await?);
        let member = self
            .connect(
                id,
                &format!("127.0.0.1:{}", proxy.port),
                self.shutdown.child_token(),
                session_timeout,
            )
            .await?;
        let earlier = self
            .members_lock()
            .insert(id.to_owned(), (member.clone(), proxy));
        if let Some((_, earlier_proxy)) = earlier {
            self.replaced
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(earlier_proxy);
        }
        Ok(member)
    }

    #[allow(clippy::type_complexity)]
    fn members_lock(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<String, (ZooKeeperCoordinator, Arc<FreezableProxy>)>>
    {
        self.members
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The test server as a socket address, for the proxy.
    fn address(&self) -> anyhow::Result<SocketAddr> {
        let first = self.servers.split(',').next().unwrap_or_default();
        first
            .trim()
            .parse()
            .with_context(|| format!("the test ZooKeeper {first} is not IP:PORT"))
    }

    /// The election nodes, as full paths.
    async fn election_nodes(&self) -> anyhow::Result<Vec<String>> {
        let election = format!("{}/election", self.prefix);
        let names = self.admin.list_children(&election).await?;
        Ok(names
            .into_iter()
            .map(|name| format!("{election}/{name}"))
            .collect())
    }
}

impl Drop for ZooKeeperCluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Cluster for ZooKeeperCluster {
    async fn member(&self, id: &str) -> anyhow::Result<Arc<dyn Coordinator>> {
        Ok(Arc::new(self.direct_member(id).await?))
    }

    async fn patient_member(&self, id: &str) -> anyhow::Result<Arc<dyn Coordinator>> {
        let member = self.member_with_timeout(id, super::PATIENT_SESSION).await?;
        Ok(Arc::new(member))
    }

    async fn stored_keys(&self) -> anyhow::Result<Option<usize>> {
        let count = self.admin.count_descendants_number(&self.prefix).await?;
        Ok(Some(count))
    }

    /// Ends the member's session from outside, as its expiry would: a
    /// client re-attaches to the session (its id and password) and closes
    /// it, so the server deletes its ephemeral nodes at once. The member's
    /// proxy is frozen meanwhile: re-attaching drops the member's
    /// connection, and a member reconnecting at once would take the session
    /// back from the closing client. Thawed, the member reconnects to learn
    /// that its session is gone.
    async fn kill(&self, id: &str) -> anyhow::Result<()> {
        let entry = self.members_lock().get(id).cloned();
        let (member, proxy) = entry.with_context(|| format!("no member {id} to kill"))?;
        let session = member
            .backend()
            .session_info()
            .with_context(|| format!("{id}'s session already ended"))?;
        proxy.freeze();
        let killer = zk::Client::connector()
            .with_session(session)
            .with_session_timeout(TEST_SESSION_TIMEOUT)
            .connect(&self.servers)
            .await
            .with_context(|| format!("re-attach to {id}'s session"))?;
        drop(killer);
        let node = format!("{}/members/{id}", self.prefix);
        within(&format!("{id}'s session to be closed"), async {
            while self.admin.check_stat(&node).await?.is_some() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            anyhow::Ok(())
        })
        .await??;
        proxy.thaw();
        within(
            "the killed member to notice",
            member.session_lost().cancelled(),
        )
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_holds_the_member_across_several_timeouts() -> anyhow::Result<()> {
    let cluster = ZooKeeperCluster::start().await?;
    let member = cluster.direct_member("a").await?;
    member.ack_pause("r1").await?;
    let leadership = within("campaign", member.campaign(&CancellationToken::new())).await??;
    // Time passing is the point: three session timeouts without a request
    // of ours.
    tokio::time::sleep(3 * member.backend().session_timeout()).await;
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
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_member_stops_before_its_nodes_expire() -> anyhow::Result<()> {
    let cluster = ZooKeeperCluster::start().await?;
    let proxy = FreezableProxy::start(cluster.address()?).await?;
    // A longer timeout than elsewhere: the margin between the member
    // stopping (two thirds of a timeout) and the server expiring its
    // session is a third of it.
    let frozen = cluster
        .connect(
            "frozen",
            &format!("127.0.0.1:{}", proxy.port),
            cluster.shutdown.child_token(),
            Duration::from_secs(3),
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
    let leader_when_lost = observer.leader().await?;
    let gone_after = lost_after + until_gone(&observer, "frozen").await?;
    eprintln!(
        "frozen member: session lost after {lost_after:?}, nodes expired after {gone_after:?}"
    );
    ensure!(
        listed_when_lost,
        "the member must stop acting before ZooKeeper expires its session (lost after {lost_after:?})"
    );
    ensure!(
        leader_when_lost == Some(("frozen".to_owned(), leadership.epoch)),
        "nobody else could lead yet: {leader_when_lost:?}"
    );
    ensure!(
        observer.pause_acks("r1").await?.is_empty(),
        "the ack expired with the session"
    );
    ensure!(
        observer.claims("r1").await?.is_empty(),
        "the claim expired with the session"
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
    proxy.thaw();
    expect_session_lost("thawed ack_pause", frozen.ack_pause("r2").await)?;
    ensure!(
        observer.pause_acks("r2").await?.is_empty(),
        "a lost member stays lost after the network heals"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_election_node_ends_the_leadership() -> anyhow::Result<()> {
    let cluster = ZooKeeperCluster::start().await?;
    let member = cluster.direct_member("a").await?;
    let leadership = within("campaign", member.campaign(&CancellationToken::new())).await??;
    let nodes = cluster.election_nodes().await?;
    ensure!(nodes.len() == 1, "one election node: {nodes:?}");
    let deleted_at = Instant::now();
    cluster.admin.delete(&nodes[0], None).await?;
    within("leadership to be lost", leadership.lost.cancelled()).await?;
    let lost_after = deleted_at.elapsed();
    eprintln!("deleted election node: leadership lost after {lost_after:?}");
    ensure!(
        lost_after < Duration::from_millis(500),
        "the watch noticed at once"
    );
    ensure!(
        !member.session_lost().is_cancelled(),
        "the session lives on"
    );
    expect_fenced_off(
        "put_run of the ended leadership",
        member
            .put_run(&leadership, &run("r1", leadership.epoch))
            .await,
    )?;
    ensure!(member.current_run().await?.is_none(), "nothing written");
    let again = within("campaign again", member.campaign(&CancellationToken::new())).await??;
    ensure!(
        again.epoch > leadership.epoch,
        "epoch {} follows {}",
        again.epoch,
        leadership.epoch
    );
    Ok(())
}

/// A candidate node of a member's session that the member does not know of
/// — a create whose answer was lost, a withdrawal after ending an orphaned
/// run that never got through — stays first in the election: no other
/// member could ever lead, and no run would start again. The member sweeps
/// it while it neither campaigns nor leads. Before, it stayed for the
/// session's life.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_candidate_node_of_a_member_is_swept() -> anyhow::Result<()> {
    let cluster = ZooKeeperCluster::start().await?;
    let stuck = cluster.direct_member("pause-only").await?;
    // Named as the member's session names its candidates, first in line.
    let stale = format!(
        "{}/election/{:016x}-0000000000",
        cluster.prefix,
        stuck.backend().session_id() as u64
    );
    let options = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    cluster
        .admin
        .create(&stale, b"pause-only", &options)
        .await?;
    let reconciler = cluster.direct_member("reconciler").await?;
    let leadership = within(
        "the reconciler to lead past the stale candidate",
        reconciler.campaign(&CancellationToken::new()),
    )
    .await??;
    ensure!(
        reconciler.leader().await? == Some(("reconciler".to_owned(), leadership.epoch)),
        "the reconciler leads"
    );
    ensure!(
        !cluster.election_nodes().await?.contains(&stale),
        "the stale candidate is still there"
    );
    Ok(())
}

/// A late ack or abort of a run that ended and whose nodes were purged
/// writes nothing. Before, ZooKeeper created the run's persistent parents
/// again (a member acknowledging late, an operator's abort racing the
/// barrier), left for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_ack_or_abort_of_a_purged_run_creates_nothing() -> anyhow::Result<()> {
    let cluster = ZooKeeperCluster::start().await?;
    let member = cluster.direct_member("a").await?;
    let leadership = within("campaign", member.campaign(&CancellationToken::new())).await??;
    member
        .put_run(&leadership, &run("r1", leadership.epoch))
        .await?;
    member.ack_pause("r1").await?;
    member
        .put_barrier(&leadership, &barrier("r1", leadership.epoch))
        .await?;
    member.purge_run("r1").await?;
    let run_node = format!("{}/runs/r1", cluster.prefix);
    ensure!(
        cluster.admin.check_stat(&run_node).await?.is_none(),
        "the purge left the run's node"
    );
    member.ack_pause("r1").await?;
    let abort = AbortRequest {
        requested_by: "operator".to_owned(),
        reason: "too late".to_owned(),
        requested_unix_ms: 0,
    };
    member.request_abort("r1", &abort).await?;
    ensure!(
        cluster.admin.check_stat(&run_node).await?.is_none(),
        "a late ack or abort created the purged run's node again"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_the_session_and_removes_its_ephemerals() -> anyhow::Result<()> {
    let cluster = ZooKeeperCluster::start().await?;
    let observer = cluster.direct_member("observer").await?;
    let shutdown = CancellationToken::new();
    let leaving = cluster
        .connect(
            "leaving",
            &cluster.servers,
            shutdown.clone(),
            TEST_SESSION_TIMEOUT,
        )
        .await?;
    let leadership = within("campaign", leaving.campaign(&CancellationToken::new())).await??;
    leaving.ack_pause("r1").await?;
    leaving.assign(&leadership, "r1", "t1", "leaving").await?;
    ensure!(leaving.claim("r1", "t1").await?, "claim");
    shutdown.cancel();
    ensure!(
        leaving.session_lost().is_cancelled(),
        "shutdown ends the session at once"
    );
    ensure!(leadership.lost.is_cancelled(), "and the leadership");
    let gone_after = until_gone(&observer, "leaving").await?;
    eprintln!("shutdown: nodes gone after {gone_after:?}");
    ensure!(
        gone_after < TEST_SESSION_TIMEOUT,
        "closed, not expired ({gone_after:?})"
    );
    ensure!(observer.leader().await?.is_none(), "nobody leads");
    ensure!(
        observer.pause_acks("r1").await?.is_empty(),
        "the ack went with the session"
    );
    ensure!(
        observer.claims("r1").await?.is_empty(),
        "the claim went with the session"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_values_are_permanent_errors() -> anyhow::Result<()> {
    let cluster = ZooKeeperCluster::start().await?;
    let member = cluster.direct_member("a").await?;
    let path = format!("{}/run/current", cluster.prefix);
    let options = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    cluster.admin.create(&path, b"{not json", &options).await?;
    match member.current_run().await {
        Err(error) => ensure!(error.kind == FailureKind::Permanent, "got {error:?}"),
        Ok(run) => bail!("garbage read as {run:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn connecting_to_nothing_fails_in_time() -> anyhow::Result<()> {
    let member = MemberInfo {
        id: "lonely".to_owned(),
        admin_url: None,
        joined_unix_ms: 0,
        role: MemberRole::Reconciler,
    };
    let port = recon_tests::free_port()?;
    let settings = ZooKeeperSettings::new(format!("127.0.0.1:{port}"), "/recon/x", member);
    let outcome = within(
        "connect to nothing",
        recon_zookeeper::connect(settings, CancellationToken::new()),
    )
    .await?;
    ensure!(outcome.is_err(), "connecting to a closed port fails");
    Ok(())
}

/// A server restart shorter than two thirds of the session timeout is a
/// disconnection, not a lost session: the server keeps sessions in its data
/// and the member reconnects to the same one. (A private server: the shared
/// one is not restarted under other tests.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_within_the_session_keeps_it() -> anyhow::Result<()> {
    let mut server = recon_tests::zookeeper::PrivateZooKeeper::start().await?;
    let member = MemberInfo {
        id: "a".to_owned(),
        admin_url: None,
        joined_unix_ms: 0,
        role: MemberRole::Reconciler,
    };
    let mut settings = ZooKeeperSettings::new(server.servers(), "/recon/restart", member);
    settings.session_timeout = Duration::from_secs(30);
    let member = recon_zookeeper::connect(settings, CancellationToken::new()).await?;
    let leadership = within("campaign", member.campaign(&CancellationToken::new())).await??;
    member.ack_pause("r1").await?;
    let restarted_at = Instant::now();
    server.restart().await?;
    let down_for = restarted_at.elapsed();
    eprintln!("server restart took {down_for:?}");
    ensure!(
        down_for < member.backend().session_timeout() * 2 / 3,
        "the restart took {down_for:?}, too long for this test's session"
    );
    // The client reconnects with its own backoff, and a JVM starting on a
    // loaded machine answers late: the write is given what the session
    // gives it (the adapter declares a session lost after 2/3 of its
    // timeout without a good probe), not the general 10 s deadline, which
    // it once missed under the full suite.
    let reconnect = member.backend().session_timeout() * 2 / 3;
    let written = tokio::time::timeout(reconnect, async {
        loop {
            match member
                .put_run(&leadership, &run("r1", leadership.epoch))
                .await
            {
                Ok(()) => return anyhow::Ok(()),
                Err(error) if error.kind == FailureKind::Transient => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => bail!("put_run after the restart: {error}"),
            }
        }
    });
    written
        .await
        .with_context(|| format!("no guarded write within {reconnect:?} after the restart"))??;
    ensure!(
        !member.session_lost().is_cancelled(),
        "the session survived"
    );
    ensure!(!leadership.lost.is_cancelled(), "the leadership survived");
    ensure!(
        member.pause_acks("r1").await?.contains("a"),
        "the ephemeral ack survived"
    );
    ensure!(
        member.leader().await? == Some(("a".to_owned(), leadership.epoch)),
        "still leads"
    );
    Ok(())
}
