//! Listening to the other nodes: a thread with its own connection that LISTENs on the cluster
//! channels and forwards each notification as a [`ClusterNotice`]. PostgreSQL delivers a
//! notification to every connection listening when the transaction that sent it commits, but
//! not to a connection that was down at the time: after every (re)connection the listener
//! sends [`ClusterNotice::Resync`], and whoever acts on notices re-reads what they stand for
//! (the feed from its last id, the sessions this node holds, the services).
//!
//! May depend on: postgres, tokio (channels), domain.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use tokio::sync::mpsc::UnboundedSender;

use super::tls::Tls;
use crate::domain::cluster::ClusterNotice;

/// How often the listener checks that it should still run and that its connection lives.
const POLL: Duration = Duration::from_millis(250);
/// The longest wait between attempts to reconnect.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The listening thread; stops (at its next poll) when dropped or stopped.
pub struct Listener {
    stop: Arc<AtomicBool>,
}

impl Listener {
    /// Starts listening with `config` (over `tls`), forwarding notices to `notices`.
    pub fn start(
        (config, tls): (postgres::Config, Tls),
        notices: UnboundedSender<ClusterNotice>,
    ) -> std::io::Result<Listener> {
        let stop = Arc::new(AtomicBool::new(false));
        let running = stop.clone();
        std::thread::Builder::new()
            .name("reachd-pg-listen".into())
            .spawn(move || run(&config, &tls, &notices, &running))?;
        Ok(Listener { stop })
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(
    config: &postgres::Config,
    tls: &Tls,
    notices: &UnboundedSender<ClusterNotice>,
    stop: &AtomicBool,
) {
    let mut backoff = Duration::from_millis(100);
    while !stop.load(Ordering::Relaxed) {
        match listen(config, tls, notices, stop) {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, "lost the cluster notification connection; reconnecting");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// One connection's life: LISTEN, announce a resync, forward until stopped (`Ok`) or the
/// connection fails (`Err`).
fn listen(
    config: &postgres::Config,
    tls: &Tls,
    notices: &UnboundedSender<ClusterNotice>,
    stop: &AtomicBool,
) -> Result<(), postgres::Error> {
    let mut client = config.connect(tls.clone())?;
    let listens: String = ClusterNotice::CHANNELS
        .iter()
        .map(|c| format!("LISTEN {c};"))
        .collect();
    client.batch_execute(&listens)?;
    if notices.send(ClusterNotice::Resync).is_err() {
        return Ok(());
    }
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        {
            let mut notifications = client.notifications();
            let mut iter = notifications.timeout_iter(POLL);
            while let Some(n) = iter.next()? {
                let Some(notice) = ClusterNotice::parse(n.channel(), n.payload()) else {
                    continue;
                };
                if notices.send(notice).is_err() {
                    return Ok(());
                }
            }
        }
        if client.is_closed() {
            // Surfaces the connection's error.
            client.simple_query("SELECT 1")?;
        }
    }
}
