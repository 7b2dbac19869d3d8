//! The client WebSocket (`GET /client/v1/socket`): a session (open = online, close = offline
//! after the grace) kept alive by WebSocket pings and `ping` messages, with subscriptions to
//! other users' reachability (protocol: docs/ARCHITECTURE.md §3.4).
//!
//! The token is checked before the upgrade. Every client message may carry an `id`, echoed in
//! the answer. Bad messages get an `error` (never a silent drop); a frame over the size limit
//! closes the socket with 1009; a reader too slow for its bounded queue is disconnected; an
//! expired token closes it with 4001 unless `updateToken` arrived; a revoked API key (the one
//! that signed the token) closes it with 4003 within about a second (`client::revocation`).
//!
//! May depend on: actix-web, actix-ws, tokio, serde_json, presence, realtime, tokens, domain,
//! usecases, api::{client::auth, common, errors, native::views}.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::{CloseCode, CloseReason, Session};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::auth::{authenticate_once, header_token, query_token, token_error};
use super::revocation::{CLOSE_REVOKED, Watched};
use crate::api::common::bindings::new_binding;
use crate::api::errors::ApiError;
use crate::api::native::views::{binding_json, descriptor_json};
use crate::api::params::Params;
use crate::api::state::AppState;
use crate::domain::presence::{ServicePresence, format_session_id, parse_session_id};
use crate::domain::service::Service;
use crate::domain::user::UserKey;
use crate::presence::HeldSession;
use crate::realtime::hub::SubscribeRefused;
use crate::realtime::mailbox::{Mailbox, Next, Stop};
use crate::tokens::ClientGrant;
use crate::usecases::SocketConnection;

/// Largest frame accepted.
pub const MAX_FRAME: usize = 64 * 1024;
/// Messages queued for a socket before it counts as too slow.
pub const QUEUE: usize = 256;
/// Snapshots one subscription may take while events keep overtaking them (each attempt is
/// one quick read; needing a second is already rare).
const SNAPSHOT_ATTEMPTS: usize = 10;
/// Identities one `subscribe` may name.
const MAX_PER_MESSAGE: usize = 100;

/// `GET /client/v1/socket?token=…[&resume=SE…]`.
pub async fn open_socket(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    // The one route that reads `?token=`: browsers cannot set headers on an upgrade.
    let token = header_token(&req)
        .map(str::to_string)
        .or_else(|| query_token(&req))
        .ok_or_else(|| token_error(crate::tokens::TokenError::InvalidToken))?;
    let (grant, service) = authenticate_once(&state, &token)?;
    // The socket opens a session: one write, charged before the upgrade.
    state
        .client_writes
        .charge(&service.sid, &grant.identity, std::time::Instant::now())?;
    let resume = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "resume")
        .and_then(|(_, v)| parse_session_id(&v));
    state
        .presence
        .check_room(&service.sid, &grant.identity, resume)?;
    let (response, session, stream) = actix_ws::handle(&req, body)
        .map_err(|_| ApiError::bad_param("Upgrade", "a WebSocket upgrade is required"))?;
    let stream = stream
        .max_frame_size(MAX_FRAME)
        .aggregate_continuations()
        .max_continuation_size(MAX_FRAME);
    let socket = Socket {
        state,
        grant,
        service,
        session,
        stream,
        conn: 0,
        held: HeldSession { id: 0, holder: 0 },
        key: None,
        mailbox: None,
    };
    // The task is `run`'s future itself: wrapping it in another async block would store the
    // socket's fields twice for as long as the socket lives.
    actix_web::rt::spawn(socket.run(resume));
    Ok(response)
}

struct Socket {
    state: web::Data<AppState>,
    grant: Arc<ClientGrant>,
    service: Arc<Service>,
    session: Session,
    /// What the client sends. Held here rather than passed to `serve`: an argument moved
    /// from one async fn into another is stored in both futures.
    stream: actix_ws::AggregatedMessageStream,
    conn: u64,
    /// The session this socket keeps alive, and which open of it this socket made.
    held: HeldSession,
    /// Its registration with the revocation check, from `ready` to the end.
    key: Option<Watched>,
    /// Its hub mailbox (updates, replies queued behind them, and why it must close), from
    /// `ready` to the end.
    mailbox: Option<Arc<Mailbox>>,
}

/// How a socket's start went.
enum Started {
    /// The session was refused; the socket is closed.
    Refused,
    /// The client left before `ready` reached it.
    Gone,
    Ready(Arc<Mailbox>, ServicePresence),
}

/// Why a socket's loop ended.
enum End {
    ClientClosed,
    Close(CloseCode, String),
    /// The server is stopping: the session stays live (it is flushed with its expiry), so a
    /// client that reconnects with `resume` to the restarted server never goes offline.
    ServerShutdown,
}

impl Socket {
    async fn send(&mut self, value: Value) -> bool {
        self.session.text(value.to_string()).await.is_ok()
    }

    async fn error(&mut self, id: &Value, code: u32, message: &str) -> bool {
        self.send(json!({"type": "error", "id": id, "code": code, "message": message}))
            .await
    }

    /// The socket's life: start (session, registration, `ready`), serve, finish. The start and
    /// finish are boxed so that their state is not part of an idle socket's task.
    async fn run(mut self, resume: Option<u64>) {
        let end = match Box::pin(self.start(resume)).await {
            Started::Refused => return,
            Started::Gone => End::ClientClosed,
            Started::Ready(mailbox, settings) => self.serve(mailbox, settings).await,
        };
        Box::pin(self.finish(end)).await;
    }

    /// Opens (or resumes) the session, registers with the hub and sends `ready`.
    async fn start(&mut self, resume: Option<u64>) -> Started {
        let connected = self
            .state
            .reachability
            .connect_socket(
                &self.service,
                &self.grant.identity,
                self.grant.endpoint_id.as_deref(),
                resume,
                QUEUE,
            )
            .await;
        let SocketConnection { held, registration } = match connected {
            Ok(opened) => opened,
            Err(e) => {
                // Another session took the last place after the check before the upgrade.
                let reason = CloseReason {
                    code: CloseCode::Policy,
                    description: Some(e.to_string()),
                };
                let _ = self.session.clone().close(Some(reason)).await;
                return Started::Refused;
            }
        };
        self.held = held;
        self.key = Some(
            self.state
                .key_watch
                .watch(&self.grant.key_sid, &registration.mailbox),
        );
        self.conn = registration.id;
        self.mailbox = Some(registration.mailbox.clone());
        let settings = ServicePresence::of(&self.service, self.state.presence.defaults());
        let ready = json!({
            "type": "ready",
            "session_id": format_session_id(held.id),
            "identity": self.grant.identity,
            "service_sid": self.service.sid,
            "reachability_enabled": self.service.reachability_enabled,
            "ping_interval": settings.ping_interval_ms,
            "session_ttl": settings.session_ttl_ms,
            "resumed": resume == Some(held.id),
        });
        if self.send(ready).await {
            Started::Ready(registration.mailbox, settings)
        } else {
            Started::Gone
        }
    }

    /// Leaves the hub, ends the session unless the server is stopping, and closes the socket.
    async fn finish(&mut self, end: End) {
        if let Some(key) = self.key.take() {
            self.state.key_watch.unwatch(&key);
        }
        // A restarting server keeps the session for the client to resume; otherwise it ends —
        // released, not closed: if the client already reconnected and resumed this session,
        // the session is the new connection's and stays live.
        let keep_session = matches!(end, End::ServerShutdown);
        self.state.reachability.disconnect_socket(
            self.conn,
            &self.service.sid,
            &self.grant.identity,
            self.held,
            keep_session,
        );
        let end = match end {
            End::ServerShutdown => End::Close(
                CloseCode::Away,
                "server restarting; reconnect with resume".into(),
            ),
            other => other,
        };
        if let End::Close(code, reason) = end {
            let _ = self
                .session
                .clone()
                .close(Some(CloseReason {
                    code,
                    description: Some(reason),
                }))
                .await;
        }
    }

    /// The socket's loop. Every await inside a branch is boxed: an idle socket's task is
    /// sized by what it waits on (the `select!`), not by the largest handler it may run. It
    /// waits on four things only — the client, its mailbox (updates and any reason to close:
    /// slow consumer, revoked key, lapsed cluster lease), the server's shutdown, and one timer
    /// for both the next keepalive check and the token's expiry — since an idle socket's
    /// memory is mostly what it waits on (see `realtime::mailbox`).
    async fn serve(&mut self, mailbox: Arc<Mailbox>, settings: ServicePresence) -> End {
        let interval = Duration::from_millis(settings.ping_interval_ms.max(100));
        let mut check_at = Instant::now() + interval;
        let mut expires_at = self.grant.expires_at;
        let mut expiry = expiry_instant(expires_at);
        let timer = tokio::time::sleep_until(check_at.min(expiry));
        tokio::pin!(timer);
        loop {
            if self.grant.expires_at != expires_at {
                // `updateToken` moved the expiry.
                expires_at = self.grant.expires_at;
                expiry = expiry_instant(expires_at);
                timer.as_mut().reset(check_at.min(expiry));
            }
            tokio::select! {
                message = self.stream.next() => match message {
                    None => return End::ClientClosed,
                    Some(Ok(actix_ws::AggregatedMessage::Text(text))) => {
                        self.keep_alive();
                        if !Box::pin(self.handle(&text)).await {
                            return End::ClientClosed;
                        }
                    }
                    Some(Ok(actix_ws::AggregatedMessage::Ping(bytes))) => {
                        self.keep_alive();
                        if Box::pin(self.session.pong(&bytes)).await.is_err() {
                            return End::ClientClosed;
                        }
                    }
                    Some(Ok(actix_ws::AggregatedMessage::Pong(_))) => self.keep_alive(),
                    Some(Ok(actix_ws::AggregatedMessage::Binary(_))) => {
                        if !Box::pin(self.error(&Value::Null, 20001, "binary frames are not supported; send JSON text")).await {
                            return End::ClientClosed;
                        }
                    }
                    Some(Ok(actix_ws::AggregatedMessage::Close(_))) => return End::ClientClosed,
                    Some(Err(actix_ws::ProtocolError::Overflow)) => {
                        let _ = Box::pin(self.error(&Value::Null, 20001, &format!("frame larger than {MAX_FRAME} bytes"))).await;
                        return End::Close(CloseCode::Size, "frame too large".into());
                    }
                    Some(Err(_)) => return End::Close(CloseCode::Protocol, "protocol error".into()),
                },
                next = mailbox.next() => match next {
                    Next::Message(text) => {
                        // A reader that stopped reading blocks this send; a stop (its
                        // mailbox overflowing meanwhile) ends the wait.
                        tokio::select! {
                            sent = Box::pin(self.session.text(&*text)) => if sent.is_err() { return End::ClientClosed },
                            reason = Box::pin(mailbox.until_stopped()) => return closing(reason),
                        }
                    }
                    Next::Stop(Stop::SlowConsumer) => {
                        let _ = Box::pin(tokio::time::timeout(Duration::from_secs(1), self.error(&Value::Null, 20429, "too many undelivered messages: read faster"))).await;
                        return closing(Stop::SlowConsumer);
                    }
                    Next::Stop(reason) => return closing(reason),
                },
                _ = self.state.shutdown.cancelled() => return End::ServerShutdown,
                () = &mut timer => {
                    let now = Instant::now();
                    if now >= expiry {
                        return End::Close(CloseCode::Other(4001), "token expired".into());
                    }
                    if now >= check_at {
                        // The engine expires a silent session; then the socket has nothing
                        // to keep.
                        if !self.state.presence.is_live(self.held.id) {
                            return End::Close(CloseCode::Other(4000), "session expired".into());
                        }
                        check_at = now + interval;
                    }
                    timer.as_mut().reset(check_at.min(expiry));
                }
            }
        }
    }

    fn keep_alive(&self) {
        let _ = self
            .state
            .presence
            .ping(&self.service.sid, &self.grant.identity, self.held.id);
    }

    /// Handles one text message; false when the socket is gone.
    async fn handle(&mut self, text: &str) -> bool {
        let message: Value = match serde_json::from_str(text) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                return self
                    .error(
                        &Value::Null,
                        20001,
                        "messages must be JSON objects with a type",
                    )
                    .await;
            }
        };
        let id = message.get("id").cloned().unwrap_or(Value::Null);
        match message["type"].as_str().unwrap_or_default() {
            "ping" => self.send(json!({"type": "pong", "id": id})).await,
            "subscribe" => self.subscribe(&id, &message).await,
            "unsubscribe" => {
                for identity in identities(&message).unwrap_or_default() {
                    self.state.hub.unsubscribe(self.conn, &identity);
                }
                // Behind the updates queued before the unsubscribe: the last word is this.
                self.queue(json!({"type": "unsubscribed", "id": id}));
                true
            }
            "register_push" => self.register_push(&id, &message).await,
            "updateToken" => self.update_token(&id, &message).await,
            other => {
                self.error(&id, 20001, &format!("unknown message type {other:?}"))
                    .await
            }
        }
    }

    /// Subscribes to each identity from a snapshot. Replies go through this connection's hub
    /// queue, so they stay in order with the updates (see `Hub::subscribe`).
    async fn subscribe(&mut self, id: &Value, message: &Value) -> bool {
        let Some(list) =
            identities(message).filter(|l| !l.is_empty() && l.len() <= MAX_PER_MESSAGE)
        else {
            return self
                .error(id, 20001, "subscribe needs identities: 1 to 100 strings")
                .await;
        };
        for identity in list {
            if let Err((code, message)) = self.subscribe_one(id, &identity) {
                self.queue(json!({"type": "error", "id": id, "code": code, "message": message}));
                if code == 20429 {
                    break;
                }
            }
        }
        true
    }

    /// One identity: a snapshot and its horizon, then the subscription from that horizon —
    /// again with a fresh snapshot if the hub published newer events meanwhile.
    fn subscribe_one(&self, id: &Value, identity: &str) -> Result<(), (u32, String)> {
        let key = UserKey::Identity(identity.to_string());
        for _ in 0..SNAPSHOT_ATTEMPTS {
            let (user, horizon) = match self.state.store.user_snapshot(&self.service.sid, &key) {
                Ok(Some(found)) => found,
                Ok(None) => return Err((20404, format!("user {identity} not found"))),
                Err(e) => {
                    let e = ApiError::from(e);
                    return Err((e.code, e.message));
                }
            };
            // Re-read the service: the snapshot must use the current reachability flag.
            let service = self
                .state
                .store
                .service(&self.service.sid)
                .ok()
                .flatten()
                .unwrap_or_else(|| self.service.clone());
            let reply = json!({"type": "user", "id": id, "user": descriptor_json(&service, &user)});
            let reply: Arc<str> = reply.to_string().into();
            let message = match self
                .state
                .hub
                .subscribe(self.conn, identity, horizon, &reply)
            {
                Ok(()) => return Ok(()),
                Err(SubscribeRefused::Stale) => continue,
                Err(SubscribeRefused::SocketFull(max)) => {
                    format!("too many subscriptions on this socket (at most {max})")
                }
                Err(SubscribeRefused::IdentityFull(max)) => format!(
                    "too many subscriptions for this identity over all its sockets (at most {max})"
                ),
                Err(SubscribeRefused::Closed) => "the connection is closing".to_string(),
            };
            return Err((20429, message));
        }
        Err((
            20503,
            format!("{identity} changed while its snapshot was read, again and again; retry"),
        ))
    }

    /// Queues a reply behind the updates already queued for this connection.
    fn queue(&self, message: Value) {
        self.state.hub.send(self.conn, &message.to_string().into());
    }

    async fn register_push(&mut self, id: &Value, message: &Value) -> bool {
        if let Err(e) = self.state.client_writes.charge(
            &self.service.sid,
            &self.grant.identity,
            std::time::Instant::now(),
        ) {
            return self.error(id, e.code, &e.message).await;
        }
        let pairs: Vec<(String, String)> =
            ["binding_type", "address", "credential_sid", "endpoint"]
                .iter()
                .filter_map(|k| {
                    message
                        .get(*k)
                        .and_then(Value::as_str)
                        .map(|v| (k.to_string(), v.to_string()))
                })
                .collect();
        let params = Params::from_pairs(pairs);
        let grant = &self.grant;
        let binding = match new_binding(
            &params,
            grant.push_credential_sid.as_deref(),
            grant.endpoint_id.as_deref(),
        ) {
            Ok(b) => b,
            Err(e) => return self.error(id, e.code, &e.message).await,
        };
        match self
            .state
            .reachability
            .register_client_push(&self.service.sid, &grant.identity, binding)
            .await
        {
            Ok(b) => {
                self.send(json!({"type": "push_registered", "id": id, "binding": binding_json(&b)}))
                    .await
            }
            Err(e) => {
                let e = ApiError::from(e);
                self.error(id, e.code, &e.message).await
            }
        }
    }

    async fn update_token(&mut self, id: &Value, message: &Value) -> bool {
        let Some(token) = message["token"].as_str() else {
            return self.error(id, 20101, "updateToken needs a token").await;
        };
        match authenticate_once(&self.state, token) {
            Ok((grant, service))
                if grant.identity == self.grant.identity && service.sid == self.service.sid =>
            {
                let expires_at = grant.expires_at;
                if grant.key_sid != self.grant.key_sid {
                    let watch = &self.state.key_watch;
                    if let Some(mailbox) = &self.mailbox
                        && let Some(old) = self.key.replace(watch.watch(&grant.key_sid, mailbox))
                    {
                        watch.unwatch(&old);
                    }
                }
                self.grant = grant;
                self.send(json!({"type": "tokenUpdated", "id": id, "expires_at": expires_at}))
                    .await
            }
            Ok(_) => {
                self.error(
                    id,
                    20103,
                    "the new token is for another identity or service",
                )
                .await
            }
            Err(e) => self.error(id, e.code, &e.message).await,
        }
    }
}

/// How a socket closes when its mailbox stopped for `reason`.
fn closing(reason: Stop) -> End {
    match reason {
        Stop::SlowConsumer => End::Close(CloseCode::Policy, "slow consumer".into()),
        Stop::Revoked => End::Close(
            CloseCode::Other(CLOSE_REVOKED),
            "credentials revoked".into(),
        ),
        Stop::Lapsed => End::Close(
            CloseCode::Again,
            "this node lost its cluster lease; reconnect".into(),
        ),
    }
}

/// When a token that expires at `expires_at` (Unix seconds) does, on the runtime's clock.
fn expiry_instant(expires_at: i64) -> Instant {
    // At most 30 years ahead: an `Instant` that far is still representable.
    let left = (expires_at - chrono::Utc::now().timestamp()).clamp(0, 30 * 365 * 86_400) as u64;
    Instant::now() + Duration::from_secs(left)
}

fn identities(message: &Value) -> Option<Vec<String>> {
    message["identities"].as_array().map(|a| {
        a.iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    })
}
