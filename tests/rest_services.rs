//! Services across Chat v1, Chat v2 and Conversations, their configuration singletons, and
//! routing errors.

mod common;

use serde_json::json;

#[tokio::test]
async fn chat_v2_service_lifecycle_and_update_parameters() {
    let s = common::spawn().await;
    let created = s
        .post("/chat/v2/Services", &[("FriendlyName", "Probe Svc")])
        .await;
    assert_eq!(created.status, 201);
    let sid = created.str("sid");
    assert!(sid.starts_with("IS") && sid.len() == 34);
    assert_eq!(created.body["friendly_name"], "Probe Svc");
    assert_eq!(created.body["reachability_enabled"], false);
    assert_eq!(created.body["webhook_method"], "POST");
    assert_eq!(created.body["webhook_filters"], json!([]));
    assert_eq!(
        created.body["url"],
        format!("{}/chat/v2/Services/{sid}", s.base)
    );
    assert_eq!(
        created.body["links"]["bindings"],
        format!("{}/chat/v2/Services/{sid}/Bindings", s.base)
    );
    let date = created.str("date_created");
    assert!(date.ends_with('Z') && date.len() == 20, "{date}");

    let updated = s
        .post(
            &format!("/chat/v2/Services/{sid}"),
            &[
                ("ReadStatusEnabled", "false"),
                ("ReachabilityEnabled", "TRUE"),
                ("Notifications.NewMessage.Enabled", "true"),
                ("Notifications.NewMessage.Sound", "ding"),
                ("PostWebhookUrl", "https://example.invalid/post"),
                ("WebhookMethod", "get"),
                ("WebhookFilters", "onUserAdded"),
                ("WebhookFilters", "onUserUpdated"),
                ("Limits.UserChannels", "100"),
                ("PostWebhookRetryCount", "2"),
                ("Unknown", "ignored"),
            ],
        )
        .await;
    assert_eq!(updated.status, 200, "{:?}", updated.body);
    let b = &updated.body;
    assert_eq!(b["read_status_enabled"], false);
    assert_eq!(b["reachability_enabled"], true);
    assert_eq!(b["notifications"]["new_message"]["enabled"], true);
    assert_eq!(b["notifications"]["new_message"]["sound"], "ding");
    assert_eq!(b["post_webhook_url"], "https://example.invalid/post");
    assert_eq!(b["webhook_method"], "GET");
    assert_eq!(
        b["webhook_filters"],
        json!(["onUserAdded", "onUserUpdated"])
    );
    assert_eq!(b["post_webhook_retry_count"], 2);

    let fetched = s.get(&format!("/chat/v2/Services/{sid}")).await;
    assert_eq!(fetched.body, updated.body);

    assert_eq!(
        s.delete(&format!("/chat/v2/Services/{sid}")).await.status,
        204
    );
    assert_eq!(s.get(&format!("/chat/v2/Services/{sid}")).await.status, 404);
    assert_eq!(
        s.delete(&format!("/chat/v2/Services/{sid}")).await.status,
        404
    );
    s.stop().await;
}

#[tokio::test]
async fn one_reachability_flag_across_dialects() {
    let s = common::spawn().await;
    let sid = s.service("shared").await;
    let v1 = s
        .post(
            &format!("/chat/v1/Services/{sid}"),
            &[("ReachabilityEnabled", "true")],
        )
        .await;
    assert_eq!(v1.status, 200);
    assert_eq!(v1.body["url"], format!("{}/chat/v1/Services/{sid}", s.base));
    assert!(v1.body.get("media").is_none() && v1.body.get("webhooks").is_some());
    assert_eq!(
        s.get(&format!("/chat/v2/Services/{sid}")).await.body["reachability_enabled"],
        true
    );
    let conf = s
        .get(&format!("/conversations/v1/Services/{sid}/Configuration"))
        .await;
    assert_eq!(conf.body["reachability_enabled"], true);
    assert!(conf.body.get("account_sid").is_none());

    let off = s
        .post(
            &format!("/conversations/v1/Services/{sid}/Configuration"),
            &[("ReachabilityEnabled", "false")],
        )
        .await;
    assert_eq!(off.status, 200);
    assert_eq!(
        s.get(&format!("/chat/v1/Services/{sid}")).await.body["reachability_enabled"],
        false
    );
    s.stop().await;
}

#[tokio::test]
async fn conversations_services_and_webhook_configuration() {
    let s = common::spawn().await;
    let created = s
        .post(
            "/conversations/v1/Services",
            &[("FriendlyName", "Conv Svc")],
        )
        .await;
    assert_eq!(created.status, 201);
    let sid = created.str("sid");
    assert_eq!(
        created.body["links"]["configuration"],
        format!("{}/conversations/v1/Services/{sid}/Configuration", s.base)
    );
    // No update on Conversations services.
    let update = s
        .post(
            &format!("/conversations/v1/Services/{sid}"),
            &[("FriendlyName", "x")],
        )
        .await;
    assert_eq!((update.status, update.code()), (405, 20004));

    let hooks_path = format!("/conversations/v1/Services/{sid}/Configuration/Webhooks");
    let fresh = s.get(&hooks_path).await;
    for key in ["pre_webhook_url", "post_webhook_url", "filters", "method"] {
        assert!(
            fresh.body[key].is_null(),
            "{key} should start null: {:?}",
            fresh.body
        );
    }
    let set = s
        .post(
            &hooks_path,
            &[
                ("PostWebhookUrl", "https://hooks.example.com/c"),
                ("Filters", "onUserUpdated"),
                ("Filters", "onUserAdded"),
                ("Method", "POST"),
            ],
        )
        .await;
    assert_eq!(set.status, 200);
    assert_eq!(set.body["filters"], json!(["onUserUpdated", "onUserAdded"]));
    // The same post-event webhook seen through Chat.
    let chat = s.get(&format!("/chat/v2/Services/{sid}")).await;
    assert_eq!(chat.body["post_webhook_url"], "https://hooks.example.com/c");

    let listed = s.get("/conversations/v1/Services").await;
    assert_eq!(listed.body["meta"]["key"], "services");
    assert_eq!(listed.body["services"][0]["sid"], sid);
    assert_eq!(
        s.delete(&format!("/conversations/v1/Services/{sid}"))
            .await
            .status,
        204
    );
    s.stop().await;
}

#[tokio::test]
async fn account_configuration_and_webhooks() {
    let s = common::spawn().await;
    let sid = s.service("default").await;
    let fresh = s.get("/conversations/v1/Configuration").await;
    assert_eq!(fresh.body["account_sid"], common::ACCOUNT_SID);
    assert!(fresh.body["default_chat_service_sid"].is_null());
    let set = s
        .post(
            "/conversations/v1/Configuration",
            &[
                ("DefaultChatServiceSid", &sid),
                ("DefaultInactiveTimer", "PT10M"),
            ],
        )
        .await;
    assert_eq!(set.status, 200, "{:?}", set.body);
    assert_eq!(set.body["default_chat_service_sid"], sid);
    assert_eq!(set.body["default_inactive_timer"], "PT10M");
    assert_eq!(
        set.body["links"]["service"],
        format!("{}/conversations/v1/Services/{sid}/Configuration", s.base)
    );
    let bad = s
        .post(
            "/conversations/v1/Configuration",
            &[("DefaultClosedTimer", "10 minutes")],
        )
        .await;
    assert_eq!((bad.status, bad.code()), (400, 20001));
    assert!(bad.str("message").contains("DefaultClosedTimer"));

    let hooks = s
        .post(
            "/conversations/v1/Configuration/Webhooks",
            &[
                ("Method", "POST"),
                ("Filters", "onUserUpdated"),
                ("Filters", "onUserAdded"),
                ("PostWebhookUrl", "https://h.example.com/a"),
                ("Target", "webhook"),
            ],
        )
        .await;
    assert_eq!(hooks.status, 200);
    assert_eq!(hooks.body["target"], "webhook");
    assert_eq!(
        hooks.body["filters"],
        json!(["onUserUpdated", "onUserAdded"])
    );
    assert_eq!(
        s.get("/conversations/v1/Configuration/Webhooks").await.body,
        hooks.body
    );
    // Deleting the default service clears the default.
    assert_eq!(
        s.delete(&format!("/chat/v2/Services/{sid}")).await.status,
        204
    );
    assert!(
        s.get("/conversations/v1/Configuration").await.body["default_chat_service_sid"].is_null()
    );
    s.stop().await;
}

#[tokio::test]
async fn unknown_paths_methods_and_public_url() {
    let s = common::spawn_with(|c| c.public_url = Some("https://reach.example.com".into())).await;
    let r = s
        .get("/chat/v2/Services/ISffffffffffffffffffffffffffffffff/Channels")
        .await;
    assert_eq!((r.status, r.code()), (404, 20404));
    assert_eq!(
        r.str("message"),
        "The requested resource /v2/Services/ISffffffffffffffffffffffffffffffff/Channels was not found"
    );
    assert_eq!(
        r.body["more_info"],
        "https://www.twilio.com/docs/errors/20404"
    );
    let r = s
        .send(
            s.http
                .patch(s.url("/chat/v2/Services"))
                .basic_auth(common::ACCOUNT_SID, Some(common::AUTH_TOKEN)),
        )
        .await;
    assert_eq!((r.status, r.code()), (405, 20004));
    let created = s.post("/chat/v2/Services", &[("FriendlyName", "p")]).await;
    assert!(
        created
            .str("url")
            .starts_with("https://reach.example.com/chat/v2/Services/IS")
    );
    let health = s.send(s.http.get(s.url("/healthz"))).await;
    assert_eq!(
        (health.status, health.body["status"].as_str()),
        (200, Some("ok"))
    );
    let ready = s.send(s.http.get(s.url("/readyz"))).await;
    assert_eq!(
        (ready.status, ready.body["status"].as_str()),
        (200, Some("ready"))
    );
    s.stop().await;
}

#[tokio::test]
async fn forwarded_headers_set_the_base_when_no_public_url() {
    let s = common::spawn().await;
    let req = s
        .http
        .post(s.url("/chat/v2/Services"))
        .basic_auth(common::ACCOUNT_SID, Some(common::AUTH_TOKEN))
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "chat.example.org")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("FriendlyName=x");
    let r = s.send(req).await;
    assert!(
        r.str("url")
            .starts_with("https://chat.example.org/chat/v2/Services/"),
        "{}",
        r.str("url")
    );
    s.stop().await;
}
