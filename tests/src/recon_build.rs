//! The `recon` binary that multi-process tests run, built by the tests
//! themselves so that it can never be stale.
//!
//! The first [`recon_binary`] call of a process runs
//! `cargo build -p recon --bin recon` with the profile, target directory
//! and target triple of the running executable (a test binary under
//! `target/<profile>/deps/`, or a binary such as `recon-chaos` under
//! `target/<profile>/`), and every later call returns the same path. When
//! the binary is up to date the build is a fingerprint check of about a
//! second. `cargo test` does not hold the target directory's lock while it
//! runs test executables, so the nested build cannot deadlock with it; when
//! another cargo does hold the lock, the build waits for it like any cargo.
//!
//! `RECON_TEST_BINARY` names a prebuilt binary instead (no build).

use anyhow::{Context, bail, ensure};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Environment variable naming a prebuilt `recon` binary to run instead of
/// building one.
pub const BINARY_OVERRIDE_VAR: &str = "RECON_TEST_BINARY";

/// The built binary, or the build's error, once per process.
static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// The path of an up-to-date `recon` binary: `RECON_TEST_BINARY` if set,
/// else the one this process built (see the module documentation).
///
/// Blocks while cargo builds (inside a multi-threaded tokio runtime the
/// other tasks go on running meanwhile).
pub fn recon_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(BINARY_OVERRIDE_VAR) {
        return Ok(PathBuf::from(path));
    }
    let build_once = || {
        BUILT
            .get_or_init(|| build().map_err(|error| format!("{error:#}")))
            .clone()
    };
    let built = match tokio::runtime::Handle::try_current() {
        Ok(runtime) if runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(build_once)
        }
        _ => build_once(),
    };
    built.map_err(anyhow::Error::msg)
}

/// Where and how the running executable was built.
#[derive(Debug, PartialEq, Eq)]
struct BuildLayout {
    /// The target directory (`target/`).
    target_directory: PathBuf,
    /// The cargo profile (`dev` for `target/debug`).
    profile: String,
    /// The target triple, when built with `--target`.
    target_triple: Option<String>,
}

impl BuildLayout {
    /// The layout of the executable at `executable`.
    fn of_executable(executable: &Path) -> anyhow::Result<Self> {
        let mut directory = executable
            .parent()
            .with_context(|| format!("{} has no directory", executable.display()))?;
        // Test executables live in target/<profile>/deps, examples in
        // target/<profile>/examples, binaries in target/<profile>.
        if directory.ends_with("deps") || directory.ends_with("examples") {
            directory = directory
                .parent()
                .context("deps directory has no profile directory")?;
        }
        let profile_directory_name = file_name(directory)?;
        let above_profile = directory
            .parent()
            .context("profile directory has no target directory")?;
        // Cargo marks the target directory itself with CACHEDIR.TAG; one
        // level deeper, target/<triple>/<profile>, has none.
        let (target_directory, target_triple) = if above_profile.join("CACHEDIR.TAG").is_file() {
            (above_profile.to_path_buf(), None)
        } else {
            let triple = file_name(above_profile)?;
            let target_directory = above_profile
                .parent()
                .context("target triple directory has no target directory")?;
            (target_directory.to_path_buf(), Some(triple))
        };
        let profile = match profile_directory_name.as_str() {
            "debug" => "dev".to_owned(),
            other => other.to_owned(),
        };
        Ok(Self {
            target_directory,
            profile,
            target_triple,
        })
    }
}

fn file_name(path: &Path) -> anyhow::Result<String> {
    path.file_name()
        .and_then(|name| name.to_str())
        .map(str::to_owned)
        .with_context(|| format!("{} has no UTF-8 name", path.display()))
}

/// The workspace root: the parent of this package's directory.
fn workspace_root() -> anyhow::Result<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .context("recon-tests has no parent directory")
}

/// Runs `cargo build -p recon --bin recon` for the running executable's
/// profile and target directory, now (no caching: [`recon_binary`] caches),
/// and returns the binary cargo reports.
pub fn build() -> anyhow::Result<PathBuf> {
    let executable = std::env::current_exe().context("locate the running executable")?;
    let layout = BuildLayout::of_executable(&executable)?;
    // The cargo that runs the tests, else the one on PATH.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    // `cargo test` gives the test process the package's CARGO_PKG_*,
    // CARGO_MANIFEST_DIR and the like. Build scripts (ring's) track some
    // of them, so passing them on would make this build and the outer one
    // rebuild each other's dependencies every time.
    for (name, _) in std::env::vars_os() {
        if name
            .to_str()
            .is_some_and(is_set_by_cargo_for_the_running_package)
        {
            command.env_remove(&name);
        }
    }
    command
        .current_dir(workspace_root()?)
        .args(["build", "-p", "recon", "--bin", "recon"])
        .args(["--message-format", "json-render-diagnostics"])
        .args(["--profile", &layout.profile])
        .arg("--target-dir")
        .arg(&layout.target_directory);
    if let Some(triple) = &layout.target_triple {
        command.args(["--target", triple]);
    }
    let output = command
        .stdin(Stdio::null())
        .output()
        .context("run cargo build -p recon")?;
    ensure!(
        output.status.success(),
        "cargo build -p recon failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let binary = built_executable(&String::from_utf8_lossy(&output.stdout))?;
    ensure!(
        binary.is_file(),
        "cargo reported {} but it is not a file",
        binary.display()
    );
    Ok(binary)
}

/// Whether cargo sets `name` for the package whose executable is running
/// (not an outside setting such as `CARGO_HOME` or `CARGO_PROFILE_*`).
fn is_set_by_cargo_for_the_running_package(name: &str) -> bool {
    name.starts_with("CARGO_PKG_")
        || name.starts_with("CARGO_MANIFEST_")
        || matches!(
            name,
            "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_TARGET_TMPDIR"
                | "OUT_DIR"
        )
}

/// The `recon` executable named in cargo's JSON messages.
fn built_executable(cargo_messages: &str) -> anyhow::Result<PathBuf> {
    for line in cargo_messages.lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_recon_binary = message["reason"] == "compiler-artifact"
            && message["target"]["name"] == "recon"
            && message["target"]["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|kind| kind == "bin"));
        if let (true, Some(path)) = (is_recon_binary, message["executable"].as_str()) {
            return Ok(PathBuf::from(path));
        }
    }
    bail!("cargo build -p recon reported no recon executable")
}

#[cfg(test)]
mod tests {
    use super::{BuildLayout, built_executable, is_set_by_cargo_for_the_running_package};
    use std::path::PathBuf;

    #[test]
    fn a_test_executable_under_deps_is_in_the_dev_profile() -> anyhow::Result<()> {
        let target = tempfile::tempdir()?;
        std::fs::write(target.path().join("CACHEDIR.TAG"), "")?;
        let executable = target.path().join("debug/deps/integration-0123");
        assert_eq!(
            BuildLayout::of_executable(&executable)?,
            BuildLayout {
                target_directory: target.path().to_path_buf(),
                profile: "dev".to_owned(),
                target_triple: None,
            }
        );
        Ok(())
    }

    #[test]
    fn a_binary_beside_recon_and_a_cross_target_are_recognised() -> anyhow::Result<()> {
        let target = tempfile::tempdir()?;
        std::fs::write(target.path().join("CACHEDIR.TAG"), "")?;
        let chaos = target.path().join("release/recon-chaos");
        assert_eq!(
            BuildLayout::of_executable(&chaos)?,
            BuildLayout {
                target_directory: target.path().to_path_buf(),
                profile: "release".to_owned(),
                target_triple: None,
            }
        );
        let cross = target
            .path()
            .join("x86_64-unknown-linux-musl/debug/deps/integration-0123");
        assert_eq!(
            BuildLayout::of_executable(&cross)?,
            BuildLayout {
                target_directory: target.path().to_path_buf(),
                profile: "dev".to_owned(),
                target_triple: Some("x86_64-unknown-linux-musl".to_owned()),
            }
        );
        Ok(())
    }

    #[test]
    fn only_the_running_package_s_cargo_variables_are_dropped() {
        for dropped in [
            "CARGO_MANIFEST_DIR",
            "CARGO_MANIFEST_PATH",
            "CARGO_PKG_NAME",
            "CARGO_PKG_VERSION_MAJOR",
            "CARGO_CRATE_NAME",
            "OUT_DIR",
        ] {
            assert!(
                is_set_by_cargo_for_the_running_package(dropped),
                "{dropped}"
            );
        }
        for kept in [
            "CARGO_HOME",
            "CARGO_PROFILE_DEV_DEBUG",
            "CARGO",
            "RUSTFLAGS",
            "PATH",
        ] {
            assert!(!is_set_by_cargo_for_the_running_package(kept), "{kept}");
        }
    }

    #[test]
    fn the_executable_is_read_from_the_bin_artifact_only() -> anyhow::Result<()> {
        let messages = r#"{"reason":"compiler-artifact","target":{"name":"recon","kind":["lib"]},"executable":null}
Compiling…
{"reason":"compiler-artifact","target":{"name":"recon-core","kind":["lib"]},"executable":null}
{"reason":"compiler-artifact","target":{"name":"recon","kind":["bin"]},"executable":"/t/debug/recon"}
{"reason":"build-finished","success":true}"#;
        assert_eq!(built_executable(messages)?, PathBuf::from("/t/debug/recon"));
        assert!(built_executable(r#"{"reason":"build-finished","success":true}"#).is_err());
        Ok(())
    }
}
