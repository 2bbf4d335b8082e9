//! The Source API client (`recon-source`) against a real monolith, directly
//! and through the fault-injecting proxy (`recon_tests::faulty_source`):
//! a full walk returns exactly the monolith's rows, and every fault ends in
//! the outcome the engine relies on (retried, transient, permanent or
//! not-found), with messages that name the problem and never the token.

use anyhow::{Context, bail, ensure};
use recon_core::ports::{FailureKind, PageRequest, PortError, Source, SourcePage};
use recon_core::{Kind, Row};
use recon_monolith::Monolith;
use recon_monolith::seed::{self, SeedSpec};
use recon_source::{HttpSource, SourceConfig, SourceWalk};
use recon_tests::faulty_source::FaultySource;
use recon_tests::{Backend, TestDatabase};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

mod faults;

const TOKEN: &str = "source-test-token-9d41";
const WAIT: Duration = Duration::from_secs(20);

/// A seeded monolith served on 127.0.0.1 with [`TOKEN`], and a proxy in
/// front of it.
struct Fixture {
    monolith: Monolith,
    monolith_url: String,
    proxy: FaultySource,
    shutdown: CancellationToken,
    _server: JoinHandle<recon_monolith::Result<()>>,
    _database: TestDatabase,
}

impl Fixture {
    async fn start(backend: Backend) -> anyhow::Result<Fixture> {
        let database = TestDatabase::create(backend).await?;
        let monolith = Monolith::connect(&database.url).await.context("connect")?;
        let spec = SeedSpec {
            seed: 7,
            tenants: 6,
            users_per_tenant_mean: 40.0,
            max_users_per_tenant: 150,
            tail_index: 3.0,
            ..SeedSpec::default()
        };
        seed::run(&monolith, &spec).await.context("seed")?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let monolith_url = format!("http://{}", listener.local_addr()?);
        let shutdown = CancellationToken::new();
        let (serving, stop) = (monolith.clone(), shutdown.clone());
        let server =
            tokio::spawn(
                async move { serving.serve(listener, Some(TOKEN.to_owned()), stop).await },
            );
        let proxy = FaultySource::start(&monolith_url).await?;
        Ok(Fixture {
            monolith,
            monolith_url,
            proxy,
            shutdown,
            _server: server,
            _database: database,
        })
    }

    /// A client of the proxy with quick retries, changed by `adjust`.
    fn client(&self, adjust: impl FnOnce(&mut SourceConfig)) -> anyhow::Result<HttpSource> {
        let mut config = quick_config(self.proxy.base_url());
        adjust(&mut config);
        Ok(HttpSource::new(&config)?)
    }

    /// The tenant with the most users, and how many it has.
    async fn largest_tenant(&self) -> anyhow::Result<(String, u64)> {
        let (rows, _) = self.monolith.snapshot_rows().await?;
        let mut best = (String::new(), 0);
        for row in rows.iter().filter(|row| row.kind() == Kind::TENANT) {
            let users = self.monolith.counts(&row.tenant_id).await?.users;
            if users > best.1 {
                best = (row.tenant_id.clone(), users);
            }
        }
        ensure!(
            best.1 >= 30,
            "the seed must give a tenant several pages: {best:?}"
        );
        Ok(best)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn quick_config(base_url: &str) -> SourceConfig {
    SourceConfig {
        bearer_token: Some(TOKEN.to_owned()),
        request_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        max_retries: 3,
        retry_min_backoff: Duration::from_millis(10),
        retry_max_backoff: Duration::from_millis(40),
        ..SourceConfig::new(base_url)
    }
}

fn request(tenant_id: &str, kind: Kind, limit: u32) -> PageRequest {
    PageRequest {
        tenant_id: tenant_id.to_owned(),
        kind,
        after: None,
        limit,
        within: Vec::new(),
    }
}

/// Every row of one (tenant, kind), page by page, checked by a
/// [`SourceWalk`]; the pages are returned too.
async fn walk(
    source: &dyn Source,
    tenant_id: &str,
    kind: Kind,
    limit: u32,
) -> Result<Vec<SourcePage>, PortError> {
    let mut walk = SourceWalk::new(tenant_id, kind);
    let mut pages = Vec::new();
    while let Some(next) = walk.next_request(limit) {
        let page = source.fetch_page(&next).await?;
        walk.accept(&page)
            .map_err(|violation| PortError::new(FailureKind::Permanent, violation.to_string()))?;
        pages.push(page);
    }
    walk.finish()
        .map_err(|violation| PortError::new(FailureKind::Permanent, violation.to_string()))?;
    Ok(pages)
}

fn rows_of(pages: Vec<SourcePage>) -> Vec<Row> {
    pages.into_iter().flat_map(|page| page.rows).collect()
}

/// Checks an error's kind and that its message names every `expected`
/// text and no token.
fn expect_error(error: &PortError, kind: FailureKind, expected: &[&str]) -> anyhow::Result<()> {
    ensure!(
        error.kind == kind,
        "expected {kind:?}, got {:?}: {error}",
        error.kind
    );
    for text in expected {
        ensure!(
            error.message.contains(text),
            "{error:?} should mention {text:?}"
        );
    }
    for secret in [TOKEN, "wrong-token-31f7"] {
        ensure!(!error.message.contains(secret), "token leaked: {error}");
    }
    Ok(())
}

fn sort_key(row: &Row) -> (usize, String, recon_core::EntityKey) {
    let rank = Kind::UPSERT_ORDER
        .iter()
        .position(|kind| *kind == row.kind());
    (rank.unwrap_or(usize::MAX), row.tenant_id.clone(), row.key())
}

#[tokio::test]
async fn full_walk_returns_exactly_the_monolith_rows() -> anyhow::Result<()> {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let fixture = Fixture::start(backend).await?;
        let direct = HttpSource::new(&quick_config(&fixture.monolith_url))?;
        let proxied = fixture.client(|_| {})?;
        let (mut expected, _) = fixture.monolith.snapshot_rows().await?;
        expected.sort_by_key(sort_key);
        for source in [&direct, &proxied] {
            let tenants = rows_of(walk(source, "", Kind::TENANT, 4).await?);
            let mut all = tenants.clone();
            for tenant in &tenants {
                let counts = source.counts(&tenant.tenant_id).await?;
                for (kind, &count) in Kind::TENANT_SCOPED.into_iter().zip(&counts.counts) {
                    let rows = rows_of(walk(source, &tenant.tenant_id, kind, 7).await?);
                    ensure!(
                        rows.len() as u64 == count,
                        "{kind} count of {}",
                        tenant.tenant_id
                    );
                    all.extend(rows);
                }
            }
            all.sort_by_key(sort_key);
            ensure!(
                all == expected,
                "{backend:?}: the walk differs from the monolith's rows"
            );
        }
        ensure!(
            fixture.proxy.requests("/memberships") > 6,
            "paged through the proxy"
        );
    }
    Ok(())
}

#[tokio::test]
async fn unknown_tenant_is_not_found_and_wrong_token_is_permanent() -> anyhow::Result<()> {
    let fixture = Fixture::start(Backend::Sqlite).await?;
    let source = fixture.client(|_| {})?;
    for kind in Kind::TENANT_SCOPED {
        let error = source
            .fetch_page(&request("no-such-tenant", kind, 10))
            .await
            .err()
            .context("unknown tenant")?;
        expect_error(
            &error,
            FailureKind::NotFound,
            &["no-such-tenant", "status 404"],
        )?;
    }
    let error = source
        .counts("no-such-tenant")
        .await
        .err()
        .context("counts")?;
    expect_error(&error, FailureKind::NotFound, &["/counts", "status 404"])?;

    for token in [Some("wrong-token-31f7"), None] {
        let unauthorized =
            fixture.client(|config| config.bearer_token = token.map(str::to_owned))?;
        fixture.proxy.reset_counts();
        let error = unauthorized
            .fetch_page(&request("", Kind::TENANT, 10))
            .await
            .err()
            .context("a wrong token must fail")?;
        expect_error(
            &error,
            FailureKind::Permanent,
            &["/v1/tenants", "status 401", "bearer_token"],
        )?;
        ensure!(fixture.proxy.requests("") == 1, "401 is not retried");
    }
    let debug = format!("{:?} {:?}", source, quick_config("http://x"));
    ensure!(!debug.contains(TOKEN), "Debug leaks the token: {debug}");
    Ok(())
}

#[tokio::test]
async fn connection_refused_is_transient() -> anyhow::Result<()> {
    let port = recon_tests::free_port()?;
    let source = HttpSource::new(&quick_config(&format!("http://127.0.0.1:{port}")))?;
    let error = source.counts("t1").await.err().context("nothing listens")?;
    expect_error(
        &error,
        FailureKind::Transient,
        &["/v1/tenants/t1/counts", "connection failed"],
    )
}

#[tokio::test]
async fn rate_limit_spaces_requests() -> anyhow::Result<()> {
    let fixture = Fixture::start(Backend::Sqlite).await?;
    let limited = fixture.client(|config| config.requests_per_second = Some(10))?;
    let window = Duration::from_secs(1);
    // 10 per second, one at a time: at most 11 arrivals in any second; two
    // more of slack for the proxy handling arrivals late in a bunch.
    let most_per_window = 13;
    let fire = |source: HttpSource| {
        (0..25)
            .map(|_| {
                let source = source.clone();
                tokio::spawn(async move { one_request(&source).await })
            })
            .collect::<Vec<_>>()
    };
    let started = Instant::now();
    for call in fire(limited) {
        call.await??;
    }
    let elapsed = started.elapsed();
    // The arrival times, not a sleep of the test's, decide: a loaded
    // machine only spreads requests out.
    let busiest = most_in_any_window(&fixture.proxy.arrival_times(), window);
    ensure!(
        busiest <= most_per_window,
        "{busiest} requests within {window:?} at 10/s"
    );
    ensure!(
        elapsed >= Duration::from_millis(2_300),
        "25 requests at 10/s took {elapsed:?}"
    );

    // Unlimited, the same 25 requests bunch up: the check above can fail.
    fixture.proxy.reset_counts();
    for call in fire(fixture.client(|_| {})?) {
        call.await??;
    }
    let busiest = most_in_any_window(&fixture.proxy.arrival_times(), window);
    ensure!(
        busiest > most_per_window,
        "unlimited, only {busiest} of 25 requests arrived within {window:?}"
    );
    Ok(())
}

/// The most of `arrivals` (in order) that fall within one `window`.
fn most_in_any_window(arrivals: &[Instant], window: Duration) -> usize {
    let mut most = 0;
    for (first, start) in arrivals.iter().enumerate() {
        let within = arrivals[first..]
            .iter()
            .take_while(|arrival| arrival.duration_since(*start) <= window)
            .count();
        most = most.max(within);
    }
    most
}

/// One cheap request, for the rate-limit test.
async fn one_request(source: &HttpSource) -> anyhow::Result<()> {
    match source.fetch_page(&request("", Kind::TENANT, 1)).await {
        Ok(_) => Ok(()),
        Err(error) => bail!("fetch a tenant page: {error}"),
    }
}
