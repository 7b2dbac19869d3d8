//! The client side of the socket benchmark: many idle WebSocket sessions from this process.
//! One source address holds at most one connection per local port, so the connections are
//! spread over 127.0.0.2, 127.0.0.3, … (all loopback on Linux), [`PER_SOURCE_ADDRESS`] each.
//! Each sends a WebSocket ping every ping interval, like a real client. Each holds a
//! descriptor here and one in the server, so the open-file limit is raised first (the child
//! inherits it).
//!
//! May depend on: the bench's shared helpers (`super::super`), tokio, tokio-tungstenite,
//! rlimit.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc::UnboundedSender;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::super::*;

/// Connections from one source address: well below the 28,232 ports of Linux's default
/// ephemeral range (32768–60999). Binding to port 0 searches the address's ports in use, so
/// fewer per address also connect faster (18,500 sockets: 3.1 s at 5,000 per address, 6.9 s
/// at 20,000).
const PER_SOURCE_ADDRESS: usize = 5_000;
/// Sockets opening at once.
const OPEN_AT_ONCE: usize = 250;
/// Descriptors kept besides the sockets (logs, the database, the fan-out and setup clients;
/// wrk is a process of its own).
pub const SPARE_DESCRIPTORS: u64 = 1_000;
/// An idle client reads only small control frames and `userUpdated` messages: a small read
/// buffer keeps the client's memory (not what is measured) to a few KB per socket.
const CLIENT_READ_BUFFER: usize = 4_096;

/// Raises this process's open-file limit (soft and hard; root with CAP_SYS_RESOURCE may raise
/// the hard limit up to `fs.nr_open`) so that it, and the reachd child that inherits it, hold
/// `sockets` connections each.
pub fn raise_open_file_limit(sockets: usize) -> anyhow::Result<u64> {
    use rlimit::Resource;
    let wanted = sockets as u64 + SPARE_DESCRIPTORS;
    let (soft, hard) = rlimit::getrlimit(Resource::NOFILE)?;
    if soft >= wanted {
        return Ok(soft);
    }
    let ceiling = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(hard);
    let limit = wanted.min(ceiling).max(hard);
    let refused = rlimit::setrlimit(Resource::NOFILE, limit, limit).err();
    if refused.is_some() {
        rlimit::setrlimit(Resource::NOFILE, hard, hard)?;
    }
    let (soft, _) = rlimit::getrlimit(Resource::NOFILE)?;
    if soft < wanted {
        let why = refused.map_or(format!("fs.nr_open is {ceiling}"), |e| {
            format!("raising the hard limit failed: {e} (it needs CAP_SYS_RESOURCE)")
        });
        anyhow::bail!(
            "{sockets} sockets need an open-file limit of {wanted}, this process has {soft}: \
             {why}; run with a higher hard limit or fewer --sockets (at most {})",
            soft.saturating_sub(SPARE_DESCRIPTORS)
        );
    }
    Ok(soft)
}

/// The source address of the `i`-th connection.
fn source_address(i: usize) -> anyhow::Result<SocketAddr> {
    let host = u8::try_from(2 + i / PER_SOURCE_ADDRESS)
        .context("too many sockets for 127.0.0.0/24 source addresses")?;
    Ok(SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::new(127, 0, 0, host),
        0,
    )))
}

/// Where one socket's session is and what it reports.
pub struct Sockets<'a> {
    pub base: &'a str,
    pub key: &'a ApiKey,
    pub service: &'a str,
    /// The first `subscribers` sockets subscribe to the identity "target".
    pub subscribers: usize,
    /// Each subscriber's reader sends the time a `userUpdated` arrived.
    pub arrived: UnboundedSender<Instant>,
}

impl Sockets<'_> {
    /// Opens `count` sockets, each for its own identity, at most `OPEN_AT_ONCE` opening at a
    /// time, and returns their readers once all are open (abort them to close the sockets).
    pub async fn open(&self, count: usize) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
        let server: SocketAddr = self
            .base
            .trim_start_matches("http://")
            .parse()
            .context("the server's address")?;
        let ws_base = self.base.replace("http://", "ws://");
        let opening = Arc::new(tokio::sync::Semaphore::new(OPEN_AT_ONCE));
        let (opened, mut outcomes) = tokio::sync::mpsc::unbounded_channel();
        let mut readers = Vec::with_capacity(count);
        for i in 0..count {
            let token = mint(self.key, self.service, &format!("ws{i}"))?;
            let url = format!("{ws_base}/client/v1/socket?token={token}");
            let permit = opening.clone().acquire_owned().await?;
            let (opened, arrived) = (opened.clone(), self.arrived.clone());
            let subscribes = i < self.subscribers;
            readers.push(tokio::spawn(async move {
                let ws = open_one(i, server, url, subscribes).await;
                drop(permit);
                let (mut ws, ping_interval) = match ws {
                    Ok(opened_socket) => {
                        let _ = opened.send(Ok(()));
                        opened_socket
                    }
                    Err(e) => {
                        let _ = opened.send(Err(e));
                        return;
                    }
                };
                // Like a real client: a WebSocket ping every ping interval keeps the session
                // alive (the server ends a silent one after its TTL).
                let mut keepalive = tokio::time::interval_at(
                    tokio::time::Instant::now() + ping_interval,
                    ping_interval,
                );
                loop {
                    tokio::select! {
                        message = ws.next() => match message {
                            Some(Ok(Message::Text(text))) if text.contains("userUpdated") => {
                                let _ = arrived.send(Instant::now());
                            }
                            Some(Ok(_)) => {}
                            _ => return,
                        },
                        _ = keepalive.tick() => {
                            if ws.send(Message::Ping(Default::default())).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }));
        }
        for _ in 0..count {
            outcomes.recv().await.context("an opening task ended")??;
        }
        Ok(readers)
    }
}

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Connects socket `i` from its source address, waits for `ready` and, for a subscriber,
/// subscribes to "target" and waits for the snapshot. Returns the socket and the ping
/// interval `ready` announced.
async fn open_one(
    i: usize,
    server: SocketAddr,
    url: String,
    subscribes: bool,
) -> anyhow::Result<(Socket, Duration)> {
    let source = source_address(i)?;
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(source)?;
    let stream = socket
        .connect(server)
        .await
        .with_context(|| format!("connecting socket {i} from {source}"))?;
    let config = WebSocketConfig::default().read_buffer_size(CLIENT_READ_BUFFER);
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await?;
    let ready = ws
        .next()
        .await
        .context("the socket closed before ready")??;
    let ready: serde_json::Value = serde_json::from_str(ready.to_text()?)?;
    let ping_interval = Duration::from_millis(ready["ping_interval"].as_u64().unwrap_or(20_000));
    if subscribes {
        let subscribe = serde_json::json!({"type": "subscribe", "identities": ["target"]});
        ws.send(Message::Text(subscribe.to_string().into())).await?;
        let _snapshot = ws
            .next()
            .await
            .context("the socket closed before the snapshot")??;
    }
    Ok((ws, ping_interval))
}
