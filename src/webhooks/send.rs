//! Sending webhook requests: one shared reqwest client, no redirects, a 5 s timeout for Twilio
//! targets (configurable for native ones), responses read to at most 64 KiB, and an optional
//! guard that refuses private-network addresses (checked at DNS resolution, so the address
//! that is checked is the one connected to).
//!
//! May depend on: reqwest, tokio, domain::webhook, webhooks::render.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::render::Request;
use crate::domain::webhook::SendResult;

/// Twilio's webhook timeout.
pub const TWILIO_TIMEOUT: Duration = Duration::from_secs(5);
/// Most response bytes read.
pub const MAX_RESPONSE: usize = 64 * 1024;
/// Response bytes kept in the attempt log.
pub const LOGGED_RESPONSE: usize = 1024;

/// What one attempt produced, for the attempt log.
#[derive(Debug, Clone)]
pub struct Sent {
    pub result: SendResult,
    pub latency_ms: i64,
    pub response: Option<String>,
    pub error: Option<String>,
}

/// True for loopback, private, link-local, CGNAT, unique-local and unspecified addresses.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| is_private(IpAddr::V4(v4)))
        }
    }
}

/// DNS resolution that drops private addresses.
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = format!("{}:0", name.as_str());
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host(host)
                .await?
                .filter(|a| !is_private(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(
                    "the host resolves only to private-network addresses, which are not allowed"
                        .into(),
                );
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

pub struct Sender {
    client: reqwest::Client,
    native_timeout: Duration,
    allow_private: bool,
}

impl Sender {
    pub fn new(native_timeout: Duration, allow_private: bool) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            // Keep every connection a burst opened: receivers are few, deliveries many.
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(super::render::USER_AGENT);
        if !allow_private {
            builder = builder.dns_resolver(Arc::new(PublicOnly));
        }
        Ok(Sender {
            client: builder.build()?,
            native_timeout,
            allow_private,
        })
    }

    /// Sends one request; never fails: every problem is described in the result.
    pub async fn send(&self, req: &Request, twilio: bool) -> Sent {
        let started = Instant::now();
        let timeout = if twilio {
            TWILIO_TIMEOUT
        } else {
            self.native_timeout
        };
        let elapsed = |started: Instant| started.elapsed().as_millis() as i64;
        if !self.allow_private {
            let literal = url::Url::parse(&req.url).ok().and_then(|u| {
                u.host_str()
                    .and_then(|h| h.trim_matches(['[', ']']).parse::<IpAddr>().ok())
            });
            if literal.is_some_and(is_private) {
                let result = SendResult {
                    failed_to_connect: true,
                    ..Default::default()
                };
                return Sent {
                    result,
                    latency_ms: 0,
                    response: None,
                    error: Some("private-network address refused".into()),
                };
            }
        }
        let method = if req.method == "GET" {
            reqwest::Method::GET
        } else {
            reqwest::Method::POST
        };
        let mut builder = self.client.request(method, &req.url).timeout(timeout);
        for (name, value) in &req.headers {
            builder = builder.header(*name, value);
        }
        if !req.body.is_empty() {
            builder = builder.body(req.body.clone());
        }
        let mut response = match builder.send().await {
            Ok(r) => r,
            Err(e) => {
                let result = SendResult {
                    timed_out: e.is_timeout(),
                    failed_to_connect: !e.is_timeout(),
                    ..Default::default()
                };
                return Sent {
                    result,
                    latency_ms: elapsed(started),
                    response: None,
                    error: Some(describe(&e)),
                };
            }
        };
        let status = response.status().as_u16();
        let retry_after_secs = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let mut body = Vec::new();
        let mut error = None;
        let mut timed_out = false;
        while body.len() < MAX_RESPONSE {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    body.extend_from_slice(&chunk[..chunk.len().min(MAX_RESPONSE - body.len())])
                }
                Ok(None) => break,
                Err(e) => {
                    timed_out = e.is_timeout();
                    error = Some(describe(&e));
                    break;
                }
            }
        }
        let logged = String::from_utf8_lossy(&body[..body.len().min(LOGGED_RESPONSE)]).into_owned();
        let result = SendResult {
            status: Some(status),
            timed_out,
            failed_to_connect: false,
            retry_after_secs,
        };
        Sent {
            result,
            latency_ms: elapsed(started),
            response: Some(logged),
            error,
        }
    }
}

/// The error and its causes on one line (reqwest's top-level message alone is vague).
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_ranges_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_private(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["8.8.8.8", "203.0.113.9", "2001:4860::8888"] {
            assert!(!is_private(ip.parse().expect("ip")), "{ip}");
        }
    }

    #[tokio::test]
    async fn private_targets_are_refused_when_not_allowed() {
        let sender = Sender::new(Duration::from_secs(1), false).expect("client");
        let req = Request {
            method: "POST".into(),
            url: "http://127.0.0.1:9/x".into(),
            headers: Vec::new(),
            body: b"{}".to_vec(),
        };
        let sent = sender.send(&req, false).await;
        assert!(sent.result.failed_to_connect && sent.result.status.is_none());
        assert!(sent.error.unwrap_or_default().contains("private"));
    }
}
