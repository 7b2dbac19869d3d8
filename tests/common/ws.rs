//! WebSocket helpers for the client socket tests: connect with a token, read the next JSON
//! message (skipping control frames), send one.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens `/client/v1/socket` with the token in the query (the only route that reads it there).
pub async fn connect(s: &super::TestServer, token: &str) -> Ws {
    let url = format!(
        "{}/client/v1/socket?token={token}",
        s.base.replace("http://", "ws://")
    );
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("upgrade");
    ws
}

/// The next JSON message (skipping control frames), or None on close or after `wait`.
pub async fn next_within(ws: &mut Ws, wait: Duration) -> Option<Value> {
    loop {
        match tokio::time::timeout(wait, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(&t).ok(),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            _ => return None,
        }
    }
}

/// The next JSON message, or None on close or after 5 s.
pub async fn next(ws: &mut Ws) -> Option<Value> {
    next_within(ws, Duration::from_secs(5)).await
}

pub async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into()))
        .await
        .expect("send");
}
