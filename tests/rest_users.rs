//! Users in every dialect: SID-or-identity addressing, paging, duplicates, the Conversations
//! default-service shortcut.

mod common;

use std::collections::HashSet;

use serde_json::{Value, json};

#[tokio::test]
async fn users_are_addressed_by_sid_or_percent_decoded_identity() {
    let s = common::spawn().await;
    let svc = s.service("u").await;
    let base = format!("/chat/v2/Services/{svc}/Users");
    let created = s
        .post(
            &base,
            &[
                ("Identity", "alice@example.com"),
                ("FriendlyName", "Alice"),
                ("Attributes", r#"{"a":1}"#),
            ],
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let us = created.str("sid");
    assert_eq!(created.body["attributes"], r#"{"a":1}"#);
    assert!(created.str("role_sid").starts_with("RL"));
    assert_eq!(created.body["joined_channels_count"], 0);

    let by_identity = s.get(&format!("{base}/alice@example.com")).await;
    assert_eq!(by_identity.status, 200);
    assert_eq!(by_identity.str("sid"), us);
    assert_eq!(
        by_identity.str("url"),
        format!("{}{base}/{us}", s.base),
        "url uses the SID"
    );

    let weird = s.user(&svc, "bob smith+1").await;
    let fetched = s.get(&format!("{base}/bob%20smith+1")).await;
    assert_eq!((fetched.status, fetched.str("sid")), (200, weird.clone()));
    assert_eq!(
        s.get(&format!("{base}/bob%20smith%201")).await.status,
        404,
        "+ stays literal in paths"
    );
    let slash = s.user(&svc, "team/lead").await;
    assert_eq!(
        s.get(&format!("{base}/team%2Flead")).await.str("sid"),
        slash
    );

    let updated = s
        .post(
            &format!("{base}/{us}"),
            &[("Attributes", r#"{"b":2}"#), ("FriendlyName", "A")],
        )
        .await;
    assert_eq!(updated.status, 200, "{:?}", updated.body);
    assert_eq!(
        (updated.str("attributes"), updated.str("friendly_name")),
        (r#"{"b":2}"#.to_string(), "A".to_string())
    );

    let dup = s.post(&base, &[("Identity", "alice@example.com")]).await;
    assert_eq!((dup.status, dup.code()), (409, 50201));

    assert_eq!(
        s.delete(&format!("{base}/alice@example.com")).await.status,
        204
    );
    assert_eq!(s.get(&format!("{base}/{us}")).await.status, 404);
    s.stop().await;
}

#[tokio::test]
async fn paging_through_120_users_follows_next_page_urls() {
    let s = common::spawn().await;
    let svc = s.service("paging").await;
    let base = format!("/chat/v2/Services/{svc}/Users");
    for i in 0..120 {
        s.user(&svc, &format!("user{i:03}")).await;
    }
    let mut seen = Vec::new();
    let mut next = Some(format!("{base}?PageSize=50"));
    let mut pages = 0;
    while let Some(url) = next {
        let page = s.get(&url).await;
        assert_eq!(page.status, 200);
        let meta = &page.body["meta"];
        assert_eq!(meta["key"], "users");
        assert_eq!(meta["page"], pages);
        assert_eq!(meta["page_size"], 50);
        assert!(
            meta["first_page_url"]
                .as_str()
                .unwrap_or_default()
                .starts_with(&s.base)
        );
        for user in page.body["users"].as_array().expect("array") {
            assert!(user["is_online"].is_null() && user["is_notifiable"].is_null());
            seen.push(user["identity"].as_str().unwrap_or_default().to_string());
        }
        next = meta["next_page_url"].as_str().map(str::to_string);
        if pages == 1 {
            // Walk back once and check the previous page is the first one.
            let prev = meta["previous_page_url"]
                .as_str()
                .expect("previous on page 1")
                .to_string();
            let back = s.get(&prev).await;
            assert_eq!(back.body["users"][0]["identity"], "user000");
            assert_eq!(back.body["users"].as_array().map(Vec::len), Some(50));
        }
        pages += 1;
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 120);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 120);
    assert_eq!(seen[0], "user000");
    assert_eq!(seen[119], "user119");

    // Page without a token is an offset; PageSize above the maximum is clamped.
    let offset = s.get(&format!("{base}?PageSize=10&Page=3")).await;
    assert_eq!(offset.body["users"][0]["identity"], "user030");
    assert_eq!(offset.body["meta"]["page"], 3);
    let clamped = s.get(&format!("{base}?PageSize=5000")).await;
    assert_eq!(clamped.body["meta"]["page_size"], 100);
    let v1 = s
        .get(&format!("/chat/v1/Services/{svc}/Users?PageSize=5000"))
        .await;
    assert_eq!(v1.body["meta"]["page_size"], 1000);
    assert_eq!(v1.body["users"].as_array().map(Vec::len), Some(120));
    s.stop().await;
}

#[tokio::test]
async fn chat_v1_and_conversations_users_have_their_own_shapes() {
    let s = common::spawn().await;
    let svc = s.service("shapes").await;
    let v1 = s
        .post(
            &format!("/chat/v1/Services/{svc}/Users"),
            &[("Identity", "carol")],
        )
        .await;
    assert_eq!(v1.status, 201);
    assert!(v1.body["links"].get("user_bindings").is_none());
    assert!(v1.str("url").contains("/chat/v1/Services/"));
    let conv = s
        .get(&format!("/conversations/v1/Services/{svc}/Users/carol"))
        .await;
    assert_eq!(conv.body["chat_service_sid"], svc);
    assert!(conv.body.get("joined_channels_count").is_none());
    assert_eq!(
        conv.body["links"]["user_conversations"],
        format!(
            "{}/conversations/v1/Services/{svc}/Users/{}/Conversations",
            s.base,
            v1.str("sid")
        )
    );
    s.stop().await;
}

#[tokio::test]
async fn conversations_default_service_shortcut_creates_and_reuses_a_default() {
    let s = common::spawn().await;
    let dave = s
        .post("/conversations/v1/Users", &[("Identity", "dave")])
        .await;
    assert_eq!(dave.status, 201, "{:?}", dave.body);
    let default_sid = dave.str("chat_service_sid");
    assert_eq!(
        dave.str("url"),
        format!("{}/conversations/v1/Users/{}", s.base, dave.str("sid"))
    );
    let config = s.get("/conversations/v1/Configuration").await;
    assert_eq!(config.str("default_chat_service_sid"), default_sid);
    let svc = s
        .get(&format!("/conversations/v1/Services/{default_sid}"))
        .await;
    assert_eq!(svc.str("friendly_name"), "Default Conversations Service");

    let fetched = s.get("/conversations/v1/Users/dave").await;
    assert_eq!(fetched.str("sid"), dave.str("sid"));
    let updated = s
        .post("/conversations/v1/Users/dave", &[("FriendlyName", "D")])
        .await;
    assert_eq!(updated.str("friendly_name"), "D");
    let listed = s.get("/conversations/v1/Users").await;
    assert_eq!(listed.body["users"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        s.get("/conversations/v1/Services").await.body["services"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    // Pointing the default at another service moves the shortcut.
    let other = s.service("other").await;
    s.post(
        "/conversations/v1/Configuration",
        &[("DefaultChatServiceSid", &other)],
    )
    .await;
    assert_eq!(s.get("/conversations/v1/Users/dave").await.status, 404);
    assert_eq!(
        s.post("/conversations/v1/Users", &[("Identity", "erin")])
            .await
            .str("chat_service_sid"),
        other
    );
    assert_eq!(s.delete("/conversations/v1/Users/erin").await.status, 204);
    s.stop().await;
}

/// A user read once is kept in memory (SQLite backend) until a commit changes their row: every
/// kind of change must show in the very next fetch, by identity and by SID alike.
#[tokio::test]
async fn a_user_fetched_again_shows_every_committed_change() {
    let s = common::spawn().await;
    let svc = s.enabled_service("cached").await;
    let us = s.user(&svc, "carol").await;
    let paths = [
        format!("/chat/v2/Services/{svc}/Users/carol"),
        format!("/chat/v2/Services/{svc}/Users/{us}"),
    ];
    let both = |field: &'static str| {
        let s = &s;
        let paths = &paths;
        async move {
            let mut seen = Vec::new();
            for path in paths {
                seen.push(s.get(path).await.body[field].clone());
            }
            seen
        }
    };
    assert_eq!(both("friendly_name").await, [Value::Null, Value::Null]);

    // A REST update.
    let r = s.post(&paths[1], &[("FriendlyName", "Carol C")]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        both("friendly_name").await,
        [json!("Carol C"), json!("Carol C")]
    );

    // A push binding: the user becomes notifiable.
    assert_eq!(both("is_notifiable").await, [Value::Null, Value::Null]);
    s.binding(&svc, "carol", "apn", "t1").await;
    assert_eq!(both("is_notifiable").await, [json!(true), json!(true)]);

    // A client session: online, then offline when it ends (committed by the engine).
    s.timings(&svc, 1_000, 3_000, 0).await;
    let token = s.token(&svc, "carol");
    let session = s.open_session(&token).await;
    s.until_online(&svc, "carol", true).await;
    assert_eq!(both("is_online").await, [json!(true), json!(true)]);
    assert_eq!(s.close_session(&token, &session).await.status, 204);
    s.until_online(&svc, "carol", false).await;
    assert_eq!(both("is_online").await, [json!(false), json!(false)]);

    // Reachability turned off and on again: the stored state is reset to unknown.
    for enabled in ["false", "true"] {
        let r = s
            .post(
                &format!("/chat/v2/Services/{svc}"),
                &[("ReachabilityEnabled", enabled)],
            )
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    assert_eq!(both("is_online").await, [Value::Null, Value::Null]);

    // Deleted, then created again under the same identity: a new user.
    assert_eq!(s.delete(&paths[1]).await.status, 204);
    assert_eq!(s.get(&paths[0]).await.status, 404);
    assert_eq!(s.get(&paths[1]).await.status, 404);
    let again = s.user(&svc, "carol").await;
    assert_ne!(again, us);
    assert_eq!(s.get(&paths[0]).await.str("sid"), again);
    assert_eq!(s.get(&paths[1]).await.status, 404);

    // The service deleted: its users go by cascade.
    assert_eq!(
        s.delete(&format!("/chat/v2/Services/{svc}")).await.status,
        204
    );
    assert_eq!(s.get(&paths[0]).await.status, 404);
    s.stop().await;
}
