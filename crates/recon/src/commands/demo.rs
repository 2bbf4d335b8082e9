//! `recon demo`: the main job on embedded defaults.
//!
//! Today it starts the reference monolith on a SQLite file, seeds a
//! heavy-tailed workload, and reads it back through the Source API over HTTP
//! (every tenant page and every tenant's counts), checking that the API
//! reports exactly what was seeded. Later issues extend it with the Kafka
//! path, a replica and reconciliation.

use crate::cli::DemoArgs;
use anyhow::{Context, bail};
use recon_monolith::Monolith;
use serde::Deserialize;
use std::process::ExitCode;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Deserialize)]
struct TenantPage {
    items: Vec<TenantItem>,
    next_after: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TenantItem {
    id: String,
    name: String,
}

#[derive(Debug, Deserialize)]
struct Counts {
    users: u64,
    groups: u64,
    memberships: u64,
}

pub async fn run(args: DemoArgs, shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    let data_dir = tempfile::Builder::new()
        .prefix("recon-demo-")
        .tempdir()
        .context("create the demo's data directory")?;
    let database_url = format!(
        "sqlite://{}?mode=rwc",
        data_dir.path().join("monolith.db").display()
    );
    println!(
        "monolith database: {}",
        data_dir.path().join("monolith.db").display()
    );

    let monolith = Monolith::connect(&database_url)
        .await
        .context("open the monolith database")?;
    let started = Instant::now();
    let summary = recon_monolith::seed::run(&monolith, &super::seed::spec(&args.workload))
        .await
        .context("seed the workload")?;
    println!(
        "seeded {} tenants, {} users, {} groups, {} memberships in {:.1}s (largest tenant {} users, median {})",
        summary.tenants,
        summary.users,
        summary.groups,
        summary.memberships,
        started.elapsed().as_secs_f64(),
        summary.largest_tenant_users,
        summary.median_tenant_users
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("bind the monolith's port")?;
    let address = listener.local_addr()?;
    let server_shutdown = shutdown.child_token();
    let server = {
        let monolith = monolith.clone();
        let token = server_shutdown.clone();
        tokio::spawn(async move { monolith.serve(listener, None, token).await })
    };
    println!("monolith serving the Source API on http://{address}/v1");

    let totals = read_back(&format!("http://{address}")).await;
    server_shutdown.cancel();
    server
        .await
        .context("monolith task")?
        .context("serve the monolith")?;
    let totals = totals?;

    if args.keep_data {
        let kept = data_dir.keep();
        println!("kept data in {}", kept.display());
    }
    let expected = (
        summary.tenants,
        summary.users,
        summary.groups,
        summary.memberships,
    );
    if totals != expected {
        bail!(
            "the Source API reported {totals:?} (tenants, users, groups, memberships) but {expected:?} were seeded"
        );
    }
    println!("check: the Source API reports exactly the seeded rows");
    Ok(ExitCode::SUCCESS)
}

/// Walks every tenant page and every tenant's counts over HTTP; prints the
/// largest tenants and returns (tenants, users, groups, memberships).
async fn read_back(base_url: &str) -> anyhow::Result<(u64, u64, u64, u64)> {
    let client = reqwest::Client::new();
    let mut tenants = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut request = client
            .get(format!("{base_url}/v1/tenants"))
            .query(&[("limit", "16")]);
        if let Some(after) = &after {
            request = request.query(&[("after", after)]);
        }
        let page: TenantPage = request
            .send()
            .await?
            .error_for_status()?
            .json()
            .await
            .context("decode a tenant page")?;
        pages += 1;
        tenants.extend(page.items);
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let mut rows = Vec::with_capacity(tenants.len());
    for tenant in &tenants {
        let counts: Counts = client
            .get(format!("{base_url}/v1/tenants/{}/counts", tenant.id))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await
            .context("decode tenant counts")?;
        rows.push((tenant, counts));
    }
    rows.sort_by_key(|(_, counts)| std::cmp::Reverse(counts.users));
    println!(
        "\n{} tenants read in {pages} pages; the largest:",
        tenants.len()
    );
    println!(
        "{:<38} {:<24} {:>8} {:>8} {:>12}",
        "tenant", "name", "users", "groups", "memberships"
    );
    for (tenant, counts) in rows.iter().take(8) {
        println!(
            "{:<38} {:<24} {:>8} {:>8} {:>12}",
            tenant.id, tenant.name, counts.users, counts.groups, counts.memberships
        );
    }
    let sum = |pick: fn(&Counts) -> u64| rows.iter().map(|(_, counts)| pick(counts)).sum::<u64>();
    let totals = (
        tenants.len() as u64,
        sum(|c| c.users),
        sum(|c| c.groups),
        sum(|c| c.memberships),
    );
    println!(
        "{:<63} {:>8} {:>8} {:>12}\n",
        "total", totals.1, totals.2, totals.3
    );
    Ok(totals)
}
