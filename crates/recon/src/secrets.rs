//! Secrets given on the command line, in a variable, or in a file
//! (`--…-file` / `RECON_…_FILE`, what Kubernetes and Docker secrets mount):
//! a secret never needs a command-line flag. File contents are taken
//! whole, without a trailing newline; an empty file is an error.

use anyhow::{Context, bail};
use std::path::Path;

/// The secret `what` from `value` or from the file at `file` (clap makes
/// them exclusive); `None` when neither is given.
pub fn resolve(
    value: Option<&str>,
    file: Option<&Path>,
    what: &str,
) -> anyhow::Result<Option<String>> {
    match (value, file) {
        (Some(value), _) => Ok(Some(value.to_owned())),
        (None, Some(path)) => read(path, what).map(Some),
        (None, None) => Ok(None),
    }
}

/// The secret `what`, which must be given one way or the other.
pub fn require(value: Option<&str>, file: Option<&Path>, what: &str) -> anyhow::Result<String> {
    resolve(value, file, what)?.with_context(|| format!("{what} is required (or its -file form)"))
}

fn read(path: &Path, what: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read {what} from {}", path.display()))?;
    let secret = text.trim_end_matches(['\r', '\n']);
    if secret.is_empty() {
        bail!("{what} file {} is empty", path.display());
    }
    Ok(secret.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_read_without_its_trailing_newline() {
        let directory = tempfile::tempdir().expect("directory");
        let path = directory.path().join("token");
        std::fs::write(&path, "s3cret\n").expect("write");
        assert_eq!(
            resolve(None, Some(&path), "--admin-token").expect("read"),
            Some("s3cret".to_owned())
        );
        assert_eq!(
            resolve(Some("direct"), None, "--admin-token").expect("value"),
            Some("direct".to_owned())
        );
        assert_eq!(resolve(None, None, "--admin-token").expect("none"), None);
    }

    #[test]
    fn a_missing_or_empty_file_is_an_error_naming_it() {
        let directory = tempfile::tempdir().expect("directory");
        let empty = directory.path().join("empty");
        std::fs::write(&empty, "\n").expect("write");
        let error = require(None, Some(&empty), "--database-url").expect_err("empty");
        assert!(format!("{error:#}").contains("empty"), "{error:#}");
        let missing = directory.path().join("missing");
        let error = resolve(None, Some(&missing), "--database-url").expect_err("missing");
        assert!(format!("{error:#}").contains("missing"), "{error:#}");
        let error = require(None, None, "--database-url").expect_err("absent");
        assert!(format!("{error:#}").contains("--database-url"), "{error:#}");
    }
}
