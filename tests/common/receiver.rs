//! A webhook receiver on a random port: records every request and answers as told (a status,
//! a status with `Retry-After`, a status after a delay, hang, or close the connection).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    Status(u16),
    RetryAfter(u16, u64),
    /// The status after this many milliseconds (a slow receiver).
    Slow(u16, u64),
    Hang,
    Close,
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
    /// Form body (or, for GET, query) parameters.
    pub fn params(&self) -> Vec<(String, String)> {
        let source = if self.method == "GET" {
            self.target
                .split_once('?')
                .map(|(_, q)| q.as_bytes().to_vec())
                .unwrap_or_default()
        } else {
            self.body.clone()
        };
        url::form_urlencoded::parse(&source).into_owned().collect()
    }
    pub fn param(&self, name: &str) -> Option<String> {
        self.params()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

#[derive(Default)]
struct State {
    requests: Vec<Recorded>,
    plan: VecDeque<Behavior>,
    default: Option<Behavior>,
}

#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        Self::start_on(0).await
    }

    /// Listens on a given port (to bring a "down" receiver up on its old address).
    pub async fn start_on(port: u16) -> Receiver {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve(socket, shared.clone()));
            }
        });
        Receiver { addr, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers the next requests with `behaviors`, in order, then as the default (200).
    pub fn plan(&self, behaviors: &[Behavior]) {
        self.lock().plan.extend(behaviors.iter().copied());
    }

    pub fn set_default(&self, behavior: Behavior) {
        self.lock().default = Some(behavior);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// Waits until `n` requests arrived (panics after `timeout`).
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        let deadline = Instant::now() + timeout;
        loop {
            let requests = self.requests();
            if requests.len() >= n {
                return requests;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {n} requests arrived",
                requests.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Reads the next HTTP/1.1 request from `socket` (`buf` keeps whatever arrived past it, for
/// the next call), stamped with the time it was read in full; None once the connection closed
/// or failed.
pub async fn read_request(socket: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Recorded> {
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        read_more(socket, buf).await?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_string();
    let target = first.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let length = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        read_more(socket, buf).await?;
    }
    let body = buf[head_end..head_end + length].to_vec();
    buf.drain(..head_end + length);
    Some(Recorded {
        method,
        target,
        headers,
        body,
        at: Instant::now(),
    })
}

/// Appends what the socket has next to `buf`; None when it closed or failed.
async fn read_more(socket: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 4096];
    match socket.read(&mut chunk).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}

async fn serve(mut socket: TcpStream, state: Arc<Mutex<State>>) {
    let mut buf = Vec::new();
    while let Some(request) = read_request(&mut socket, &mut buf).await {
        let behavior = {
            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
            s.requests.push(request);
            let default = s.default.unwrap_or(Behavior::Status(200));
            s.plan.pop_front().unwrap_or(default)
        };
        let (status, extra) = match behavior {
            Behavior::Status(s) => (s, String::new()),
            Behavior::RetryAfter(s, secs) => (s, format!("retry-after: {secs}\r\n")),
            Behavior::Slow(s, ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                (s, String::new())
            }
            Behavior::Hang => {
                tokio::time::sleep(Duration::from_secs(120)).await;
                return;
            }
            Behavior::Close => return,
        };
        let response = format!("HTTP/1.1 {status} X\r\ncontent-length: 2\r\n{extra}\r\nok");
        if socket.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}
