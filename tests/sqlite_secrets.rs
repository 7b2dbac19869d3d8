//! Secrets at rest that nothing reads back: push credentials' certificates, private keys,
//! API keys and secrets are stored as fingerprints, never in plain form.

mod common;

#[tokio::test]
async fn push_credential_secrets_are_stored_as_fingerprints_only() {
    let s = common::spawn().await;
    let created = s
        .post(
            "/chat/v2/Credentials",
            &[
                ("Type", "apn"),
                ("FriendlyName", "ios"),
                ("Certificate", "-----BEGIN CERTIFICATE-----cert-marker"),
                ("PrivateKey", "-----BEGIN PRIVATE KEY-----key-marker"),
            ],
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let sid = created.str("sid");
    let updated = s
        .post(
            &format!("/chat/v2/Credentials/{sid}"),
            &[("PrivateKey", "-----BEGIN PRIVATE KEY-----rotated-marker")],
        )
        .await;
    assert_eq!(updated.status, 200, "{:?}", updated.body);
    let fcm = s
        .post(
            "/chat/v2/Credentials",
            &[("Type", "fcm"), ("Secret", "fcm-server-key-marker")],
        )
        .await;
    assert_eq!(fcm.status, 201, "{:?}", fcm.body);

    let conn = rusqlite::Connection::open(s.db_path()).expect("open");
    let mut stmt = conn
        .prepare("SELECT coalesce(certificate, ''), coalesce(private_key, ''), coalesce(secret, '') FROM credentials")
        .expect("prepare");
    let stored: Vec<String> = stmt
        .query_map([], |r| {
            Ok(format!(
                "{}|{}|{}",
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?
            ))
        })
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(stored.len(), 2);
    for row in &stored {
        assert!(!row.contains("marker") && !row.contains("BEGIN"), "{row}");
        for value in row.split('|').filter(|v| !v.is_empty()) {
            assert!(value.starts_with("sha256:") && value.len() == 71, "{value}");
        }
    }
    drop(stmt);
    drop(conn);
    s.stop().await;
}
