//! Network partitions of one replica: iptables rules that drop every
//! packet to and from the loopback port of that replica's own link (its
//! proxy to etcd or to PostgreSQL). The kernel then behaves as in a real
//! partition: connections stay open, nothing arrives, retransmissions
//! deliver what was held once the rules are gone.
//!
//! Where iptables is missing or not permitted, the link's proxy stops
//! forwarding instead (the same effect seen from both ends, in user space);
//! the figures say which was used.

use anyhow::{Context, bail};
use std::collections::BTreeSet;
use std::process::Command;

/// The rules this harness added; removed when dropped.
pub struct Firewall {
    available: bool,
    cut: BTreeSet<u16>,
}

impl Firewall {
    /// Checks whether iptables can be used here.
    pub fn probe() -> Self {
        let available = Command::new("iptables")
            .args(["-w", "-L", "OUTPUT", "-n"])
            .output()
            .is_ok_and(|output| output.status.success());
        Self {
            available,
            cut: BTreeSet::new(),
        }
    }

    /// Whether partitions are made with iptables.
    pub fn available(&self) -> bool {
        self.available
    }

    /// Drops every packet to and from loopback port `port`.
    pub fn cut(&mut self, port: u16) -> anyhow::Result<()> {
        if self.cut.insert(port) {
            rules("-I", port)?;
        }
        Ok(())
    }

    /// Lets packets of `port` through again.
    pub fn heal(&mut self, port: u16) -> anyhow::Result<()> {
        if self.cut.remove(&port) {
            rules("-D", port)?;
        }
        Ok(())
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        for port in std::mem::take(&mut self.cut) {
            if let Err(error) = rules("-D", port) {
                eprintln!("could not remove the partition of port {port}: {error:#}");
            }
        }
    }
}

/// Inserts (`-I`) or deletes (`-D`) the two rules of a port.
fn rules(action: &str, port: u16) -> anyhow::Result<()> {
    let port = port.to_string();
    for direction in ["--dport", "--sport"] {
        let output = Command::new("iptables")
            .args([
                "-w", action, "OUTPUT", "-o", "lo", "-p", "tcp", direction, &port, "-j", "DROP",
            ])
            .output()
            .context("run iptables")?;
        if !output.status.success() {
            bail!(
                "iptables {action} {direction} {port}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
    Ok(())
}
