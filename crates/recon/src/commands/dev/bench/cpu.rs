//! CPU time per process group on this machine, read from `/proc` before
//! and after a measured step: this process (recon), PostgreSQL's server
//! processes and the JVMs (the Kafka broker) — where the time of a bench
//! went, printed next to its figures.

use std::collections::BTreeMap;

/// Clock ticks per second of `/proc/<pid>/stat` (Linux's `USER_HZ`, 100 on
/// every architecture it reports to user space with).
const TICKS_PER_SECOND: f64 = 100.0;

/// The process groups counted, by the command names `/proc` gives them.
const GROUPS: [(&str, &str); 2] = [("postgres", "postgres"), ("java", "kafka (jvm)")];

/// CPU ticks per group at one moment.
#[derive(Debug, Clone, Default)]
pub struct CpuSample {
    ticks: BTreeMap<&'static str, u64>,
}

impl CpuSample {
    /// Reads every process's user and system ticks now.
    pub fn take() -> Self {
        let own = std::process::id().to_string();
        let mut ticks: BTreeMap<&'static str, u64> = BTreeMap::new();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Self::default();
        };
        for entry in entries.flatten() {
            let pid = entry.file_name().to_string_lossy().into_owned();
            if !pid.bytes().all(|byte| byte.is_ascii_digit()) {
                continue;
            }
            let Some((command, used)) = stat(&pid) else {
                continue;
            };
            let group = if pid == own {
                Some("recon")
            } else {
                GROUPS
                    .iter()
                    .find(|(name, _)| command == *name)
                    .map(|(_, group)| *group)
            };
            if let Some(group) = group {
                *ticks.entry(group).or_default() += used;
            }
        }
        Self { ticks }
    }

    /// CPU seconds per group since `earlier` (processes that exited
    /// meanwhile are not counted), as `group s` pairs.
    pub fn since(&self, earlier: &CpuSample) -> Vec<(&'static str, f64)> {
        self.ticks
            .iter()
            .map(|(group, now)| {
                let before = earlier.ticks.get(group).copied().unwrap_or(0);
                (*group, now.saturating_sub(before) as f64 / TICKS_PER_SECOND)
            })
            .collect()
    }
}

/// The command name and user + system ticks of process `pid`.
fn stat(pid: &str) -> Option<(String, u64)> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The command name and user + system ticks of a `/proc/<pid>/stat` line.
fn parse_stat(text: &str) -> Option<(String, u64)> {
    // `pid (comm) state ...`: the name may hold spaces and parentheses.
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let command = text.get(open + 1..close)?.to_owned();
    let fields: Vec<&str> = text.get(close + 2..)?.split_whitespace().collect();
    // Fields 14 and 15 of the line (utime, stime), counted from `state`.
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some((command, user + system))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_counted_as_recon() {
        let before = CpuSample::take();
        // Burn a little CPU.
        let mut sum = 0u64;
        for value in 0..20_000_000u64 {
            sum = sum.wrapping_add(value * value);
        }
        assert_ne!(sum, 1);
        let after = CpuSample::take();
        let recon = after
            .since(&before)
            .into_iter()
            .find(|(group, _)| *group == "recon")
            .map(|(_, seconds)| seconds);
        assert!(
            recon.is_some_and(|seconds| seconds > 0.0),
            "{:?}",
            after.since(&before)
        );
    }

    #[test]
    fn a_command_name_with_spaces_and_parentheses_is_read_whole() {
        let line = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 90 0 0 0 250 50 0 0 20 0 1 0";
        assert_eq!(parse_stat(line), Some(("my (odd) name".to_owned(), 300)));
        assert_eq!(parse_stat("4242 (cut"), None);
    }
}
