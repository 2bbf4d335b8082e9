//! The `recon` binary the multi-process tests run is built by the tests
//! (`recon_tests::recon_build`), so it is never older than its sources.

use anyhow::{Context, ensure};
use recon_tests::recon_build;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The source files cargo's dep-info (`<binary>.d`, written beside the
/// binary) lists for `binary`.
fn dependency_files(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let dep_info_path = binary.with_extension("d");
    let dep_info = std::fs::read_to_string(&dep_info_path)
        .with_context(|| format!("read {}", dep_info_path.display()))?;
    let (_, dependencies) = dep_info
        .split_once(": ")
        .with_context(|| format!("{} has no rule", dep_info_path.display()))?;
    Ok(dependencies.split_whitespace().map(PathBuf::from).collect())
}

fn modified(path: &Path) -> anyhow::Result<SystemTime> {
    std::fs::metadata(path)
        .and_then(|metadata| metadata.modified())
        .with_context(|| format!("read the modification time of {}", path.display()))
}

#[test]
fn the_built_recon_binary_is_newer_than_every_source_it_is_built_from() -> anyhow::Result<()> {
    let binary = recon_build::build()?;
    let built_at = modified(&binary)?;
    let sources = dependency_files(&binary)?;
    ensure!(
        sources.len() > 20,
        "dep-info of {} lists only {:?}",
        binary.display(),
        sources
    );
    let mut newer = Vec::new();
    for source in &sources {
        if modified(source)? > built_at {
            newer.push(source.display().to_string());
        }
    }
    ensure!(
        newer.is_empty(),
        "{} is stale: older than {newer:?}",
        binary.display()
    );
    Ok(())
}

#[test]
fn an_up_to_date_recon_binary_is_not_rebuilt() -> anyhow::Result<()> {
    let first = recon_build::build()?;
    let first_built_at = modified(&first)?;
    let second = recon_build::build()?;
    ensure!(first == second, "{first:?} then {second:?}");
    ensure!(
        modified(&second)? == first_built_at,
        "a second build with nothing changed relinked {}",
        second.display()
    );
    Ok(())
}
