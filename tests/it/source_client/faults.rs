//! The source client against faults injected by the proxy: what is
//! retried, what gives up as transient, what is a permanent error, and what
//! the client cannot see (a source that lost rows).

use super::{Fixture, WAIT, expect_error, quick_config, request, rows_of, walk};
use anyhow::{Context, ensure};
use recon_core::Kind;
use recon_core::ports::{FailureKind, Source};
use recon_source::{HttpSource, SourceConfig};
use recon_tests::Backend;
use recon_tests::faulty_source::Fault;
use std::time::Duration;

#[tokio::test]
async fn server_error_once_is_retried_and_the_walk_is_unchanged() -> anyhow::Result<()> {
    let fixture = Fixture::start(Backend::Sqlite).await?;
    let source = fixture.client(|_| {})?;
    let (tenant, users) = fixture.largest_tenant().await?;
    let clean = walk(&source, &tenant, Kind::USER, 10).await?;
    ensure!(
        clean.len() >= 3 && users >= 20,
        "several pages wanted: {users} users"
    );
    fixture.proxy.set_fault(Fault::ServerErrorAtPage {
        path_contains: "/users".into(),
        page: 1,
        times: 1,
    });
    fixture.proxy.reset_counts();
    let retried = walk(&source, &tenant, Kind::USER, 10).await?;
    ensure!(
        rows_of(retried) == rows_of(clean.clone()),
        "same rows after a retry"
    );
    ensure!(
        fixture.proxy.requests("/users") == clean.len() + 1,
        "one extra request"
    );
    Ok(())
}

#[tokio::test]
async fn persistent_failures_give_up_as_transient() -> anyhow::Result<()> {
    let fixture = Fixture::start(Backend::Sqlite).await?;
    let source = fixture.client(|config| config.request_timeout = Duration::from_millis(300))?;
    let (tenant, _) = fixture.largest_tenant().await?;
    let users_path = format!("/v1/tenants/{tenant}/users");
    let cases = [
        (
            Fault::ServerErrorAtPage {
                path_contains: "/users".into(),
                page: 0,
                times: usize::MAX,
            },
            "status 500",
        ),
        (
            Fault::Delay {
                path_contains: "/users".into(),
                delay: Duration::from_secs(3),
            },
            "timed out",
        ),
        (
            Fault::TruncatedBody {
                path_contains: "/users".into(),
                page: 0,
                times: usize::MAX,
            },
            "body cut short",
        ),
        (Fault::Stopped, "status 503"),
    ];
    for (fault, problem) in cases {
        fixture.proxy.set_fault(fault.clone());
        fixture.proxy.reset_counts();
        let error = source
            .fetch_page(&request(&tenant, Kind::USER, 10))
            .await
            .err()
            .with_context(|| format!("{fault:?} must fail"))?;
        expect_error(
            &error,
            FailureKind::Transient,
            &[&users_path, problem, "after 4 attempts"],
        )?;
        ensure!(
            fixture.proxy.requests("/users") == 4,
            "{fault:?}: 1 attempt + 3 retries"
        );
    }
    Ok(())
}

#[tokio::test]
async fn transient_faults_that_clear_are_retried_to_success() -> anyhow::Result<()> {
    let fixture = Fixture::start(Backend::Sqlite).await?;
    let source = fixture.client(|config| {
        config.request_timeout = Duration::from_millis(400);
        config.max_retries = 8;
        config.retry_min_backoff = Duration::from_millis(50);
        config.retry_max_backoff = Duration::from_millis(100);
    })?;
    let (tenant, _) = fixture.largest_tenant().await?;
    let expected = source.fetch_page(&request(&tenant, Kind::GROUP, 5)).await?;
    fixture.proxy.set_fault(Fault::TruncatedBody {
        path_contains: "/groups".into(),
        page: 0,
        times: 1,
    });
    fixture.proxy.reset_counts();
    let page = source.fetch_page(&request(&tenant, Kind::GROUP, 5)).await?;
    ensure!(
        page == expected && fixture.proxy.requests("/groups") == 2,
        "truncated once"
    );

    fixture.proxy.set_fault(Fault::Delay {
        path_contains: "/groups".into(),
        delay: Duration::from_secs(5),
    });
    fixture.proxy.reset_counts();
    let pending = tokio::spawn({
        let source = source.clone();
        let request = request(&tenant, Kind::GROUP, 5);
        async move { source.fetch_page(&request).await }
    });
    fixture.proxy.wait_for_requests("/groups", 2, WAIT).await?;
    fixture.proxy.set_fault(Fault::None);
    let page = pending.await??;
    ensure!(page == expected, "the retry after timeouts reads the page");
    Ok(())
}

#[tokio::test]
async fn broken_pages_are_permanent_errors_and_not_retried() -> anyhow::Result<()> {
    let fixture = Fixture::start(Backend::Sqlite).await?;
    let source = fixture.client(|_| {})?;
    let (tenant, _) = fixture.largest_tenant().await?;
    let users = || "/users".to_owned();
    let cases = [
        (
            Fault::MalformedJson {
                path_contains: users(),
                page: 0,
            },
            1,
            "malformed JSON",
        ),
        (
            Fault::KeysBackwards {
                path_contains: users(),
                page: 0,
            },
            1,
            "keys out of order",
        ),
        (
            Fault::KeysBackwards {
                path_contains: users(),
                page: 1,
            },
            2,
            "keys out of order",
        ),
        (
            Fault::DuplicateKeyAcrossPages {
                path_contains: users(),
                page: 1,
            },
            2,
            "duplicate",
        ),
    ];
    for (fault, requests, problem) in cases {
        fixture.proxy.set_fault(fault.clone());
        fixture.proxy.reset_counts();
        let error = walk(&source, &tenant, Kind::USER, 6)
            .await
            .err()
            .with_context(|| format!("{fault:?} must fail the walk"))?;
        expect_error(&error, FailureKind::Permanent, &["/users", problem])?;
        let made = fixture.proxy.requests("/users");
        ensure!(
            made == requests,
            "{fault:?}: {made} requests, no retry of a broken page"
        );
    }
    Ok(())
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_the_cap_named() -> anyhow::Result<()> {
    let fixture = Fixture::start(Backend::Sqlite).await?;
    let source = fixture.client(|config| config.max_body_bytes = 512)?;
    let (tenant, _) = fixture.largest_tenant().await?;
    let error = source
        .fetch_page(&request(&tenant, Kind::USER, 100))
        .await
        .err()
        .context("a page over 512 bytes must fail")?;
    expect_error(
        &error,
        FailureKind::Permanent,
        &["/users", "cap of 512 bytes"],
    )?;
    ensure!(fixture.proxy.requests("/users") == 1, "not retried");

    // A chunked body without Content-Length is cut off while reading.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let endless = axum::Router::new().fallback(|| async {
        let chunks = futures::stream::repeat_with(|| Ok::<_, std::io::Error>(vec![b' '; 1024]));
        axum::body::Body::from_stream(chunks)
    });
    let server = tokio::spawn(async move { axum::serve(listener, endless).await });
    let source = HttpSource::new(&SourceConfig {
        max_body_bytes: 64 * 1024,
        ..quick_config(&url)
    })?;
    let error = source.fetch_page(&request("", Kind::TENANT, 10)).await;
    server.abort();
    let error = error.err().context("an endless body must fail")?;
    expect_error(&error, FailureKind::Permanent, &["cap of 65536 bytes"])?;
    Ok(())
}

#[tokio::test]
async fn lost_rows_and_tenants_read_as_valid_smaller_pages() -> anyhow::Result<()> {
    // Faults the client cannot see: the pages are consistent. The engine's
    // delete guard (and the counts) must catch them.
    let fixture = Fixture::start(Backend::Sqlite).await?;
    let source = fixture.client(|_| {})?;
    let (tenant, users) = fixture.largest_tenant().await?;
    let truth = rows_of(walk(&source, &tenant, Kind::USER, 8).await?);
    fixture.proxy.set_fault(Fault::DropItems {
        path_contains: "/users".into(),
        share: 0.5,
    });
    let partial = rows_of(walk(&source, &tenant, Kind::USER, 8).await?);
    ensure!(
        partial.iter().all(|row| truth.contains(row)),
        "only real rows"
    );
    let kept = partial.len() as f64 / truth.len() as f64;
    ensure!(
        (0.2..0.8).contains(&kept),
        "kept {} of {}",
        partial.len(),
        truth.len()
    );
    ensure!(
        source.counts(&tenant).await?.counts[0] == users,
        "counts still tell the truth"
    );

    fixture.proxy.set_fault(Fault::EmptyTenantList);
    let tenants = walk(&source, "", Kind::TENANT, 100).await?;
    ensure!(
        tenants.len() == 1 && tenants[0].rows.is_empty(),
        "an empty, final page"
    );
    ensure!(tenants[0].watermark.sequence > 0, "with the real watermark");
    Ok(())
}

/// Digests are compared only under recon's own definition: a source that
/// names another one (a newer monolith, a third-party implementation) is
/// read row by row — its digests could differ from recon's for equal
/// rows, or agree for different ones.
#[tokio::test]
async fn digests_of_another_definition_are_never_used() -> anyhow::Result<()> {
    let fixture = Fixture::start(Backend::Postgres).await?;
    let (tenant, _) = fixture.largest_tenant().await?;
    let request = recon_core::ports::DigestRequest {
        tenant_id: tenant.clone(),
        kind: Kind::USER,
        range: recon_core::KeyRange::all(),
        buckets: 4,
    };
    let ours = fixture.client(|_| {})?;
    let capabilities = ours.capabilities().await?;
    ensure!(
        capabilities.digest_definition.as_deref() == Some(recon_core::digest::DEFINITION),
        "the monolith names its definition: {capabilities:?}"
    );
    ensure!(
        ours.range_digests(&request).await?.is_some(),
        "digests of our definition are used"
    );
    ensure!(ours.whole_tenant_digests(&tenant).await?.is_some());
    fixture
        .proxy
        .set_fault(Fault::DigestDefinition("recon-digest-v2".into()));
    let other = fixture.client(|_| {})?;
    ensure!(
        other.capabilities().await?.digests,
        "the source still offers digests"
    );
    ensure!(
        other.range_digests(&request).await?.is_none(),
        "range digests of another definition were used"
    );
    ensure!(
        other.whole_tenant_digests(&tenant).await?.is_none(),
        "tenant digests of another definition were used"
    );
    ensure!(
        other.every_tenant_digests().await?.is_none(),
        "all-tenant digests of another definition were used"
    );
    ensure!(
        fixture.proxy.requests("/digests") == 2,
        "no digest request after the other definition was seen: {}",
        fixture.proxy.requests("/digests")
    );
    Ok(())
}
