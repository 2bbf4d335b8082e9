//! The optional configuration file (TOML): one table per subcommand, keyed
//! by option names, e.g.
//!
//! ```toml
//! [serve]
//! kafka-bootstrap-servers = "kafka:9092"
//! etcd-endpoints = ["http://etcd-0:2379", "http://etcd-1:2379"]
//! database-url-file = "/var/run/secrets/recon/database-url"
//! page-size = 500
//!
//! [bench.drain]
//! events = 100000
//! ```
//!
//! Order of precedence: file < environment (`RECON_…`) < flags. The file is
//! named by `--config <path>` or `RECON_CONFIG`; its settings become
//! command-line arguments for clap, except those whose variable is set or
//! whose flag is given. An unknown key is an error naming it.

use anyhow::{Context, bail};
use clap::CommandFactory;
use std::ffi::OsString;
use std::path::PathBuf;

/// The variable naming the configuration file.
pub const CONFIG_VARIABLE: &str = "RECON_CONFIG";

/// The options of `args` (argv, program first) with the configuration
/// file's settings added where neither a variable nor a flag sets them,
/// and the names of the options the file set.
pub fn apply(args: Vec<OsString>) -> anyhow::Result<(Vec<OsString>, Vec<String>)> {
    let Some(path) = config_path(&args) else {
        return Ok((args, Vec::new()));
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("read the configuration file {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("parse the configuration file {}", path.display()))?;
    let given: Vec<String> = args
        .iter()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    let extra = settings_for(&given, &table, |name| std::env::var_os(name).is_some())
        .with_context(|| format!("in the configuration file {}", path.display()))?;
    let names = extra
        .iter()
        .filter_map(|arg| arg.strip_prefix("--").map(str::to_owned))
        .collect();
    let mut args = args;
    args.extend(extra.into_iter().map(OsString::from));
    Ok((args, names))
}

/// `--config <path>`, `--config=<path>`, else `$RECON_CONFIG`.
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut iter = args.iter().skip(1);
    while let Some(arg) = iter.next() {
        let text = arg.to_string_lossy();
        if text == "--config" {
            return iter.next().map(PathBuf::from);
        }
        if let Some(path) = text.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os(CONFIG_VARIABLE).map(PathBuf::from)
}

/// The arguments the file's table for the subcommand in `given` adds.
/// `variable_set` tells whether an environment variable is set.
pub fn settings_for(
    given: &[String],
    table: &toml::Table,
    variable_set: impl Fn(&str) -> bool,
) -> anyhow::Result<Vec<String>> {
    // Walk to the deepest subcommand named in the arguments, and its table.
    let mut command = crate::cli::Cli::command();
    let mut settings = Some(table);
    let mut section = String::new();
    for arg in given.iter().skip(1) {
        let Some(sub) = command.find_subcommand(arg).cloned() else {
            continue;
        };
        settings = settings
            .and_then(|table| table.get(sub.get_name()))
            .and_then(toml::Value::as_table);
        section = if section.is_empty() {
            sub.get_name().to_owned()
        } else {
            format!("{section}.{}", sub.get_name())
        };
        command = sub;
    }
    let Some(settings) = settings else {
        return Ok(Vec::new());
    };
    let mut extra = Vec::new();
    for (key, value) in settings {
        if value.is_table() {
            continue; // a nested subcommand's table
        }
        let Some(arg) = command
            .get_arguments()
            .find(|arg| arg.get_long() == Some(key.as_str()))
        else {
            bail!("unknown setting `{key}` in [{section}]");
        };
        let flag = format!("--{key}");
        let flag_given = given
            .iter()
            .any(|arg| *arg == flag || arg.starts_with(&format!("{flag}=")));
        let variable_given = arg
            .get_env()
            .is_some_and(|name| variable_set(&name.to_string_lossy()));
        if flag_given || variable_given {
            continue;
        }
        let values = match value {
            toml::Value::Array(items) => {
                items.iter().map(scalar).collect::<anyhow::Result<Vec<_>>>()
            }
            other => scalar(other).map(|text| vec![text]),
        }
        .with_context(|| format!("setting `{key}` in [{section}]"))?;
        let takes_value = arg.get_action().takes_values();
        for text in values {
            if takes_value {
                extra.push(flag.clone());
                extra.push(text);
            } else if text == "true" {
                extra.push(flag.clone());
            } else if text != "false" {
                bail!("setting `{key}` in [{section}] is a switch: true or false, not {text}");
            }
        }
    }
    Ok(extra)
}

fn scalar(value: &toml::Value) -> anyhow::Result<String> {
    match value {
        toml::Value::String(text) => Ok(text.clone()),
        toml::Value::Integer(number) => Ok(number.to_string()),
        toml::Value::Float(number) => Ok(number.to_string()),
        toml::Value::Boolean(flag) => Ok(flag.to_string()),
        other => bail!(
            "expected a string, number or boolean, got {}",
            other.type_str()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        text.parse().expect("valid TOML")
    }

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn the_file_fills_in_what_flags_and_variables_leave_open() {
        let file = table(
            r#"
            [serve]
            kafka-bootstrap-servers = "kafka:9092"
            page-size = 500
            etcd-endpoints = ["http://a:2379", "http://b:2379"]
            dynamic-membership = true
            member-id = "from-file"
            group-id = "from-file"
            "#,
        );
        let extra = settings_for(&args("recon serve --member-id from-flag"), &file, |name| {
            name == "RECON_GROUP_ID"
        })
        .expect("applies");
        let options: Vec<String> = extra
            .iter()
            .filter(|arg| *arg != "--dynamic-membership")
            .cloned()
            .collect();
        let mut pairs: Vec<String> = options.chunks(2).map(|pair| pair.join(" ")).collect();
        pairs.sort();
        assert_eq!(
            extra
                .iter()
                .filter(|arg| *arg == "--dynamic-membership")
                .count(),
            1
        );
        assert!(
            pairs.contains(&"--kafka-bootstrap-servers kafka:9092".to_owned()),
            "{extra:?}"
        );
        assert!(pairs.contains(&"--page-size 500".to_owned()), "{extra:?}");
        assert_eq!(
            extra
                .iter()
                .filter(|arg| *arg == "--etcd-endpoints")
                .count(),
            2
        );
        assert!(
            !extra.contains(&"from-file".to_owned()),
            "a flag or variable lost: {extra:?}"
        );
    }

    #[test]
    fn nested_subcommands_have_nested_tables() {
        let file = table("[bench.drain]\nevents = 1000\n[serve]\npage-size = 7\n");
        let extra = settings_for(&args("recon bench drain"), &file, |_| false).expect("applies");
        assert_eq!(extra, vec!["--events".to_owned(), "1000".to_owned()]);
    }

    #[test]
    fn an_unknown_key_is_an_error_naming_it() {
        let file = table("[serve]\npage_sise = 7\n");
        let error = settings_for(&args("recon serve"), &file, |_| false).expect_err("unknown");
        assert!(
            format!("{error:#}").contains("unknown setting `page_sise` in [serve]"),
            "{error:#}"
        );
    }
}
