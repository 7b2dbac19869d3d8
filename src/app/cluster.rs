//! Routes what other nodes' commits announce to this node's parts: the realtime hub and the
//! event feed re-read from their last id, the service cache drops a changed service (and
//! presence applies its settings), the dispatcher wakes for new deliveries, presence lets go
//! of sessions that moved away and looks for takeovers when a member leaves. A resync (the
//! notices may have been missed) does all of the re-reading at once.
//!
//! May depend on: tokio, domain, presence, storage::cache.

use std::sync::Arc;

use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::domain::cluster::ClusterNotice;
use crate::domain::store::Store;
use crate::presence::Presence;
use crate::storage::cache::ServiceCache;

/// What the notices reach.
pub struct NoticeTargets {
    pub presence: Presence,
    pub store: Arc<dyn Store>,
    pub services: Arc<ServiceCache>,
    /// The feed's live edge (the hub and the SSE feed read on from their own positions).
    pub events: watch::Sender<i64>,
    /// Services whose `serviceUpdated` the hub sends.
    pub hub_services: mpsc::UnboundedSender<String>,
    /// The dispatcher's hint (not its wake: a notice may echo this node's own commit, which
    /// woke it already).
    pub dispatcher: Arc<Notify>,
    /// This node's writer's origin: its own service changes were applied before they were
    /// answered (and, for presence, waited for), so their notices are skipped.
    pub origin: String,
}

/// Handles notices until `stop` or the listener's end.
pub async fn route_notices(
    targets: NoticeTargets,
    mut notices: mpsc::UnboundedReceiver<ClusterNotice>,
    stop: CancellationToken,
) {
    loop {
        let notice = tokio::select! {
            notice = notices.recv() => match notice { Some(n) => n, None => return },
            _ = stop.cancelled() => return,
        };
        match &notice {
            ClusterNotice::Events(last) => {
                targets.events.send_if_modified(|edge| {
                    let newer = *last > *edge;
                    *edge = (*edge).max(*last);
                    newer
                });
            }
            ClusterNotice::Service { origin, sid } if *origin != targets.origin => {
                service_changed(&targets, sid).await;
            }
            ClusterNotice::Service { .. } => {}
            ClusterNotice::Deliveries => targets.dispatcher.notify_one(),
            ClusterNotice::Resync => {
                // Re-read everything a missed notice could have said.
                targets.services.invalidate_all();
                targets.events.send_modify(|_| {});
                targets.dispatcher.notify_one();
            }
            ClusterNotice::SessionMoved { .. } | ClusterNotice::MemberLeft => {}
        }
        targets.presence.on_notice(&notice).await;
    }
}

/// Another node changed (or deleted) a service: drop the cached copy, tell the hub, and apply
/// the settings to this node's sessions.
async fn service_changed(targets: &NoticeTargets, sid: &str) {
    targets.services.invalidate([&sid.to_string()]);
    let _ = targets.hub_services.send(sid.to_string());
    let store = targets.store.clone();
    let owned = sid.to_string();
    let read = tokio::task::spawn_blocking(move || store.service(&owned)).await;
    match read {
        Ok(Ok(Some(service))) => drop(targets.presence.configure(&service)),
        Ok(Ok(None)) => targets.presence.forget_service(sid),
        Ok(Err(e)) => tracing::warn!(error = %e, "reading a service another node changed"),
        Err(e) => tracing::warn!(error = %e, "reading a service another node changed"),
    }
}
