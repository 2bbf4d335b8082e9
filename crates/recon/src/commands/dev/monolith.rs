//! `recon monolith`: serves the reference monolith until SIGTERM and, when
//! Kafka is configured, runs its outbox relay next to the HTTP server. Both
//! stop on the same root token.

use crate::cli::MonolithArgs;
use anyhow::Context;
use recon_monolith::Monolith;
use recon_monolith::relay::{
    ChangeProducer, KafkaConfig, Relay, RelaySettings, ensure_topic_with_retry,
};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long the relay may take to stop after the server did.
const RELAY_STOP_DEADLINE: Duration = Duration::from_secs(10);

pub async fn run(args: MonolithArgs, shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    let auth_token = args.auth_token()?;
    let schema = args.schema.load()?;
    let monolith = Monolith::connect_with_schema(&args.database_url()?, schema)
        .await
        .context("open the monolith database")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listen on {}", args.listen))?;
    let relay = start_relay(&args, &monolith, shutdown.child_token())?;
    let served = monolith
        .serve(listener, auth_token, shutdown.clone())
        .await
        .context("serve the monolith");
    // A server error stops the relay too.
    shutdown.cancel();
    if let Some(relay) = relay {
        match tokio::time::timeout(RELAY_STOP_DEADLINE, relay).await {
            Ok(joined) => joined.context("join the outbox relay")?,
            Err(_) => tracing::warn!("outbox relay did not stop in time"),
        }
    }
    served?;
    Ok(ExitCode::SUCCESS)
}

/// Spawns the outbox relay if Kafka is configured: it ensures the topic
/// exists (retrying while the brokers are unreachable), then publishes.
fn start_relay(
    args: &MonolithArgs,
    monolith: &Monolith,
    shutdown: CancellationToken,
) -> anyhow::Result<Option<JoinHandle<()>>> {
    let Some(bootstrap_servers) = &args.kafka_bootstrap_servers else {
        tracing::info!("no Kafka bootstrap servers configured, outbox relay off");
        return Ok(None);
    };
    let mut config =
        KafkaConfig::new(bootstrap_servers.clone()).with_topic(args.kafka_topic.clone());
    config.properties.extend(args.kafka_properties.resolve()?);
    let settings = RelaySettings {
        batch_size: args.relay_batch_size,
        idle_poll_interval: Duration::from_millis(args.relay_poll_interval_ms),
        ..RelaySettings::default()
    };
    settings.validate().map_err(anyhow::Error::msg)?;
    let producer = ChangeProducer::new(&config).context("create the Kafka producer")?;
    let relay = Relay::new(monolith.clone(), Arc::new(producer), settings);
    let partitions = args.kafka_partitions;
    Ok(Some(tokio::spawn(async move {
        if ensure_topic_with_retry(&config, partitions, &shutdown).await {
            relay.run(shutdown).await;
        }
    })))
}
