//! Rules of the team's code that a compiler does not check, checked over
//! the production sources of every crate (a file's text before its first
//! `#[cfg(test)]`; test-only files left out).
//!
//! * No error is classified by its message text: a library rewording its
//!   message must not turn a lost session into a transient failure. An
//!   error is known by its type, its variant or its status code.

use std::path::{Path, PathBuf};

/// Words that name an error, a status or a message on a line.
const ERROR_WORDS: [&str; 7] = [
    "error", "err.", "err)", "status", "message", "stderr", "cause",
];

fn production_sources() -> Vec<PathBuf> {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates");
    let mut files = Vec::new();
    let mut folders = vec![crates];
    while let Some(folder) = folders.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                if name != "tests" && name != "target" {
                    folders.push(path);
                }
            } else if name.ends_with(".rs")
                && !name.starts_with("tests")
                && !name.ends_with("_tests.rs")
            {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The lines of `text` before its tests that test an error's text.
fn classifications_by_text(text: &str) -> Vec<(usize, String)> {
    text.lines()
        .take_while(|line| !line.contains("#[cfg(test)]"))
        .enumerate()
        .filter(|(_, line)| {
            let code = line.split("//").next().unwrap_or_default();
            let lower = code.to_lowercase();
            code.contains(".contains(")
                && ERROR_WORDS.iter().any(|word| {
                    lower
                        .split(".contains(")
                        .next()
                        .is_some_and(|before| before.contains(word))
                })
        })
        .map(|(index, line)| (index + 1, line.trim().to_owned()))
        .collect()
}

#[test]
fn no_error_is_classified_by_its_message_text() {
    let files = production_sources();
    assert!(files.len() > 50, "found only {} source files", files.len());
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable source");
        for (line, code) in classifications_by_text(&text) {
            found.push(format!("{}:{line}: {code}", file.display()));
        }
    }
    assert!(
        found.is_empty(),
        "errors classified by their text (match the type, variant or status code instead):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_rule_finds_a_classification_by_text_and_spares_tests() {
    let text = "fn lost(error: &Error) -> bool {\n    \
                error.to_string().contains(\"lease not found\")\n}\n\
                fn known(values: &[String], text: &str) -> bool { values.contains(&text.to_owned()) }\n\
                #[cfg(test)]\nmod tests {\n    fn t() { assert!(error.contains(\"x\")) }\n}\n";
    assert_eq!(
        classifications_by_text(text),
        [(
            2,
            "error.to_string().contains(\"lease not found\")".to_owned()
        )]
    );
}
