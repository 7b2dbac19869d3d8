//! Per-IP rate limit on failed authentication. Every 401 an address earns spends one token of
//! its bucket (`failed_auth_burst` tokens, refilled at `failed_auth_per_minute`); while the
//! bucket is empty, every request from that address is answered 429/20429 with `Retry-After`,
//! before any credential is checked. Successful requests cost nothing, so a client that
//! authenticates correctly is never limited by this. A 401 to a request that presented no
//! credentials at all (a browser's first request to `/dashboard`, before it asks its user) is
//! a challenge, not a failure: it costs nothing, is not counted in
//! `reachd_auth_failures_total` and logs no warning.
//!
//! The buckets are [`super::token_bucket::Buckets`] (bounded: at most [`MAX_TRACKED`]
//! addresses).
//!
//! May depend on: actix-web, metrics, url, api::{errors, token_bucket}.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{ResponseError, web};

use super::errors::ApiError;
use super::token_bucket::Buckets;

/// Most addresses tracked at once.
const MAX_TRACKED: usize = 100_000;

/// Failed-authentication budgets per client address.
#[derive(Debug)]
pub struct AuthLimiter {
    /// Take the client address from the last `X-Forwarded-For` entry (set by a trusted proxy).
    trust_forwarded_for: bool,
    buckets: Buckets<IpAddr>,
}

impl AuthLimiter {
    pub fn new(burst: u32, per_minute: u32, trust_forwarded_for: bool) -> Self {
        AuthLimiter {
            trust_forwarded_for,
            buckets: Buckets::new(burst, f64::from(per_minute.max(1)) / 60.0, MAX_TRACKED),
        }
    }

    /// How long `ip` must wait before it may try again, if it is limited now.
    pub fn retry_after(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        self.buckets.wait(&ip, now)
    }

    /// Spends one token of `ip`'s budget.
    pub fn record_failure(&self, ip: IpAddr, now: Instant) {
        self.buckets.spend(&ip, now);
    }

    /// The address a request's failures are charged to: the peer, or behind a trusted proxy
    /// the last `X-Forwarded-For` entry over all such header lines (the one the proxy added;
    /// earlier ones are the client's to choose). IPv6 addresses count by their /64, the block
    /// one host is usually given, so rotating addresses within it does not escape the limit.
    fn client_ip(&self, req: &ServiceRequest) -> Option<IpAddr> {
        let forwarded = || {
            req.headers()
                .get_all("x-forwarded-for")
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .last()
                .and_then(|last| last.trim().parse::<IpAddr>().ok())
        };
        let ip = match self.trust_forwarded_for.then(forwarded).flatten() {
            Some(ip) => ip,
            None => req.peer_addr()?.ip(),
        };
        Some(match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let mut octets = v6.octets();
                    octets[8..].fill(0);
                    IpAddr::V6(octets.into())
                }
            },
            v4 => v4,
        })
    }
}

/// Paths that take no credentials: never limited, so health probes, scrapes and the public
/// documents keep working from an address that is limited (a proxy, a NAT).
const UNAUTHENTICATED: [&str; 6] = [
    "/favicon.ico",
    "/healthz",
    "/readyz",
    "/metrics",
    "/api/v1/openapi.json",
    "/client/v1/sdk.js",
];

/// The middleware: refuses limited addresses, charges 401 answers to their address.
pub async fn limit_failed_auth(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let limiter = req
        .app_data::<web::Data<AuthLimiter>>()
        .filter(|_| !UNAUTHENTICATED.contains(&req.path()))
        .cloned();
    let ip = limiter.as_ref().and_then(|l| l.client_ip(&req));
    if let (Some(limiter), Some(ip)) = (&limiter, ip)
        && let Some(wait) = limiter.retry_after(ip, Instant::now())
    {
        metrics::counter!("reachd_rate_limited_total").increment(1);
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            20429,
            "Too many failed authentication attempts from this address; retry later",
        );
        error.retry_after = Some(wait.as_secs_f64().ceil().max(1.0) as u64);
        let response = error.error_response().map_into_right_body();
        return Ok(req.into_response(response));
    }
    let response = next.call(req).await?;
    if response.status() != StatusCode::UNAUTHORIZED {
        return Ok(response.map_into_left_body());
    }
    if !presents_credentials(response.request()) {
        return Ok(without_error(response).map_into_left_body());
    }
    metrics::counter!("reachd_auth_failures_total").increment(1);
    if let (Some(limiter), Some(ip)) = (&limiter, ip) {
        limiter.record_failure(ip, Instant::now());
    }
    Ok(response.map_into_left_body())
}

/// The request carries something meant as credentials: an `Authorization` or `X-Twilio-Token`
/// header, or a `token` in the query (client WebSocket upgrades).
fn presents_credentials(req: &actix_web::HttpRequest) -> bool {
    let headers = req.headers();
    headers.contains_key(actix_web::http::header::AUTHORIZATION)
        || headers.contains_key("x-twilio-token")
        || url::form_urlencoded::parse(req.query_string().as_bytes()).any(|(k, _)| k == "token")
}

/// The same answer without the error it was made from, so that the request logger does not
/// report a challenge as a failed request.
fn without_error<B>(response: ServiceResponse<B>) -> ServiceResponse<B> {
    let (req, res) = response.into_parts();
    let res = actix_web::HttpResponse::from(actix_web::dev::Response::from(res));
    ServiceResponse::new(req, res)
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const OTHER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn the_burst_is_allowed_then_the_address_waits_for_a_refill() {
        let limiter = AuthLimiter::new(3, 60, false);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.retry_after(IP, t0), None);
            limiter.record_failure(IP, t0);
        }
        let wait = limiter
            .retry_after(IP, t0)
            .expect("limited after the burst");
        assert!((wait.as_secs_f64() - 1.0).abs() < 0.01, "{wait:?}");
        assert_eq!(
            limiter.retry_after(OTHER, t0),
            None,
            "other addresses unaffected"
        );
        let later = t0 + Duration::from_millis(1_001);
        assert_eq!(
            limiter.retry_after(IP, later),
            None,
            "one token back after 1 s"
        );
        limiter.record_failure(IP, later);
        assert!(limiter.retry_after(IP, later).is_some());
    }

    #[test]
    fn behind_a_proxy_the_last_forwarded_entry_counts_and_ipv6_by_its_64() {
        use actix_web::test::TestRequest;
        let peer: std::net::SocketAddr = "10.0.0.1:5000".parse().expect("addr");
        let trusting = AuthLimiter::new(3, 60, true);
        let req = TestRequest::default()
            .peer_addr(peer)
            .append_header(("x-forwarded-for", "1.1.1.1"))
            .append_header(("x-forwarded-for", "2.2.2.2, 3.3.3.3"))
            .to_srv_request();
        assert_eq!(
            trusting.client_ip(&req),
            Some("3.3.3.3".parse().expect("ip"))
        );
        let direct = AuthLimiter::new(3, 60, false);
        assert_eq!(
            direct.client_ip(&req),
            Some(peer.ip()),
            "spoofable: ignored"
        );
        let v6 = TestRequest::default()
            .peer_addr(
                "[2001:db8:1:2:aaaa:bbbb:cccc:dddd]:443"
                    .parse()
                    .expect("addr"),
            )
            .to_srv_request();
        assert_eq!(
            direct.client_ip(&v6),
            Some("2001:db8:1:2::".parse().expect("ip"))
        );
    }
}
