//! Push bindings: server-side registration, Twilio list filters, fetch and delete in both
//! dialects, and the notifiable state they decide.

mod common;

use serde_json::json;

fn sids(list: &serde_json::Value) -> Vec<String> {
    list["bindings"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|b| {
                    b["identity"].as_str().unwrap_or_default().to_string()
                        + ":"
                        + b["binding_type"].as_str().unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn registration_replaces_endpoints_and_lists_filter_like_twilio() {
    let s = common::spawn().await;
    let svc = s.service("b").await;
    for who in ["alice", "bob", "carol"] {
        s.user(&svc, who).await;
    }
    let a_apn = s.binding(&svc, "alice", "apn", "tok-a1").await;
    assert!(a_apn["sid"].as_str().unwrap_or_default().starts_with("BS"));
    s.binding(&svc, "alice", "fcm", "tok-a2").await;
    s.binding(&svc, "bob", "gcm", "tok-b1").await;
    s.binding(&svc, "carol", "fcm", "tok-c1").await;

    // Same device again: replaced in place, same SID.
    let again = s.binding(&svc, "alice", "apn", "tok-a1").await;
    assert_eq!(again["sid"], a_apn["sid"]);
    // An explicit endpoint re-registered with a new token keeps one binding.
    let e1 = s
        .post_json(
            &format!("/api/v1/services/{svc}/users/bob/bindings"),
            json!({"binding_type": "fcm", "address": "x1", "endpoint": "app:bob:d1"}),
        )
        .await;
    let e2 = s
        .post_json(
            &format!("/api/v1/services/{svc}/users/bob/bindings"),
            json!({"binding_type": "fcm", "address": "x2", "endpoint": "app:bob:d1"}),
        )
        .await;
    assert_eq!((e1.status, e2.status), (201, 201));
    assert_eq!(e1.body["sid"], e2.body["sid"]);
    assert_eq!(e2.body["endpoint"], "app:bob:d1");

    let base = format!("/chat/v2/Services/{svc}/Bindings");
    let all = s.get(&base).await;
    assert_eq!(all.body["bindings"].as_array().map(Vec::len), Some(5));
    let filtered = s
        .get(&format!(
            "{base}?BindingType=apn&BindingType=fcm&Identity=alice&Identity=bob"
        ))
        .await;
    assert_eq!(
        sids(&filtered.body),
        vec!["alice:apn", "alice:fcm", "bob:fcm"]
    );
    let next = s.get(&format!("{base}?BindingType=fcm&PageSize=1")).await;
    let next_url = next.body["meta"]["next_page_url"]
        .as_str()
        .expect("next")
        .to_string();
    assert!(
        next_url.contains("BindingType=fcm") && next_url.contains("PageToken=PT"),
        "{next_url}"
    );
    assert_eq!(
        s.get(&next_url).await.body["bindings"][0]["binding_type"],
        "fcm"
    );

    let one = &all.body["bindings"][0];
    assert_eq!(
        one["links"]["user"],
        format!("{}/chat/v2/Services/{svc}/Users/alice", s.base)
    );
    assert_eq!(one["message_types"].as_array().map(Vec::len), Some(4));
    let bs = one["sid"].as_str().unwrap_or_default().to_string();
    assert_eq!(
        s.get(&format!("{base}/{bs}")).await.body["sid"],
        bs.as_str()
    );

    let bad = s.get(&format!("{base}?BindingType=sms")).await;
    assert_eq!((bad.status, bad.code()), (400, 20001));
    let bad = s
        .get(&format!(
            "/chat/v2/Services/{svc}/Bindings?BindingType=twilsock"
        ))
        .await;
    assert_eq!(bad.status, 400, "Chat has no twilsock bindings");
    let conv = s
        .get(&format!(
            "/conversations/v1/Services/{svc}/Bindings?BindingType=twilsock"
        ))
        .await;
    assert_eq!(conv.status, 200);

    assert_eq!(s.delete(&format!("{base}/{bs}")).await.status, 204);
    assert_eq!(s.get(&format!("{base}/{bs}")).await.status, 404);
    assert_eq!(s.delete(&format!("{base}/BSxx")).await.status, 404);
    s.stop().await;
}

#[tokio::test]
async fn user_bindings_are_scoped_to_their_user() {
    let s = common::spawn().await;
    let svc = s.service("ub").await;
    let alice = s.user(&svc, "alice").await;
    s.user(&svc, "bob").await;
    let a = s.binding(&svc, &alice, "gcm", "a").await;
    let b = s.binding(&svc, "bob", "gcm", "b").await;
    let a_sid = a["sid"].as_str().unwrap_or_default();
    let b_sid = b["sid"].as_str().unwrap_or_default();

    let list = s
        .get(&format!(
            "/chat/v2/Services/{svc}/Users/alice/Bindings?BindingType=gcm"
        ))
        .await;
    assert_eq!(list.body["bindings"].as_array().map(Vec::len), Some(1));
    let ub = &list.body["bindings"][0];
    assert_eq!(ub["user_sid"], alice);
    assert!(ub.get("links").is_none());
    assert_eq!(
        ub["url"],
        format!(
            "{}/chat/v2/Services/{svc}/Users/{alice}/Bindings/{a_sid}",
            s.base
        )
    );

    assert_eq!(
        s.get(&format!(
            "/chat/v2/Services/{svc}/Users/{alice}/Bindings/{b_sid}"
        ))
        .await
        .status,
        404
    );
    assert_eq!(
        s.delete(&format!(
            "/chat/v2/Services/{svc}/Users/{alice}/Bindings/{b_sid}"
        ))
        .await
        .status,
        404
    );
    assert_eq!(
        s.delete(&format!(
            "/chat/v2/Services/{svc}/Users/{alice}/Bindings/{a_sid}"
        ))
        .await
        .status,
        204
    );

    let conv = s
        .get(&format!(
            "/conversations/v1/Services/{svc}/Bindings/{b_sid}"
        ))
        .await;
    assert_eq!(conv.body["chat_service_sid"], svc);
    assert!(conv.body.get("links").is_none() && conv.body.get("user_sid").is_none());
    assert_eq!(
        s.delete(&format!(
            "/conversations/v1/Services/{svc}/Bindings/{b_sid}"
        ))
        .await
        .status,
        204
    );
    // Deleting a user removes their bindings.
    s.binding(&svc, "bob", "apn", "c").await;
    assert_eq!(
        s.delete(&format!("/chat/v2/Services/{svc}/Users/bob"))
            .await
            .status,
        204
    );
    assert_eq!(
        s.get(&format!("/chat/v2/Services/{svc}/Bindings"))
            .await
            .body["bindings"],
        json!([])
    );
    s.stop().await;
}

#[tokio::test]
async fn notifiable_follows_push_bindings_while_reachability_is_enabled() {
    let s = common::spawn().await;
    let svc = s.service("n").await;
    s.user(&svc, "alice").await;
    let user = format!("/chat/v2/Services/{svc}/Users/alice");
    let b = s.binding(&svc, "alice", "apn", "t1").await;
    assert!(
        s.get(&user).await.body["is_notifiable"].is_null(),
        "disabled → null"
    );

    s.post(
        &format!("/chat/v2/Services/{svc}"),
        &[("ReachabilityEnabled", "true")],
    )
    .await;
    let fetched = s.get(&user).await;
    assert_eq!(
        fetched.body["is_notifiable"], true,
        "a user with a binding is notifiable once enabled"
    );
    assert!(
        fetched.body["is_online"].is_null(),
        "never online since enabling"
    );
    assert!(
        s.get(&format!("/chat/v2/Services/{svc}/Users")).await.body["users"][0]["is_notifiable"]
            .is_null(),
        "lists show null"
    );

    let bs = b["sid"].as_str().unwrap_or_default();
    assert_eq!(
        s.delete(&format!("/chat/v2/Services/{svc}/Bindings/{bs}"))
            .await
            .status,
        204
    );
    assert_eq!(s.get(&user).await.body["is_notifiable"], false);
    s.binding(&svc, "alice", "fcm", "t2").await;
    assert_eq!(
        s.get(&format!("/conversations/v1/Services/{svc}/Users/alice"))
            .await
            .body["is_notifiable"],
        true
    );
    s.stop().await;
}

#[tokio::test]
async fn native_registration_validates_its_input() {
    let s = common::spawn().await;
    let svc = s.service("v").await;
    s.user(&svc, "alice").await;
    let path = format!("/api/v1/services/{svc}/users/alice/bindings");
    for (body, param) in [
        (json!({"address": "x"}), "binding_type"),
        (
            json!({"binding_type": "sms", "address": "x"}),
            "binding_type",
        ),
        (json!({"binding_type": "apn"}), "address"),
        (
            json!({"binding_type": "apn", "address": "x", "credential_sid": "CR1"}),
            "credential_sid",
        ),
    ] {
        let r = s.post_json(&path, body).await;
        assert_eq!((r.status, r.code()), (400, 20001), "{:?}", r.body);
        assert!(r.str("message").contains(param), "{:?}", r.body);
    }
    let form = s
        .post(&path, &[("binding_type", "gcm"), ("address", "via-form")])
        .await;
    assert_eq!(form.status, 201);
    let nobody = s
        .post_json(
            &format!("/api/v1/services/{svc}/users/nobody/bindings"),
            json!({"binding_type": "apn", "address": "x"}),
        )
        .await;
    assert_eq!(nobody.status, 404);
    assert_eq!(
        s.get(&format!("/chat/v2/Services/{svc}/Bindings"))
            .await
            .body["bindings"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    s.stop().await;
}
