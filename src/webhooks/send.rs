//! Sending webhook requests: one shared reqwest client, no redirects, a 5 s timeout for Twilio
//! targets (configurable for native ones), responses read to at most 64 KiB. The network
//! policy (`webhooks::network`): proxies only from the configuration, never from the
//! environment; an optional guard that refuses private-network addresses (checked at DNS
//! resolution, so the address that is checked is the one connected to); and response bodies
//! from private addresses kept out of the attempt log unless the operator opts in.
//!
//! May depend on: reqwest, tokio, url, domain::webhook, webhooks::{network, render}.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

pub use super::network::NetworkPolicy;
use super::network::{PublicOnly, is_private};
use super::render::Request;
use crate::domain::webhook::SendResult;

/// Twilio's webhook timeout.
pub const TWILIO_TIMEOUT: Duration = Duration::from_secs(5);
/// Most response bytes read.
pub const MAX_RESPONSE: usize = 64 * 1024;
/// Response bytes kept in the attempt log.
pub const LOGGED_RESPONSE: usize = 1024;
/// Parsed target URLs kept (the cache starts over beyond this many).
const PARSED_URLS: usize = 1024;

/// What one attempt produced, for the attempt log.
#[derive(Debug, Clone)]
pub struct Sent {
    pub result: SendResult,
    pub latency_ms: i64,
    pub response: Option<String>,
    pub error: Option<String>,
}

pub struct Sender {
    client: reqwest::Client,
    native_timeout: Duration,
    policy: NetworkPolicy,
    /// POST targets, parsed once: every delivery to an endpoint names the same URL (a GET
    /// target carries its parameters, so it is parsed each time). `None`: not a URL.
    urls: Mutex<HashMap<String, Option<url::Url>>>,
}

impl Sender {
    pub fn new(native_timeout: Duration, policy: NetworkPolicy) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            // Keep every connection a burst opened: receivers are few, deliveries many.
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(super::render::USER_AGENT);
        builder = match &policy.proxy {
            // An explicit proxy replaces the environment's (reqwest then ignores HTTP_PROXY).
            Some(url) => builder.proxy(
                reqwest::Proxy::all(url.as_str())
                    .map_err(|_| anyhow::anyhow!("webhooks.proxy is not a valid proxy URL"))?,
            ),
            // Never a proxy from HTTP_PROXY, HTTPS_PROXY or ALL_PROXY: it would take every
            // delivery, with its signature, past the policy below.
            None => builder.no_proxy(),
        };
        // Through a proxy, reqwest resolves only the proxy's name: the proxy resolves targets
        // and must enforce the egress policy itself (literal addresses are still refused).
        if !policy.allow_private && policy.proxy.is_none() {
            builder = builder.dns_resolver(Arc::new(PublicOnly));
        }
        Ok(Sender {
            client: builder.build()?,
            native_timeout,
            policy,
            urls: Mutex::new(HashMap::new()),
        })
    }

    /// `req`'s URL, parsed (from the cache unless it is sent with GET).
    fn parse_url(&self, req: &Request, method: &reqwest::Method) -> Option<url::Url> {
        if method == reqwest::Method::GET {
            return url::Url::parse(&req.url).ok();
        }
        let mut urls = self.urls.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(parsed) = urls.get(&req.url) {
            return parsed.clone();
        }
        let parsed = url::Url::parse(&req.url).ok();
        if urls.len() >= PARSED_URLS {
            urls.clear();
        }
        urls.insert(req.url.clone(), parsed.clone());
        parsed
    }

    /// True when the response from `peer` (the address connected to: the target, or the
    /// proxy) may be kept in the attempt log. An unknown peer counts as private.
    fn keeps_response_from(&self, peer: Option<std::net::SocketAddr>) -> bool {
        self.policy.store_private_responses || peer.is_some_and(|a| !is_private(a.ip()))
    }

    /// Sends one request; never fails: every problem is described in the result.
    pub async fn send(&self, req: Request, twilio: bool) -> Sent {
        let started = Instant::now();
        let timeout = if twilio {
            TWILIO_TIMEOUT
        } else {
            self.native_timeout
        };
        let elapsed = |started: Instant| started.elapsed().as_millis() as i64;
        let method = if req.method == "GET" {
            reqwest::Method::GET
        } else {
            reqwest::Method::POST
        };
        let url = self.parse_url(&req, &method);
        if !self.policy.allow_private {
            // Literal addresses never reach the resolver; the URL parser has normalised the
            // other spellings (`0x7f.1`, `2130706433`) to dotted IPv4 already.
            let literal = url.as_ref().and_then(|u| match u.host() {
                Some(url::Host::Ipv4(v4)) => Some(std::net::IpAddr::V4(v4)),
                Some(url::Host::Ipv6(v6)) => Some(std::net::IpAddr::V6(v6)),
                _ => None,
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
        let builder = match url {
            Some(url) => self.client.request(method, url),
            // Not a URL: reqwest reports it as the request's error.
            None => self.client.request(method, req.url.as_str()),
        };
        let mut builder = builder.timeout(timeout);
        for (name, value) in req.headers {
            builder = builder.header(name, value);
        }
        if !req.body.is_empty() {
            builder = builder.body(req.body);
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
        let keep_body = self.keeps_response_from(response.remote_addr());
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
        // A private address's answer stays out of the log: an API-key holder could otherwise
        // read internal services through it.
        let logged = keep_body.then(|| {
            String::from_utf8_lossy(&body[..body.len().min(LOGGED_RESPONSE)]).into_owned()
        });
        let result = SendResult {
            status: Some(status),
            timed_out,
            failed_to_connect: false,
            retry_after_secs,
        };
        Sent {
            result,
            latency_ms: elapsed(started),
            response: logged,
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

    fn post(url: &str) -> Request {
        Request {
            method: "POST".into(),
            url: url.into(),
            headers: Vec::new(),
            body: b"{}".to_vec(),
        }
    }

    #[tokio::test]
    async fn private_targets_are_refused_when_not_allowed() {
        let sender = Sender::new(Duration::from_secs(1), NetworkPolicy::default()).expect("client");
        // A live listener, so a refusal cannot be mistaken for a closed port.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        for url in [
            format!("http://127.0.0.1:{port}/x"),
            format!("http://0x7f000001:{port}/x"),
            format!("http://[::ffff:127.0.0.1]:{port}/x"),
            // A name is checked on what it resolves to: the address connected to.
            format!("http://localhost:{port}/x"),
        ] {
            // Twice: the second time the URL comes parsed from the cache.
            for _ in 0..2 {
                let sent = sender.send(post(&url), false).await;
                assert!(
                    sent.result.failed_to_connect && sent.result.status.is_none(),
                    "{url}"
                );
                let error = sent.error.unwrap_or_default();
                assert!(error.contains("private"), "{url}: {error}");
            }
        }
    }
}
