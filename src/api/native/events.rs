//! The durable event feed: `GET /api/v1/services/{sid}/events?after=<cursor>&limit=` pages
//! through the event table; with `Accept: text/event-stream` it streams, resuming after
//! `Last-Event-ID` (or `after`), and follows new events as they commit.
//!
//! The stream reads the event table itself after every wake-up, so a reconnect with the last
//! id it saw can never miss or reorder an event.
//!
//! May depend on: actix-web, futures-util, tokio, serde_json, domain, api::{ctx, errors, params}.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::{ACCEPT, CACHE_CONTROL};
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;
use tokio::sync::watch;

use super::views::event_json;
use crate::api::common::ok;
use crate::api::ctx::Ctx;
use crate::api::errors::{ApiError, ApiResult};
use crate::api::params::Params;
use crate::domain::event::Event;
use crate::domain::store::Store;

const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;
const KEEP_ALIVE: Duration = Duration::from_secs(15);

fn cursor(value: Option<&str>, name: &str) -> ApiResult<i64> {
    match value.filter(|v| !v.is_empty()) {
        None => Ok(0),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| ApiError::bad_param(name, "must be an event id from this feed")),
    }
}

pub async fn read_events(
    ctx: Ctx,
    req: HttpRequest,
    sid: web::Path<String>,
    params: Params,
) -> ApiResult {
    let service = ctx.service(&sid)?;
    let wants_stream = req
        .headers()
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    let resume = req
        .headers()
        .get("Last-Event-ID")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty())
        .map(str::to_string);
    let after = match resume.as_deref() {
        Some(id) => cursor(Some(id), "Last-Event-ID")?,
        None => cursor(params.get("after"), "after")?,
    };
    if wants_stream {
        return Ok(stream(ctx, service.sid.clone(), after));
    }
    if let Some(tail) = params.int("tail")? {
        if !(1..=MAX_LIMIT).contains(&tail) {
            return Err(ApiError::bad_param("tail", "must be between 1 and 1000"));
        }
        let events = ctx.store().events_tail(&service.sid, tail as usize)?;
        let next = events.last().map_or(after, |e| e.id);
        let items: Vec<_> = events
            .iter()
            .map(|e| event_json(e, ctx.account_sid()))
            .collect();
        return Ok(ok(
            json!({"events": items, "next_cursor": next.to_string(), "has_more": false}),
        ));
    }
    let limit = params.int("limit")?.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_param("limit", "must be between 1 and 1000"));
    }
    let events = ctx
        .store()
        .events_after(&service.sid, after, limit as usize)?;
    let next = events.last().map_or(after, |e| e.id);
    let items: Vec<_> = events
        .iter()
        .map(|e| event_json(e, ctx.account_sid()))
        .collect();
    Ok(ok(
        json!({"events": items, "next_cursor": next.to_string(), "has_more": items.len() as i64 == limit}),
    ))
}

struct Feed {
    store: Arc<dyn Store>,
    account_sid: String,
    service_sid: String,
    after: i64,
    pending: std::collections::VecDeque<Event>,
    live: watch::Receiver<i64>,
    /// Fired when the server begins a graceful stop: the stream ends so the stop need not wait
    /// for it (the client reconnects with `Last-Event-ID` and misses nothing).
    shutdown: tokio_util::sync::CancellationToken,
}

impl Feed {
    fn frame(&self, e: &Event) -> Bytes {
        let data = event_json(e, &self.account_sid);
        Bytes::from(format!(
            "id: {}\nevent: {}\ndata: {}\n\n",
            e.id,
            e.kind.as_str(),
            data
        ))
    }

    /// The next frame: a buffered event, newly committed ones, or a keep-alive comment.
    async fn next(mut self) -> Option<(Result<Bytes, actix_web::Error>, Self)> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                self.after = event.id;
                let frame = self.frame(&event);
                return Some((Ok(frame), self));
            }
            // Up to 200 rows: read on the blocking pool, never on an HTTP worker thread.
            let (store, sid, after) = (self.store.clone(), self.service_sid.clone(), self.after);
            let read = tokio::task::spawn_blocking(move || store.events_after(&sid, after, 200))
                .await
                .unwrap_or_else(|e| Err(crate::domain::Error::Internal(e.into())));
            match read {
                Ok(events) if !events.is_empty() => {
                    self.pending.extend(events);
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "event feed read failed; ending the stream");
                    return None;
                }
            }
            let changed = tokio::select! {
                changed = tokio::time::timeout(KEEP_ALIVE, self.live.changed()) => changed,
                _ = self.shutdown.cancelled() => return None,
            };
            match changed {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return None,
                Err(_) => return Some((Ok(Bytes::from_static(b": keep-alive\n\n")), self)),
            }
        }
    }
}

fn stream(ctx: Ctx, service_sid: String, after: i64) -> HttpResponse {
    let feed = Feed {
        store: ctx.state.store.clone(),
        account_sid: ctx.account_sid().to_string(),
        service_sid,
        after,
        pending: Default::default(),
        live: ctx.state.events.clone(),
        shutdown: ctx.state.shutdown.clone(),
    };
    let body = futures_util::stream::unfold(feed, Feed::next);
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body)
}
