//! Credentials, authentication, and bad input: every refusal has the right status and code,
//! names its parameter, and stores nothing.

mod common;

use common::{ACCOUNT_SID, AUTH_TOKEN};

#[tokio::test]
async fn credentials_keep_secrets_write_only_in_every_dialect() {
    let s = common::spawn().await;
    let created = s
        .post(
            "/chat/v2/Credentials",
            &[
                ("Type", "apn"),
                ("FriendlyName", "ios"),
                ("Certificate", "-----BEGIN CERT-----\nX\n-----END CERT-----"),
                ("PrivateKey", "K"),
                ("Sandbox", "true"),
            ],
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let cr = created.str("sid");
    assert_eq!(created.body["sandbox"], "true");
    assert_eq!(created.body["type"], "apn");
    let text = created.body.to_string();
    assert!(
        !text.contains("BEGIN CERT")
            && !text.contains("private_key")
            && !text.contains("certificate")
    );
    assert_eq!(
        created.str("url"),
        format!("{}/chat/v2/Credentials/{cr}", s.base)
    );

    let updated = s
        .post(
            &format!("/chat/v2/Credentials/{cr}"),
            &[("Sandbox", "false"), ("Type", "fcm")],
        )
        .await;
    assert_eq!(
        (
            updated.body["sandbox"].as_str(),
            updated.body["type"].as_str()
        ),
        (Some("false"), Some("apn")),
        "Chat ignores Type on update"
    );
    let conv = s
        .post(
            &format!("/conversations/v1/Credentials/{cr}"),
            &[("Type", "fcm")],
        )
        .await;
    assert_eq!(
        conv.body["type"], "fcm",
        "Conversations accepts Type on update"
    );
    assert_eq!(
        conv.str("url"),
        format!("{}/conversations/v1/Credentials/{cr}", s.base)
    );
    assert_eq!(
        s.get(&format!("/chat/v1/Credentials/{cr}"))
            .await
            .str("url"),
        format!("{}/chat/v1/Credentials/{cr}", s.base)
    );
    let list = s.get("/conversations/v1/Credentials?PageSize=1000").await;
    assert_eq!(
        (
            list.body["meta"]["page_size"].as_i64(),
            list.body["meta"]["key"].as_str()
        ),
        (Some(100), Some("credentials"))
    );

    let missing = s
        .post("/chat/v2/Credentials", &[("FriendlyName", "x")])
        .await;
    assert_eq!((missing.status, missing.code()), (400, 20001));
    assert!(missing.str("message").contains("Type"));
    let bad = s.post("/chat/v2/Credentials", &[("Type", "sms")]).await;
    assert_eq!(bad.status, 400);
    assert_eq!(
        s.delete(&format!("/chat/v2/Credentials/{cr}")).await.status,
        204
    );
    assert_eq!(
        s.get("/chat/v2/Credentials").await.body["credentials"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    s.stop().await;
}

#[tokio::test]
async fn bad_input_is_refused_with_the_right_code_and_nothing_is_stored() {
    let s = common::spawn().await;
    let svc = s.service("bad").await;
    let users = format!("/chat/v2/Services/{svc}/Users");
    let cases: Vec<(common::Reply, u16, i64, &str)> = vec![
        (
            s.post(&users, &[("FriendlyName", "no identity")]).await,
            400,
            20001,
            "Identity",
        ),
        (
            s.post(&users, &[("Identity", "x"), ("Attributes", "{not json")])
                .await,
            400,
            20001,
            "Attributes",
        ),
        (
            s.post(
                &users,
                &[
                    ("Identity", "x"),
                    ("RoleSid", "ISffffffffffffffffffffffffffffffff"),
                ],
            )
            .await,
            400,
            20001,
            "RoleSid",
        ),
        (
            s.post(
                &format!("/chat/v2/Services/{svc}"),
                &[("ReachabilityEnabled", "maybe")],
            )
            .await,
            400,
            20001,
            "ReachabilityEnabled",
        ),
        (
            s.post(
                &format!("/chat/v2/Services/{svc}"),
                &[("PostWebhookUrl", "not a url")],
            )
            .await,
            400,
            20001,
            "PostWebhookUrl",
        ),
        (
            s.get(&format!("{users}?PageSize=0")).await,
            400,
            20001,
            "PageSize",
        ),
        (
            s.get(&format!("{users}?PageSize=-1")).await,
            400,
            20001,
            "PageSize",
        ),
        (
            s.get(&format!("{users}?PageToken=garbage")).await,
            400,
            20001,
            "PageToken",
        ),
        (
            s.get("/chat/v2/Services/ISffffffffffffffffffffffffffffffff/Users")
                .await,
            404,
            20404,
            "/v2/Services",
        ),
        (
            s.get("/chat/v2/Services/USffffffffffffffffffffffffffffffff")
                .await,
            404,
            20404,
            "/v2/Services",
        ),
        (
            s.get("/chat/v2/Services/IS123").await,
            404,
            20404,
            "/v2/Services",
        ),
        (
            s.get("/chat/v2/Credentials/ISffffffffffffffffffffffffffffffff")
                .await,
            404,
            20404,
            "Credentials",
        ),
        (
            s.post(
                "/conversations/v1/Configuration",
                &[(
                    "DefaultChatServiceSid",
                    "ISffffffffffffffffffffffffffffffff",
                )],
            )
            .await,
            400,
            20001,
            "DefaultChatServiceSid",
        ),
        (
            s.post(
                "/conversations/v1/Configuration/Webhooks",
                &[("Target", "sms")],
            )
            .await,
            400,
            20001,
            "Target",
        ),
    ];
    for (reply, status, code, needle) in &cases {
        assert_eq!(
            (reply.status, reply.code()),
            (*status, *code),
            "{:?}",
            reply.body
        );
        assert!(
            reply.str("message").contains(needle),
            "message should name {needle}: {:?}",
            reply.body
        );
        assert_eq!(reply.body["status"], *status);
        assert!(
            reply.body["more_info"]
                .as_str()
                .unwrap_or_default()
                .ends_with(&code.to_string())
        );
    }
    let svc_after = s.get(&format!("/chat/v2/Services/{svc}")).await;
    assert_eq!(svc_after.body["reachability_enabled"], false);
    assert!(svc_after.body["post_webhook_url"].is_null());
    assert_eq!(
        s.get(&users).await.body["users"].as_array().map(Vec::len),
        Some(0)
    );
    s.stop().await;
}

#[tokio::test]
async fn oversized_bodies_get_413_and_change_nothing() {
    let s = common::spawn().await;
    let svc = s.service("big").await;
    let huge = "a".repeat(2 * 1024 * 1024);
    let r = s
        .post(
            &format!("/chat/v2/Services/{svc}/Users"),
            &[("Identity", "x"), ("FriendlyName", &huge)],
        )
        .await;
    assert_eq!((r.status, r.code()), (413, 20001));
    // Chunked (no Content-Length) bodies are counted too.
    let stream =
        futures_util::stream::iter((0..40).map(|_| Ok::<_, std::io::Error>(vec![b'a'; 64 * 1024])));
    let req = s
        .http
        .post(s.url(&format!("/chat/v2/Services/{svc}/Users")))
        .basic_auth(ACCOUNT_SID, Some(AUTH_TOKEN))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(reqwest::Body::wrap_stream(stream));
    let r = s.send(req).await;
    assert_eq!(r.status, 413);
    assert_eq!(
        s.get(&format!("/chat/v2/Services/{svc}/Users")).await.body["users"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    s.stop().await;
}

#[tokio::test]
async fn authentication_accepts_the_account_and_live_api_keys_only() {
    let s = common::spawn().await;
    let url = s.url("/chat/v2/Services");
    let anonymous = s.send(s.http.get(&url)).await;
    assert_eq!((anonymous.status, anonymous.code()), (401, 20003));
    assert_eq!(
        anonymous.headers["www-authenticate"],
        "Basic realm=\"reachd\""
    );
    let wrong = s
        .send(s.http.get(&url).basic_auth(ACCOUNT_SID, Some("wrong")))
        .await;
    assert_eq!(wrong.status, 401);
    let other_account = s
        .send(
            s.http
                .get(&url)
                .basic_auth("ACffffffffffffffffffffffffffffffff", Some(AUTH_TOKEN)),
        )
        .await;
    assert_eq!(other_account.status, 401);
    let bearer = s.send(s.http.get(&url).bearer_auth(AUTH_TOKEN)).await;
    assert_eq!(bearer.status, 401);

    // An API key created in the server's database works at once; revoked, it stops.
    let db_path = s.db_path();
    let admin = common::admin(&db_path);
    let key = admin.create_api_key(Some("test")).expect("create key");
    let with_key = s
        .send(s.http.get(&url).basic_auth(&key.sid, Some(&key.secret)))
        .await;
    assert_eq!(with_key.status, 200);
    let bad_secret = s
        .send(s.http.get(&url).basic_auth(&key.sid, Some("nope")))
        .await;
    assert_eq!(bad_secret.status, 401);
    assert!(admin.revoke_api_key(&key.sid).expect("revoke"));
    // As `reachd keys revoke` does: wait until no server can still trust its cached copy.
    tokio::time::sleep(reachd::storage::cache::API_KEY_TTL + std::time::Duration::from_millis(100))
        .await;
    let revoked = s
        .send(s.http.get(&url).basic_auth(&key.sid, Some(&key.secret)))
        .await;
    assert_eq!(revoked.status, 401);
    // Health needs no credentials.
    assert_eq!(s.send(s.http.get(s.url("/healthz"))).await.status, 200);
    s.stop().await;
}
