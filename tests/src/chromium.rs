//! Headless Chromium (the Debian package) for page tests: the DOM of a page
//! after its scripts ran, and screenshots.

use anyhow::{Context, ensure};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

/// Longest a page load may take.
const LOAD_DEADLINE: Duration = Duration::from_secs(60);

/// The Chromium executable: `$RECON_TEST_CHROMIUM`, else `chromium` on PATH.
pub fn binary() -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var("RECON_TEST_CHROMIUM") {
        return Ok(PathBuf::from(path));
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|directory| directory.join("chromium"))
        .find(|candidate| candidate.is_file())
        .context(
            "chromium not found: run scripts/test.sh, which installs the Debian package chromium",
        )
}

/// Runs headless Chromium on `url` with `extra` arguments (a new profile,
/// nothing reaching out to the internet) and returns its stdout.
async fn run(url: &str, extra: &[String]) -> anyhow::Result<String> {
    let profile = tempfile::tempdir().context("create a Chromium profile directory")?;
    let mut command = Command::new(binary()?);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            // Let the page's first fetches and renders happen.
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(LOAD_DEADLINE, command.output())
        .await
        .with_context(|| format!("chromium did not finish {url} within {LOAD_DEADLINE:?}"))?
        .context("run chromium")?;
    ensure!(
        output.status.success(),
        "chromium failed on {url}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The page's DOM after its scripts ran.
pub async fn dom(url: &str) -> anyhow::Result<String> {
    run(url, &["--dump-dom".to_owned()]).await
}

/// A PNG screenshot of the page (1280×1000) at `path`.
pub async fn screenshot(url: &str, path: &Path) -> anyhow::Result<()> {
    if let Some(directory) = path.parent() {
        std::fs::create_dir_all(directory)?;
    }
    run(
        url,
        &[
            format!("--screenshot={}", path.display()),
            "--window-size=1280,1000".to_owned(),
        ],
    )
    .await?;
    ensure!(
        path.is_file(),
        "no screenshot written at {}",
        path.display()
    );
    Ok(())
}

/// The opening tag of the element with `id` in a DOM dump.
pub fn opening_tag<'a>(dom: &'a str, id: &str) -> Option<&'a str> {
    let at = dom.find(&format!("id=\"{id}\""))?;
    let start = dom[..at].rfind('<')?;
    let end = at + dom[at..].find('>')?;
    Some(&dom[start..=end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_opening_tag_of_an_element_is_found_by_id() {
        let dom = r#"<body><section id="run" data-run="r1" data-phase="working"><p id="x">"#;
        assert_eq!(
            opening_tag(dom, "run"),
            Some(r#"<section id="run" data-run="r1" data-phase="working">"#)
        );
        assert_eq!(opening_tag(dom, "missing"), None);
    }
}
