//! The commands the README and `docs/` give a reader work as written:
//! every `curl` that sends a body says that it is JSON (`curl -d` labels
//! its body `application/x-www-form-urlencoded`, which the admin API's
//! JSON routes refuse with 415).

use std::path::{Path, PathBuf};

/// The README and every Markdown file under `docs/`.
fn documents() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = vec![root.join("README.md")];
    let entries = std::fs::read_dir(root.join("docs")).expect("read docs/");
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|extension| extension == "md") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The lines of `text` with a `curl` that sends a body without saying it
/// is JSON: `(line number, line)`.
fn bodies_without_a_type(text: &str) -> Vec<(usize, String)> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| line.contains("curl "))
        .filter(|(_, line)| {
            [" -d ", " --data ", " --data-raw "]
                .iter()
                .any(|flag| line.contains(flag))
        })
        .filter(|(_, line)| !line.contains("Content-Type: application/json"))
        .map(|(index, line)| (index + 1, line.trim().to_owned()))
        .collect()
}

#[test]
fn every_curl_with_a_body_says_it_is_json() {
    let mut found = Vec::new();
    for file in documents() {
        let text = std::fs::read_to_string(&file).expect("read a document");
        for (line, command) in bodies_without_a_type(&text) {
            found.push(format!("{}:{line}: {command}", file.display()));
        }
    }
    assert!(
        found.is_empty(),
        "these commands post a body the admin API refuses with 415 (add -H 'Content-Type: application/json'):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_rule_finds_a_body_without_a_type_and_spares_one_with_it() {
    let text = "curl -X POST $AUTH localhost:9464/reconcile -d '{\"tenants\":[\"t1\"]}'\n\
                curl -X POST $AUTH localhost:9464/reconcile -H 'Content-Type: application/json' -d '{}'\n\
                curl localhost:9464/runs";
    assert_eq!(bodies_without_a_type(text).len(), 1);
    assert_eq!(bodies_without_a_type(text)[0].0, 1);
}
