//! `recon config print <command line>`: every option of the command with
//! its effective value and where it came from — the configuration file,
//! the environment, a flag, or the default — with secrets redacted (the
//! values of options marked secret, credentials in URLs, every Kafka
//! property value).

use crate::cli::{Cli, ConfigCommand};
use crate::config_file;
use clap::CommandFactory;
use clap::parser::ValueSource;
use std::ffi::OsString;
use std::process::ExitCode;

pub fn run(command: ConfigCommand) -> anyhow::Result<ExitCode> {
    let ConfigCommand::Print { command } = command;
    print!("{}", effective(&command)?);
    Ok(ExitCode::SUCCESS)
}

/// The table `recon config print` prints for `command` (without the
/// program name).
fn effective(command: &[String]) -> anyhow::Result<String> {
    let mut argv: Vec<OsString> = vec!["recon".into()];
    argv.extend(command.iter().map(OsString::from));
    let (argv, from_file) = config_file::apply(argv)?;
    // Missing required options are shown as unset rather than refused.
    let matches = Cli::command()
        .ignore_errors(true)
        .try_get_matches_from(&argv)?;
    let mut definition = Cli::command();
    let mut matches = &matches;
    let mut path = String::from("recon");
    while let Some((name, sub)) = matches.subcommand() {
        let Some(found) = definition.find_subcommand(name).cloned() else {
            break;
        };
        definition = found;
        matches = sub;
        path.push(' ');
        path.push_str(name);
    }
    let mut out = format!("# effective configuration of `{path}`\n");
    for arg in definition.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if matches!(long, "help" | "version") {
            continue;
        }
        let id = arg.get_id().as_str();
        let values: Vec<String> = matches
            .get_raw(id)
            .map(|raw| {
                raw.map(|value| value.to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let source = match matches.value_source(id) {
            Some(ValueSource::DefaultValue) => "default",
            Some(ValueSource::EnvVariable) => "environment",
            Some(ValueSource::CommandLine) if from_file.iter().any(|name| name == long) => "file",
            Some(ValueSource::CommandLine) => "flag",
            _ => "unset",
        };
        let shown = if values.is_empty() {
            "-".to_owned()
        } else if arg.is_hide_env_values_set() {
            "<redacted>".to_owned()
        } else if long == "kafka-property" {
            values
                .iter()
                .map(|pair| format!("{}=<redacted>", pair.split('=').next().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        } else {
            values
                .iter()
                .map(|value| {
                    if value.contains(['@', '?']) {
                        recon_core::redact_url(value)
                    } else {
                        value.clone()
                    }
                })
                .collect::<Vec<_>>()
                .join(",")
        };
        let variable = arg
            .get_env()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push_str(&format!("{long:<30} = {shown:<44} # {source} {variable}\n"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_shown_with_their_source_and_secrets_redacted() {
        let line = |text: &str, long: &str| {
            text.lines()
                .find(|line| line.starts_with(&format!("{long} ")))
                .unwrap_or_default()
                .to_owned()
        };
        let command: Vec<String> = [
            "serve",
            "--database-url",
            "postgres://recon:s3cret@db/replica",
            "--kafka-bootstrap-servers",
            "kafka:9092",
            "--admin-token",
            "t0ken",
            "--source-url",
            "http://user:pw@monolith:8080",
            "--kafka-property",
            "sasl.password=hunter2",
        ]
        .map(str::to_owned)
        .to_vec();
        let text = effective(&command).expect("prints");
        assert!(
            !text.contains("s3cret")
                && !text.contains("t0ken")
                && !text.contains("hunter2")
                && !text.contains(":pw@"),
            "{text}"
        );
        assert!(line(&text, "database-url").contains("<redacted>"), "{text}");
        assert!(
            line(&text, "kafka-bootstrap-servers").contains("kafka:9092"),
            "{text}"
        );
        assert!(
            line(&text, "kafka-bootstrap-servers").contains("# flag"),
            "{text}"
        );
        assert!(
            line(&text, "source-url").contains("http://***@monolith:8080"),
            "{text}"
        );
        assert!(
            line(&text, "kafka-property").contains("sasl.password=<redacted>"),
            "{text}"
        );
        assert!(
            line(&text, "page-size").contains("1000")
                && line(&text, "page-size").contains("# default"),
            "{text}"
        );
    }
}
