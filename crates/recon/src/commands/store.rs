//! `recon store migrate`: brings the replica store's schema up to date
//! ([`recon_store::Store::migrate`]) and prints what it applied.

use crate::cli::StoreCommand;
use anyhow::Context as _;
use recon_store::Store;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

pub async fn run(command: StoreCommand, shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    let StoreCommand::Migrate(args) = command;
    let database_url = args.database.url()?;
    let schema = args.schema.load()?;
    // Cancelling drops the session: on PostgreSQL the migration in
    // progress rolls back, and the next `recon store migrate` resumes.
    let applied = tokio::select! {
        applied = Store::migrate_to(&database_url, args.options(), &schema) => {
            applied.context("migrate the replica store")?
        }
        _ = shutdown.cancelled() => {
            anyhow::bail!(
                "migration cancelled (on PostgreSQL the migration in progress is rolled back): run `recon store migrate` again"
            )
        }
    };
    print!("{}", summary(&applied));
    Ok(ExitCode::SUCCESS)
}

/// One line per migration applied, or "store is up to date".
fn summary(applied: &[String]) -> String {
    if applied.is_empty() {
        return "store is up to date\n".to_owned();
    }
    applied
        .iter()
        .map(|migration| format!("applied {migration}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::summary;

    #[test]
    fn the_summary_names_each_migration_or_says_nothing_was_needed() {
        assert_eq!(summary(&[]), "store is up to date\n");
        assert_eq!(
            summary(&["m0001_a".to_owned(), "m0002_b".to_owned()]),
            "applied m0001_a\napplied m0002_b\n"
        );
    }
}
