//! Backup → mutate → restore gives back exactly the backup's rows (versions
//! included) under a higher generation, emits no change events, and later
//! writes carry the new generation.

use super::support::{Server, TOKEN, into_json};
use anyhow::{Context, ensure};
use recon_core::{Group, Kind, Membership, Row, Tenant, User, UserStatus, Version};
use recon_monolith::seed::{self, SeedSpec};
use recon_tests::Backend;
use reqwest::Method;

async fn rows(server: &Server) -> anyhow::Result<(Vec<Row>, Version)> {
    Ok(server.monolith.snapshot_rows().await?)
}

async fn mutate(server: &Server, rows_before: &[Row]) -> anyhow::Result<()> {
    let monolith = &server.monolith;
    let tenant_id = rows_before
        .iter()
        .find(|row| row.kind() == Kind::TENANT)
        .map(|row| row.tenant_id.clone())
        .context("a seeded tenant")?;
    // Create.
    monolith
        .put_tenant(&Tenant {
            id: "phantom".to_owned(),
            name: "Created after backup".to_owned(),
        })
        .await?;
    let phantom_user = User {
        id: "phantom-user".to_owned(),
        email: "p@example.com".to_owned(),
        display_name: "Phantom".to_owned(),
        status: UserStatus::Active,
    };
    monolith.put_user(&tenant_id, &phantom_user).await?;
    monolith
        .put_group(
            &tenant_id,
            &Group {
                id: "phantom-group".to_owned(),
                name: "P".to_owned(),
            },
        )
        .await?;
    let membership = Membership {
        group_id: "phantom-group".to_owned(),
        user_id: "phantom-user".to_owned(),
    };
    monolith.put_membership(&tenant_id, &membership).await?;
    // Update.
    let user = rows_before
        .iter()
        .filter(|row| row.tenant_id == tenant_id)
        .find_map(|row| row.record.as_user())
        .context("a seeded user")?;
    monolith
        .put_user(
            &tenant_id,
            &User {
                display_name: "Renamed".to_owned(),
                ..user.clone()
            },
        )
        .await?;
    // Delete (with cascades).
    let group = rows_before
        .iter()
        .filter(|row| row.tenant_id == tenant_id)
        .find_map(|row| row.record.as_group())
        .context("a seeded group")?;
    monolith.delete_group(&tenant_id, &group.id).await?;
    let other_tenant = rows_before
        .iter()
        .rev()
        .find(|row| row.kind() == Kind::TENANT && row.tenant_id != tenant_id)
        .context("a second tenant")?;
    monolith.delete_tenant(&other_tenant.tenant_id).await?;
    Ok(())
}

#[tokio::test]
async fn restore_returns_exactly_the_backup_with_a_new_generation() -> anyhow::Result<()> {
    for backend in [Backend::Postgres, Backend::Sqlite] {
        let server = Server::start(backend, Some(TOKEN)).await?;
        let spec = SeedSpec {
            seed: 11,
            tenants: 6,
            users_per_tenant_mean: 12.0,
            ..SeedSpec::default()
        };
        seed::run(&server.monolith, &spec).await?;
        let (at_backup, watermark_at_backup) = rows(&server).await?;

        let response = server
            .request(Method::POST, "/admin/backups")
            .send()
            .await?;
        let (status, body) = into_json(response).await?;
        ensure!(status == 200, "backup: {status} {body}");
        let backup_id = body["backup_id"].as_i64().context("backup_id")?;

        mutate(&server, &at_backup).await?;
        let (mutated, watermark_mutated) = rows(&server).await?;
        ensure!(mutated != at_backup, "the mutations must change the data");
        ensure!(
            watermark_mutated > watermark_at_backup,
            "writes advance the watermark"
        );
        let outbox_before_restore = server.monolith.outbox_after(0, u64::MAX >> 1).await?.len();

        let path = format!("/admin/backups/{backup_id}/restore");
        let (status, body) = into_json(server.request(Method::POST, &path).send().await?).await?;
        ensure!(status == 200, "restore: {status} {body}");
        let (restored, watermark_restored) = rows(&server).await?;
        ensure!(
            restored == at_backup,
            "{backend:?}: restored rows differ from the backup"
        );
        ensure!(
            watermark_restored
                == Version::new(
                    watermark_at_backup.generation + 1,
                    watermark_at_backup.sequence
                ),
            "{backend:?}: watermark after restore {watermark_restored}, backup at {watermark_at_backup}"
        );
        ensure!(
            body["generation"] == watermark_restored.generation,
            "restore reports the generation: {body}"
        );
        let outbox_after_restore = server.monolith.outbox_after(0, u64::MAX >> 1).await?.len();
        ensure!(
            outbox_after_restore == outbox_before_restore,
            "a restore must emit no change events"
        );

        // Writes after the restore are newer than anything before it.
        let outcome = server
            .monolith
            .put_tenant(&Tenant {
                id: "after-restore".to_owned(),
                name: "New".to_owned(),
            })
            .await?;
        ensure!(
            outcome.version
                == Version::new(
                    watermark_restored.generation,
                    watermark_restored.sequence + 1
                ),
            "write after restore got {}",
            outcome.version
        );
        ensure!(
            outcome.version > watermark_mutated,
            "post-restore versions beat pre-restore ones"
        );

        // Restoring again bumps the generation again; unknown backups are 404.
        let again = server.monolith.restore(backup_id).await?;
        ensure!(
            again.generation == watermark_restored.generation + 1,
            "second restore: {again:?}"
        );
        ensure!(
            rows(&server).await?.0 == at_backup,
            "second restore gives the backup again"
        );
        let (status, body) = into_json(
            server
                .request(Method::POST, "/admin/backups/999999/restore")
                .send()
                .await?,
        )
        .await?;
        ensure!(
            status == 404 && body["error"].is_string(),
            "unknown backup: {status} {body}"
        );
        let (status, _) = into_json(
            server
                .request(Method::POST, "/admin/backups/abc/restore")
                .send()
                .await?,
        )
        .await?;
        ensure!(status == 400, "malformed backup id: {status}");
        let anonymous = server
            .client
            .post(format!("{}/admin/backups", server.base_url))
            .send()
            .await?;
        ensure!(
            anonymous.status().as_u16() == 401,
            "admin routes need the token"
        );
        server.stop().await?;
    }
    Ok(())
}
