//! Regressions of the attack run's findings on input handling: small bodies that flatten into
//! huge parameter lists, push binding takeover, write floods from one token, framing of the
//! dashboard, tokens in query strings, invisible characters in identities.

mod common;

use reqwest::Method;
use serde_json::{Value, json};

use common::ws::{connect, next, send};

#[tokio::test]
async fn the_dashboard_refuses_to_be_framed() {
    let s = common::spawn().await;
    let page = s.get("/dashboard").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.headers["x-frame-options"], "DENY");
    let csp = page.headers["content-security-policy"]
        .to_str()
        .unwrap_or_default()
        .to_string();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    let script = s.get("/dashboard/app.js").await;
    assert_eq!(script.headers["x-frame-options"], "DENY");
    s.stop().await;
}

/// Identities that would read as someone else's: a bidi override, a zero-width space, a
/// byte-order mark, a control character.
const DISGUISED: [&str; 4] = [
    "admin\u{202E}nimda",
    "ali\u{200B}ce",
    "\u{FEFF}bob",
    "eve\u{7}",
];

#[tokio::test]
async fn identities_with_invisible_characters_are_refused_in_every_dialect() {
    let s = common::spawn().await;
    let svc = s.service("identities").await;
    let collections = [
        format!("/chat/v1/Services/{svc}/Users"),
        format!("/chat/v2/Services/{svc}/Users"),
        format!("/conversations/v1/Services/{svc}/Users"),
        "/conversations/v1/Users".to_string(),
    ];
    for path in &collections {
        for identity in DISGUISED {
            let r = s.post(path, &[("Identity", identity)]).await;
            assert_eq!((r.status, r.code()), (400, 20001), "{path} {identity:?}");
            assert!(r.str("message").contains("Identity"), "{:?}", r.body);
        }
        let fine = s.post(path, &[("Identity", "Zoë ☎")]).await;
        assert!(
            fine.status == 201 || fine.status == 409,
            "{path}: {:?}",
            fine.body
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn client_tokens_for_disguised_identities_are_refused() {
    let s = common::spawn().await;
    let svc = s.service("tokens").await;
    let key = s.api_key();
    let now = chrono::Utc::now().timestamp();
    for identity in DISGUISED {
        let minted = reachd::tokens::mint(
            common::ACCOUNT_SID,
            &key.sid,
            &key.secret,
            &svc,
            identity,
            60,
            None,
            now,
        );
        assert_eq!(
            minted,
            Err(reachd::tokens::TokenError::InvalidIdentity),
            "{identity:?}"
        );
        let token = forge_token(&svc, identity, &key.sid, &key.secret, now);
        let r = s
            .client(
                reqwest::Method::POST,
                "/client/v1/sessions",
                &token,
                Some(serde_json::json!({})),
            )
            .await;
        assert_eq!(
            (r.status, r.code()),
            (401, 20106),
            "{identity:?}: {:?}",
            r.body
        );
        assert!(r.str("message").contains("identity"), "{:?}", r.body);
    }
    let users = s.get(&format!("/chat/v2/Services/{svc}/Users")).await;
    assert_eq!(users.body["users"], serde_json::json!([]));
    s.stop().await;
}

/// A token signed with a real key whose identity grant the minting helper would refuse (what
/// an attacker holding an API key secret could build by hand).
fn forge_token(service: &str, identity: &str, key_sid: &str, secret: &str, now: i64) -> String {
    use base64::Engine;
    use hmac::Mac;
    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let header = b64(&serde_json::json!({"alg": "HS256", "typ": "JWT", "cty": "twilio-fpa;v=1"}));
    let claims = b64(&serde_json::json!({
        "jti": format!("{key_sid}-{now}"),
        "grants": {"identity": identity, "chat": {"service_sid": service}},
        "iss": key_sid, "sub": common::ACCOUNT_SID, "nbf": now, "exp": now + 600,
    }));
    let signing_input = format!("{header}.{claims}");
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(signing_input.as_bytes());
    let signature =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

/// A field of `/proc/self/status` in kB (the server runs in this process).
fn status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_small_json_body_cannot_flatten_into_gigabytes() {
    let s = common::spawn().await;
    let svc = s.service("flatten").await;
    let token = s.token(&svc, "alice");
    // ~1 MB: a 3 KB key path (three nested 1 KB keys) over 330,000 zeros. Copying the key per
    // element, as flattening once did, takes about 1 GB.
    let key = "k".repeat(1000);
    let open = format!("{{\"{key}\":").repeat(3);
    let zeros = vec!["0"; 330_000].join(",");
    let body = format!("{open}[{zeros}]}}}}}}");
    assert!(body.len() < 1 << 20, "{}", body.len());
    let peak_before = status_kb("VmHWM:");
    let started = std::time::Instant::now();
    for (path, auth) in [
        ("/client/v1/sessions", "bearer"),
        ("/api/v1/services/{svc}/settings", "basic"),
    ] {
        let url = s.url(&path.replace("{svc}", &svc));
        let req = s
            .http
            .post(url)
            .header("content-type", "application/json")
            .body(body.clone());
        let req = if auth == "bearer" {
            req.bearer_auth(&token)
        } else {
            req.basic_auth(common::ACCOUNT_SID, Some(common::AUTH_TOKEN))
        };
        let r = s.send(req).await;
        assert_eq!((r.status, r.code()), (400, 20001), "{path}: {:?}", r.body);
        assert!(r.str("message").contains("body"), "{:?}", r.body);
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "answered quickly"
    );
    let grown_mb = status_kb("VmHWM:").saturating_sub(peak_before) / 1024;
    assert!(grown_mb < 100, "peak memory grew by {grown_mb} MB");
    s.stop().await;
}

/// The identities holding bindings in `svc`, with their endpoints.
async fn binding_owners(s: &common::TestServer, svc: &str) -> Vec<(String, String)> {
    let list = s.get(&format!("/chat/v2/Services/{svc}/Bindings")).await;
    let mut owners: Vec<(String, String)> = list.body["bindings"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|b| {
                    (
                        b["endpoint"].as_str().unwrap_or("").to_string(),
                        b["identity"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    owners.sort();
    owners
}

fn fcm_at(endpoint: &str, address: &str) -> Value {
    json!({"binding_type": "fcm", "address": address, "endpoint": endpoint})
}

/// A service where bob registered the endpoint `bob-phone`; with bob's and mallory's tokens.
async fn bob_has_a_phone(s: &common::TestServer) -> (String, String, String) {
    let svc = s.service("takeover").await;
    let (bob, mallory) = (s.token(&svc, "bob"), s.token(&svc, "mallory"));
    let r = s
        .client(
            Method::POST,
            "/client/v1/bindings",
            &bob,
            Some(fcm_at("bob-phone", "bob-token")),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    (svc, bob, mallory)
}

#[tokio::test]
async fn a_client_cannot_take_over_another_identitys_push_endpoint_over_http() {
    let s = common::spawn().await;
    let (svc, bob, mallory) = bob_has_a_phone(&s).await;
    let stolen = s
        .client(
            Method::POST,
            "/client/v1/bindings",
            &mallory,
            Some(fcm_at("bob-phone", "evil")),
        )
        .await;
    assert_eq!(
        (stolen.status, stolen.code()),
        (409, 20409),
        "{:?}",
        stolen.body
    );
    assert!(
        stolen.str("message").contains("endpoint"),
        "{:?}",
        stolen.body
    );
    assert_eq!(stolen.body["status"], 409);
    assert!(
        stolen.str("more_info").ends_with("20409"),
        "{:?}",
        stolen.body
    );
    // Each may still register and replace their own endpoints.
    for (token, endpoint) in [
        (&mallory, "mallory-phone"),
        (&mallory, "mallory-phone"),
        (&bob, "bob-phone"),
    ] {
        let r = s
            .client(
                Method::POST,
                "/client/v1/bindings",
                token,
                Some(fcm_at(endpoint, "fresh")),
            )
            .await;
        assert_eq!(r.status, 201, "{endpoint}: {:?}", r.body);
    }
    assert_eq!(
        binding_owners(&s, &svc).await,
        vec![
            ("bob-phone".to_string(), "bob".to_string()),
            ("mallory-phone".to_string(), "mallory".to_string())
        ]
    );
    // The account may still move an endpoint (server-side registration).
    let moved = s
        .post_json(
            &format!("/api/v1/services/{svc}/users/mallory/bindings"),
            fcm_at("bob-phone", "handed-over"),
        )
        .await;
    assert_eq!(
        (moved.status, moved.str("identity")),
        (201, "mallory".to_string()),
        "{:?}",
        moved.body
    );
    s.stop().await;
}

#[tokio::test]
async fn a_client_cannot_take_over_another_identitys_push_endpoint_over_its_socket() {
    let s = common::spawn().await;
    let (svc, _bob, mallory) = bob_has_a_phone(&s).await;
    let mut ws = connect(&s, &mallory).await;
    assert_eq!(next(&mut ws).await.expect("ready")["type"], "ready");
    send(&mut ws, json!({"type": "register_push", "id": 1, "binding_type": "apn", "address": "evil", "endpoint": "bob-phone"})).await;
    let e = next(&mut ws).await.expect("an answer");
    assert_eq!(
        (e["type"].as_str(), e["code"].as_i64(), e["id"].as_i64()),
        (Some("error"), Some(20409), Some(1)),
        "{e}"
    );
    assert!(
        e["message"].as_str().unwrap_or("").contains("endpoint"),
        "{e}"
    );
    for _ in 0..2 {
        send(&mut ws, json!({"type": "register_push", "id": 2, "binding_type": "fcm", "address": "mine", "endpoint": "mallory-phone"})).await;
        let ok = next(&mut ws).await.expect("an answer");
        assert_eq!(
            (ok["type"].as_str(), ok["binding"]["endpoint"].as_str()),
            (Some("push_registered"), Some("mallory-phone")),
            "{ok}"
        );
    }
    assert_eq!(
        binding_owners(&s, &svc).await,
        vec![
            ("bob-phone".to_string(), "bob".to_string()),
            ("mallory-phone".to_string(), "mallory".to_string())
        ]
    );
    s.stop().await;
}

#[tokio::test]
async fn tokens_in_the_query_are_read_only_on_the_socket_upgrade() {
    let s = common::spawn().await;
    let svc = s.service("query-token").await;
    let token = s.token(&svc, "alice");
    let session = s.open_session(&token).await;
    let routes = [
        (Method::POST, "/client/v1/sessions".to_string()),
        (Method::POST, format!("/client/v1/sessions/{session}/ping")),
        (Method::DELETE, format!("/client/v1/sessions/{session}")),
        (Method::POST, "/client/v1/bindings".to_string()),
        (
            Method::DELETE,
            "/client/v1/bindings/some-endpoint".to_string(),
        ),
        (Method::GET, "/client/v1/users/alice".to_string()),
    ];
    for (method, path) in &routes {
        let url = format!("{}?token={token}", s.url(path));
        let r = s
            .send(s.http.request(method.clone(), url).json(&json!({})))
            .await;
        assert_eq!(
            (r.status, r.code()),
            (401, 20101),
            "{method} {path}: {:?}",
            r.body
        );
        assert!(
            r.str("message").contains("/client/v1/socket"),
            "{:?}",
            r.body
        );
    }
    // The session was neither pinged nor closed by those requests; headers still work.
    let ping = format!("/client/v1/sessions/{session}/ping");
    assert_eq!(
        s.client(Method::POST, &ping, &token, None).await.status,
        204
    );
    let user = s
        .client(Method::GET, "/client/v1/users/alice", &token, None)
        .await;
    assert_eq!(
        (user.status, user.str("identity")),
        (200, "alice".to_string())
    );
    let mut ws = connect(&s, &token).await;
    assert_eq!(next(&mut ws).await.expect("ready")["type"], "ready");
    s.stop().await;
}

/// A server whose identities may make 5 writes in a burst, then one a second.
async fn strict_writes() -> common::TestServer {
    common::spawn_with(|c| {
        c.limits.client_write_burst = 5;
        c.limits.client_writes_per_second = 1;
    })
    .await
}

fn assert_write_limited(r: &common::Reply, what: &str) {
    assert_eq!((r.status, r.code()), (429, 20429), "{what}: {:?}", r.body);
    let retry: u64 = r.headers["retry-after"]
        .to_str()
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!((1..=2).contains(&retry), "{what}: Retry-After {retry}");
    assert!(r.str("message").contains("identity"), "{:?}", r.body);
}

#[tokio::test]
async fn session_writes_are_limited_per_identity_but_pings_are_not() {
    let s = strict_writes().await;
    let svc = s.service("writes").await;
    let (alice, bob) = (s.token(&svc, "alice"), s.token(&svc, "alice-neighbour"));
    let kept = s.open_session(&alice).await;
    let started = std::time::Instant::now();
    let (mut accepted, mut refused) = (1, None);
    for _ in 0..40 {
        let r = s
            .client(Method::POST, "/client/v1/sessions", &alice, Some(json!({})))
            .await;
        if r.status == 429 {
            refused = Some(r);
            break;
        }
        assert_eq!(r.status, 201, "{:?}", r.body);
        accepted += 1;
        let closed = s.close_session(&alice, &r.str("session_id")).await;
        if closed.status == 429 {
            refused = Some(closed);
            break;
        }
        assert_eq!(closed.status, 204, "{:?}", closed.body);
        accepted += 1;
    }
    let refused = refused.expect("the flood was stopped");
    assert_write_limited(&refused, "session writes");
    let allowed = 5 + started.elapsed().as_secs() + 1;
    assert!(accepted <= allowed, "{accepted} writes went through");
    // Pings cost nothing: the kept session stays alive while writes are refused.
    let ping = format!("/client/v1/sessions/{kept}/ping");
    for _ in 0..30 {
        assert_eq!(
            s.client(Method::POST, &ping, &alice, None).await.status,
            204
        );
    }
    // Another identity has its own budget.
    s.open_session(&bob).await;
    let sockets = s
        .send(s.http.get(s.url("/client/v1/socket")).bearer_auth(&alice))
        .await;
    assert_write_limited(&sockets, "socket upgrade");
    s.stop().await;
}

#[tokio::test]
async fn push_registrations_are_limited_per_identity_over_http_and_the_socket() {
    let s = strict_writes().await;
    let svc = s.service("pushes").await;
    let carol = s.token(&svc, "carol");
    let fcm = |i: usize| json!({"binding_type": "fcm", "address": format!("t{i}"), "endpoint": "carol-phone"});
    let mut last = None;
    for i in 0..40 {
        let path = if i % 2 == 0 {
            "/client/v1/bindings"
        } else {
            "/client/v1/bindings/carol-phone"
        };
        let method = if i % 2 == 0 {
            Method::POST
        } else {
            Method::DELETE
        };
        let r = s.client(method, path, &carol, Some(fcm(i))).await;
        if r.status == 429 {
            last = Some(r);
            break;
        }
        assert!(r.status == 201 || r.status == 204, "{:?}", r.body);
    }
    assert_write_limited(&last.expect("the loop was stopped"), "bindings");

    let dave = s.token(&svc, "dave");
    let mut ws = connect(&s, &dave).await; // the socket's session: one write
    assert_eq!(next(&mut ws).await.expect("ready")["type"], "ready");
    let mut answers = Vec::new();
    for i in 0..10 {
        send(&mut ws, json!({"type": "register_push", "id": i, "binding_type": "apn", "address": "a", "endpoint": "dave-phone"})).await;
        let a = next(&mut ws).await.expect("an answer");
        answers.push(a["type"].as_str().unwrap_or_default().to_string());
        if a["type"] == "error" {
            assert_eq!(
                (a["code"].as_i64(), a["id"].as_i64()),
                (Some(20429), Some(i)),
                "{a}"
            );
            break;
        }
    }
    assert_eq!(
        answers.last().map(String::as_str),
        Some("error"),
        "{answers:?}"
    );
    assert!(answers.len() <= 6, "{answers:?}");
    s.stop().await;
}
