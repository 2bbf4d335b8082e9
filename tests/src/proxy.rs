//! A loopback TCP proxy that can freeze: it stops moving bytes both ways
//! while connections stay open, which is how a member paused by SIGSTOP, or
//! cut off by a partition, looks to etcd (and etcd to it).

use anyhow::Context;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A running proxy; stops when dropped.
pub struct FreezableProxy {
    /// `http://127.0.0.1:<port>`, to use as an etcd endpoint.
    pub url: String,
    /// The loopback port it listens on.
    pub port: u16,
    frozen: watch::Sender<bool>,
    stop: CancellationToken,
}

impl FreezableProxy {
    /// Listens on a free loopback port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> anyhow::Result<Self> {
        Self::start_on(0, target).await
    }

    /// Listens on loopback port `port` (0: any free one) and forwards to
    /// `target` (e.g. a service that appears on a port a client was already
    /// told about).
    pub async fn start_on(port: u16, target: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .context("bind proxy")?;
        let address = listener.local_addr().context("proxy address")?;
        let url = format!("http://{address}");
        let (frozen, frozen_watch) = watch::channel(false);
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, target, frozen_watch, stop.clone()));
        Ok(Self {
            url,
            port: address.port(),
            frozen,
            stop,
        })
    }

    /// Stops forwarding; bytes in flight stay where they are.
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// Forwards again, starting with the bytes held back.
    pub fn thaw(&self) {
        self.frozen.send_replace(false);
    }
}

impl Drop for FreezableProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    frozen: watch::Receiver<bool>,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((client, _)) = accepted else { continue };
        let Ok(server) = TcpStream::connect(target).await else {
            continue;
        };
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        tokio::spawn(pump(
            client_read,
            server_write,
            frozen.clone(),
            stop.clone(),
        ));
        tokio::spawn(pump(
            server_read,
            client_write,
            frozen.clone(),
            stop.clone(),
        ));
    }
}

/// Copies one direction, holding each chunk back while frozen.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
    stop: CancellationToken,
) {
    let mut buffer = vec![0_u8; 16 * 1024];
    loop {
        let read = tokio::select! {
            _ = stop.cancelled() => return,
            read = from.read(&mut buffer) => read,
        };
        let Ok(length) = read else { return };
        if length == 0 {
            return;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            thawed = frozen.wait_for(|is_frozen| !is_frozen) => if thawed.is_err() { return },
        }
        if to.write_all(&buffer[..length]).await.is_err() {
            return;
        }
    }
}
