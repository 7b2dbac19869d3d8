//! Regressions of the attack run's findings on input handling: small bodies that flatten into
//! huge parameter lists, push binding takeover, write floods from one token, framing of the
//! dashboard, tokens in query strings, invisible characters in identities.

mod common;

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
