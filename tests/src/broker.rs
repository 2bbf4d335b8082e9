//! Apache Kafka brokers started by the tests themselves: KRaft nodes that
//! are broker and controller at once, on loopback ports, each in its own
//! temporary directory, from the jars `scripts/kafka.sh` keeps in a cache
//! folder (`RECON_TEST_KAFKA_LIBS`).
//!
//! A node's log directory survives [`KafkaCluster::restart`], so a test
//! can kill a broker (SIGKILL) or restart it and find
//! its records and committed offsets again. A [`KafkaCluster`] is one
//! node (most tests) or three (replication factor 3, `min.insync.replicas`
//! 2). Every node has a plaintext listener (inter-broker traffic and the
//! harness's own administration); [`BrokerSecurity`] adds a TLS or
//! SASL/SCRAM-over-TLS listener and the `StandardAuthorizer`, the way an
//! operator would.

use crate::tls::{CertifiedFiles, TestCa};
use anyhow::{Context, bail};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// Environment variable naming the folder of the broker's jars.
pub const KAFKA_LIBS_VAR: &str = "RECON_TEST_KAFKA_LIBS";

/// The Kafka version `scripts/kafka.sh` fetches (also in `tests/kafka/pom.xml`).
pub const KAFKA_VERSION: &str = "4.1.1";

/// Heap and collector of every broker JVM: small, so that several brokers
/// fit beside the builds on a 2-core machine.
const JVM_OPTIONS: [&str; 3] = [
    "-Xmx384m",
    "-XX:+UseSerialGC",
    "-XX:+ExitOnOutOfMemoryError",
];

/// How long a node may take to answer a metadata request after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The name of the secure listener [`BrokerSecurity`] adds.
const SECURE_LISTENER: &str = "SECURE";

/// What the secure listener asks of clients. The plaintext listener is
/// there in every case (inter-broker traffic, the harness's setup); clients
/// under test connect to [`KafkaCluster::secure_bootstrap_servers`].
#[derive(Debug, Clone, Default)]
pub struct BrokerSecurity {
    /// A TLS listener with this server certificate (from the test CA whose
    /// certificate is `ca`).
    pub tls: Option<BrokerTls>,
    /// SASL/SCRAM-SHA-512 over that TLS listener (`SASL_SSL`); users are
    /// added with [`KafkaCluster::add_scram_user`].
    pub scram: bool,
    /// The `StandardAuthorizer`: nothing is allowed without an ACL, except
    /// to the super user the harness administers with (the plaintext
    /// listener's `ANONYMOUS`). ACLs are added with [`KafkaCluster::add_acl`].
    pub authorizer: bool,
}

/// The TLS listener's certificate and the CA that signed it.
#[derive(Debug, Clone)]
pub struct BrokerTls {
    /// The CA certificate (PEM).
    pub ca: PathBuf,
    /// The broker's certificate and key (PEM, PKCS#8).
    pub server: CertifiedFiles,
}

impl BrokerTls {
    /// A server certificate for `127.0.0.1` from `ca`.
    pub fn from_ca(ca: &TestCa) -> anyhow::Result<Self> {
        Ok(Self {
            ca: ca.certificate(),
            server: ca.server("kafka")?,
        })
    }
}

/// One KRaft node's ports.
#[derive(Debug, Clone, Copy)]
struct NodePorts {
    plaintext: u16,
    controller: u16,
    secure: Option<u16>,
}

/// One running (or killed) broker+controller process.
struct Node {
    id: u32,
    ports: NodePorts,
    directory: tempfile::TempDir,
    child: Option<Child>,
}

impl Node {
    fn properties(&self) -> PathBuf {
        self.directory.path().join("server.properties")
    }

    fn log_path(&self) -> PathBuf {
        self.directory.path().join("broker.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .context("open broker log")?;
        let log4j = self.directory.path().join("log4j2.properties");
        let child = Command::new("java")
            .args(JVM_OPTIONS)
            .arg(format!("-Dlog4j2.configurationFile={}", log4j.display()))
            .arg("-cp")
            .arg(classpath()?)
            .arg("kafka.Kafka")
            .arg(self.properties())
            .current_dir(self.directory.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("clone log handle")?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("start the Kafka broker (java kafka.Kafka)")?;
        self.child = Some(child);
        Ok(())
    }

    async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await.context("kill broker")?;
        }
        Ok(())
    }
}

/// Several KRaft nodes that form one cluster; killed when dropped.
pub struct KafkaCluster {
    nodes: Vec<Node>,
    security: BrokerSecurity,
}

impl KafkaCluster {
    /// One plaintext node on free loopback ports, answering requests.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_nodes(1, BrokerSecurity::default()).await
    }

    /// One node with a secure listener as `security` says.
    pub async fn start_secure(security: BrokerSecurity) -> anyhow::Result<Self> {
        Self::start_nodes(1, security).await
    }

    /// `count` nodes forming one quorum, every one a broker and a
    /// controller, each with a secure listener as `security` says; topics
    /// default to `min(count, 3)` replicas and `min.insync.replicas` one
    /// less (at least 1).
    pub async fn start_nodes(count: u32, security: BrokerSecurity) -> anyhow::Result<Self> {
        let mut nodes = Vec::new();
        for id in 1..=count {
            let ports = NodePorts {
                plaintext: crate::free_port()?,
                controller: crate::free_port()?,
                secure: if security.tls.is_some() {
                    Some(crate::free_port()?)
                } else {
                    None
                },
            };
            let directory = tempfile::tempdir().context("create broker directory")?;
            nodes.push(Node {
                id,
                ports,
                directory,
                child: None,
            });
        }
        let mut cluster = Self { nodes, security };
        let cluster_id = cluster.format().await?;
        for node in &mut cluster.nodes {
            node.spawn()?;
        }
        tracing::info!(%cluster_id, nodes = count, "kafka cluster starting");
        cluster.wait_until_serving(count as usize).await?;
        Ok(cluster)
    }

    /// Writes every node's configuration and formats its storage with one
    /// fresh cluster id (`kafka-storage format`).
    async fn format(&self) -> anyhow::Result<String> {
        let cluster_id = run_tool(
            &["kafka.tools.StorageTool", "random-uuid"],
            Duration::from_secs(60),
        )
        .await?
        .lines()
        .last()
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .context("kafka-storage random-uuid printed no id")?
        .to_owned();
        let voters = self
            .nodes
            .iter()
            .map(|node| format!("{}@127.0.0.1:{}", node.id, node.ports.controller))
            .collect::<Vec<_>>()
            .join(",");
        let mut formats = Vec::new();
        for node in &self.nodes {
            std::fs::write(node.properties(), self.node_properties(node, &voters))
                .context("write server.properties")?;
            std::fs::write(
                node.directory.path().join("log4j2.properties"),
                LOG4J_PROPERTIES,
            )
            .context("write log4j2.properties")?;
            let properties = node.properties().display().to_string();
            let arguments = [
                "kafka.tools.StorageTool",
                "format",
                "--ignore-formatted",
                "-t",
                &cluster_id,
                "-c",
                &properties,
            ]
            .map(str::to_owned);
            formats.push(async move {
                let arguments: Vec<&str> = arguments.iter().map(String::as_str).collect();
                run_tool(&arguments, Duration::from_secs(120)).await
            });
        }
        for formatted in futures::future::join_all(formats).await {
            formatted.context("format the broker's storage")?;
        }
        Ok(cluster_id)
    }

    fn node_properties(&self, node: &Node, voters: &str) -> String {
        let replicas = self.nodes.len().min(3);
        let min_insync = replicas.saturating_sub(1).max(1);
        let plaintext = node.ports.plaintext;
        let controller = node.ports.controller;
        let mut listeners =
            format!("PLAINTEXT://127.0.0.1:{plaintext},CONTROLLER://127.0.0.1:{controller}");
        let mut advertised = format!("PLAINTEXT://127.0.0.1:{plaintext}");
        let mut protocols = "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT".to_owned();
        let mut text = String::new();
        if let (Some(secure), Some(tls)) = (node.ports.secure, &self.security.tls) {
            let _ = write!(listeners, ",{SECURE_LISTENER}://127.0.0.1:{secure}");
            let _ = write!(advertised, ",{SECURE_LISTENER}://127.0.0.1:{secure}");
            let protocol = if self.security.scram {
                "SASL_SSL"
            } else {
                "SSL"
            };
            let _ = write!(protocols, ",{SECURE_LISTENER}:{protocol}");
            text.push_str(&tls_properties(tls));
            if self.security.scram {
                text.push_str(
                    "sasl.enabled.mechanisms=SCRAM-SHA-512\n\
                     listener.name.secure.scram-sha-512.sasl.jaas.config=\
                     org.apache.kafka.common.security.scram.ScramLoginModule required;\n",
                );
            }
        }
        if self.security.authorizer {
            text.push_str(
                "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer\n\
                 super.users=User:ANONYMOUS\n",
            );
        }
        let data = node.directory.path().join("data");
        format!(
            "process.roles=broker,controller\n\
             node.id={id}\n\
             listeners={listeners}\n\
             advertised.listeners={advertised}\n\
             listener.security.protocol.map={protocols}\n\
             inter.broker.listener.name=PLAINTEXT\n\
             controller.listener.names=CONTROLLER\n\
             controller.quorum.voters={voters}\n\
             log.dirs={data}\n\
             default.replication.factor={replicas}\n\
             min.insync.replicas={min_insync}\n\
             offsets.topic.replication.factor={replicas}\n\
             offsets.topic.num.partitions=4\n\
             transaction.state.log.replication.factor={replicas}\n\
             transaction.state.log.min.isr={min_insync}\n\
             share.coordinator.state.topic.replication.factor={replicas}\n\
             share.coordinator.state.topic.min.isr={min_insync}\n\
             group.initial.rebalance.delay.ms=0\n\
             auto.create.topics.enable=false\n\
             {text}",
            id = node.id,
            data = data.display(),
        )
    }

    /// Waits until a metadata request on the plaintext listeners lists
    /// `brokers` brokers.
    async fn wait_until_serving(&mut self, brokers: usize) -> anyhow::Result<()> {
        let bootstrap = self.plaintext_bootstrap_servers();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let bootstrap = bootstrap.clone();
            let listed = tokio::task::spawn_blocking(move || count_brokers(&bootstrap))
                .await
                .context("join the metadata request")?;
            match listed {
                Ok(listed) if listed >= brokers => return Ok(()),
                Ok(_) | Err(_) if Instant::now() < deadline => {
                    self.fail_if_exited()?;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Ok(listed) => bail!(
                    "{listed} of {brokers} Kafka brokers answered after {START_TIMEOUT:?}; logs:\n{}",
                    self.logs()
                ),
                Err(error) => bail!(
                    "the Kafka broker did not answer after {START_TIMEOUT:?} ({error:#}); logs:\n{}",
                    self.logs()
                ),
            }
        }
    }

    /// Fails with the logs if a node that was started has exited.
    fn fail_if_exited(&mut self) -> anyhow::Result<()> {
        let mut exited = None;
        for node in &mut self.nodes {
            let Some(child) = node.child.as_mut() else {
                continue;
            };
            if let Some(status) = child.try_wait().context("check the broker process")? {
                node.child = None;
                exited = Some((node.id, status));
                break;
            }
        }
        match exited {
            Some((id, status)) => bail!(
                "Kafka broker {id} exited ({status}); logs:\n{}",
                self.logs()
            ),
            None => Ok(()),
        }
    }

    /// Every node's log, for a failure message.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        for node in &self.nodes {
            let log = node.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            let _ = writeln!(text, "--- broker {} ---", node.id);
            for line in tail.into_iter().rev() {
                let _ = writeln!(text, "{line}");
            }
        }
        text
    }

    /// `host:port,…` of the plaintext listeners, for `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> String {
        self.plaintext_bootstrap_servers()
    }

    fn plaintext_bootstrap_servers(&self) -> String {
        self.nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.ports.plaintext))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `host:port,…` of the secure listeners.
    pub fn secure_bootstrap_servers(&self) -> anyhow::Result<String> {
        let mut servers = Vec::new();
        for node in &self.nodes {
            let port = node
                .ports
                .secure
                .context("the broker has no secure listener")?;
            servers.push(format!("127.0.0.1:{port}"));
        }
        Ok(servers.join(","))
    }

    /// Partitions of `topic` (0 while it does not exist), as the plaintext
    /// listener's metadata shows them.
    pub async fn topic_partitions(&self, topic: &str) -> anyhow::Result<usize> {
        let bootstrap = self.plaintext_bootstrap_servers();
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .create()
                .context("create a metadata client")?;
            let metadata = consumer
                .fetch_metadata(Some(&topic), Duration::from_secs(5))
                .context("fetch metadata")?;
            Ok(metadata
                .topics()
                .iter()
                .filter(|listed| listed.name() == topic && listed.error().is_none())
                .map(|listed| listed.partitions().len())
                .sum())
        })
        .await
        .context("join the metadata request")?
    }

    /// How many nodes the cluster has.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Kills every node with SIGKILL and waits for them to exit.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        for node in &mut self.nodes {
            node.kill().await?;
        }
        Ok(())
    }

    /// Kills every node and starts them again on the same ports and
    /// storage; returns once they answer.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill().await?;
        for node in &mut self.nodes {
            node.spawn()?;
        }
        self.wait_until_serving(self.nodes.len()).await
    }

    /// Kills node `index` (0-based) with SIGKILL.
    pub async fn kill_node(&mut self, index: usize) -> anyhow::Result<()> {
        self.node_mut(index)?.kill().await
    }

    /// Starts node `index` again after [`KafkaCluster::kill_node`]; returns
    /// once every node answers.
    pub async fn start_node(&mut self, index: usize) -> anyhow::Result<()> {
        self.node_mut(index)?.spawn()?;
        self.wait_until_serving(self.nodes.len()).await
    }

    /// Whether node `index` runs (was not killed).
    pub fn node_running(&self, index: usize) -> bool {
        self.nodes
            .get(index)
            .is_some_and(|node| node.child.is_some())
    }

    fn node_mut(&mut self, index: usize) -> anyhow::Result<&mut Node> {
        self.nodes.get_mut(index).context("no such broker")
    }

    /// Creates (or updates) SCRAM-SHA-512 credentials for `user`, with
    /// `kafka-configs`, and waits until the secure listener accepts them.
    pub async fn add_scram_user(&self, user: &str, password: &str) -> anyhow::Result<()> {
        let bootstrap = self.plaintext_bootstrap_servers();
        let credentials = format!("SCRAM-SHA-512=[iterations=4096,password={password}]");
        run_tool(
            &[
                "kafka.admin.ConfigCommand",
                "--bootstrap-server",
                &bootstrap,
                "--alter",
                "--add-config",
                &credentials,
                "--entity-type",
                "users",
                "--entity-name",
                user,
            ],
            Duration::from_secs(60),
        )
        .await
        .with_context(|| format!("add SCRAM user {user}"))?;
        // The credential reaches every broker through the metadata log; wait
        // until a client authenticates with it.
        let mut config = self.secure_client_config()?;
        config
            .set("sasl.username", user)
            .set("sasl.password", password);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let attempt = config.clone();
            let answered = tokio::task::spawn_blocking(move || metadata(&attempt))
                .await
                .context("join the metadata request")?;
            match answered {
                Ok(_) => return Ok(()),
                Err(error) if Instant::now() > deadline => {
                    return Err(error).context(format!("SCRAM user {user} is not accepted"));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    /// Adds an ACL with `kafka-acls` (e.g. `["--allow-principal",
    /// "User:alice", "--operation", "Read", "--topic", "t"]`).
    pub async fn add_acl(&self, arguments: &[&str]) -> anyhow::Result<()> {
        let bootstrap = self.plaintext_bootstrap_servers();
        let mut command = vec![
            "org.apache.kafka.tools.AclCommand",
            "--bootstrap-server",
            &bootstrap,
            "--add",
            "--force",
        ];
        command.extend_from_slice(arguments);
        run_tool(&command, Duration::from_secs(60))
            .await
            .with_context(|| format!("add ACL {arguments:?}"))?;
        Ok(())
    }

    /// The librdkafka properties a client needs for the secure listener
    /// (`security.protocol`, the CA; `sasl.mechanism` with SCRAM), without
    /// credentials.
    pub fn secure_client_properties(&self) -> anyhow::Result<Vec<(String, String)>> {
        let tls = self
            .security
            .tls
            .as_ref()
            .context("the broker has no secure listener")?;
        let mut properties = vec![
            (
                "bootstrap.servers".to_owned(),
                self.secure_bootstrap_servers()?,
            ),
            ("ssl.ca.location".to_owned(), tls.ca.display().to_string()),
        ];
        if self.security.scram {
            properties.push(("security.protocol".to_owned(), "SASL_SSL".to_owned()));
            properties.push(("sasl.mechanism".to_owned(), "SCRAM-SHA-512".to_owned()));
        } else {
            properties.push(("security.protocol".to_owned(), "SSL".to_owned()));
        }
        Ok(properties)
    }

    fn secure_client_config(&self) -> anyhow::Result<ClientConfig> {
        let mut config = ClientConfig::new();
        for (key, value) in self.secure_client_properties()? {
            config.set(key, value);
        }
        Ok(config)
    }
}

fn tls_properties(tls: &BrokerTls) -> String {
    format!(
        "listener.name.secure.ssl.keystore.type=PEM\n\
         listener.name.secure.ssl.keystore.certificate.chain={chain}\n\
         listener.name.secure.ssl.keystore.key={key}\n\
         listener.name.secure.ssl.truststore.type=PEM\n\
         listener.name.secure.ssl.truststore.certificates={ca}\n\
         listener.name.secure.ssl.endpoint.identification.algorithm=\n",
        chain = pem_property(&tls.server.certificate),
        key = pem_property(&tls.server.key),
        ca = pem_property(&tls.ca),
    )
}

/// A PEM file's text as one Java properties value (line ends escaped).
fn pem_property(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .trim()
        .replace('\n', "\\n\\\n")
}

/// Brokers listed by a metadata request to `bootstrap` (plaintext).
fn count_brokers(bootstrap: &str) -> anyhow::Result<usize> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    metadata(&config)
}

/// Brokers listed by a metadata request with `config`.
fn metadata(config: &ClientConfig) -> anyhow::Result<usize> {
    let consumer: BaseConsumer = config.create().context("create a metadata client")?;
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(3))
        .context("fetch metadata")?;
    Ok(metadata.brokers().len())
}

/// Runs one of Kafka's command-line tools (its main class and arguments)
/// and returns what it printed; fails with its output if it exits non-zero.
pub async fn run_tool(arguments: &[&str], timeout: Duration) -> anyhow::Result<String> {
    let output = Command::new("java")
        .args(["-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"])
        .arg("-cp")
        .arg(classpath()?)
        .args(arguments)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(timeout, output)
        .await
        .with_context(|| format!("{} did not finish in {timeout:?}", arguments[0]))?
        .with_context(|| format!("run {}", arguments[0]))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "{} failed ({}):\n{stdout}\n{}",
            arguments[0],
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(stdout)
}

/// The broker's class path: `$RECON_TEST_KAFKA_LIBS/*`, else the cache
/// folder `scripts/kafka.sh` fills.
pub fn classpath() -> anyhow::Result<String> {
    let libs = match std::env::var(KAFKA_LIBS_VAR) {
        Ok(path) if !path.is_empty() => PathBuf::from(path),
        _ => default_libs()?,
    };
    if !libs
        .join(format!("kafka_2.13-{KAFKA_VERSION}.jar"))
        .is_file()
    {
        bail!(
            "no Kafka {KAFKA_VERSION} jars in {}: run scripts/kafka.sh libs (or scripts/test.sh), \
             which fetches them from Maven Central",
            libs.display()
        );
    }
    Ok(format!("{}/*", libs.display()))
}

fn default_libs() -> anyhow::Result<PathBuf> {
    let cache = std::env::var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .context("neither XDG_CACHE_HOME nor HOME is set")?;
    Ok(cache.join(format!("recon-kafka/{KAFKA_VERSION}/libs")))
}

/// The broker's logging (also `scripts/kafka.sh run`'s): warnings and its
/// own start and stop lines, to `broker.log` through standard output.
const LOG4J_PROPERTIES: &str = include_str!("../kafka/log4j2.properties");

/// `session.timeout.ms` of recon's consumers (set in recon-kafka's
/// consumer).
pub const CONSUMER_SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// Waits until something accepts TCP connections on a loopback port.
pub async fn wait_for_port(port: u16, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("nothing listens on 127.0.0.1:{port} after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
