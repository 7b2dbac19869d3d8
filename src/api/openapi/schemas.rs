//! The `components` of reachd's OpenAPI document: security schemes and the JSON shapes the
//! native and client views render (`api::native::views`, the client handlers), plus Twilio's
//! error body.
//!
//! May depend on: serde_json.

use serde_json::{Map, Value, json};

/// The error answers every operation may give, with what causes them.
pub const ERROR_RESPONSES: [(u16, &str); 7] = [
    (
        400,
        "A missing or invalid parameter (code 20001, naming it).",
    ),
    (
        401,
        "Missing or bad credentials (20003) or access token (20101–20107, 20157).",
    ),
    (404, "Unknown path, resource or malformed SID (20404)."),
    (405, "Method not allowed (20004)."),
    (413, "Body over the size limit (20001)."),
    (429, "Too many requests (20429)."),
    (
        503,
        "Storage unavailable; retry after `Retry-After` (20500).",
    ),
];

/// A `$ref` to a component schema.
pub fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

pub fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": reference("Error")}},
    })
}

pub fn security_schemes() -> Value {
    json!({
        "basicAuth": {
            "type": "http", "scheme": "basic",
            "description": "Account SID and auth token, or an API key SID (`SK…`) and secret.",
        },
        "bearerAuth": {
            "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
            "description": "A Twilio-format access token (HS256, chat grant with the service).",
        },
        "twilioToken": {
            "type": "apiKey", "in": "header", "name": "X-Twilio-Token",
            "description": "The same access token in Twilio's SDK header.",
        },
        "tokenQuery": {
            "type": "apiKey", "in": "query", "name": "token",
            "description": "The access token in the query (WebSocket upgrades only).",
        },
    })
}

fn string() -> Value {
    json!({"type": "string"})
}
fn nullable_string() -> Value {
    json!({"type": "string", "nullable": true})
}
fn time() -> Value {
    json!({"type": "string", "format": "date-time"})
}
fn nullable_time() -> Value {
    json!({"type": "string", "format": "date-time", "nullable": true})
}
fn integer() -> Value {
    json!({"type": "integer"})
}
fn nullable_integer() -> Value {
    json!({"type": "integer", "nullable": true})
}
fn boolean() -> Value {
    json!({"type": "boolean"})
}
fn nullable_boolean() -> Value {
    json!({"type": "boolean", "nullable": true})
}
fn array_of(items: Value) -> Value {
    json!({"type": "array", "items": items})
}

/// An object whose listed properties are all required (views always render every key).
fn object(props: &[(&str, Value)]) -> Value {
    let properties: Map<String, Value> = props
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let required: Vec<&str> = props.iter().map(|(k, _)| *k).collect();
    json!({"type": "object", "properties": properties, "required": required})
}

/// The event types of the feed and of native webhook endpoints.
pub const EVENT_TYPES: [&str; 4] = [
    "user.added",
    "user.updated",
    "user.deleted",
    "user.reachability_updated",
];

fn reachability_props() -> Vec<(&'static str, Value)> {
    vec![
        ("identity", string()),
        ("user_sid", string()),
        ("is_online", nullable_boolean()),
        ("is_notifiable", nullable_boolean()),
        ("last_seen", nullable_time()),
        ("online_since", nullable_time()),
        ("session_count", nullable_integer()),
        ("sequence", integer()),
    ]
}

fn overrides() -> Value {
    object(&[
        ("ping_interval_ms", nullable_integer()),
        ("session_ttl_ms", nullable_integer()),
        ("offline_grace_ms", nullable_integer()),
    ])
}

fn page(items_key: &str, item: &str, cursor: &str) -> Value {
    object(&[
        (items_key, array_of(reference(item))),
        (cursor, nullable_string()),
    ])
}

fn endpoint() -> Value {
    let mut v = object(&[
        ("id", string()),
        ("service_sid", nullable_string()),
        ("url", string()),
        ("description", nullable_string()),
        (
            "event_types",
            json!({"type": "array", "nullable": true, "items": {"type": "string", "enum": EVENT_TYPES}}),
        ),
        ("disabled", boolean()),
        ("disabled_reason", nullable_string()),
        ("from_config", boolean()),
        ("created", time()),
        ("updated", time()),
    ]);
    v["properties"]["secret"] = json!({
        "type": "string",
        "description": "The signing secret (`whsec_…`), only in the creation answer.",
    });
    v
}

fn delivery() -> Value {
    let attempt = object(&[
        ("attempt", integer()),
        ("at", time()),
        ("status", nullable_integer()),
        ("latency_ms", integer()),
        ("response", nullable_string()),
        ("error", nullable_string()),
    ]);
    object(&[
        ("id", integer()),
        ("event_id", integer()),
        ("service_sid", string()),
        ("user_sid", string()),
        ("target", string()),
        (
            "format",
            json!({"type": "string", "enum": ["chat", "conversations", "native"]}),
        ),
        ("url", string()),
        ("method", string()),
        (
            "status",
            json!({"type": "string", "enum": ["pending", "delivered", "failed"]}),
        ),
        ("attempts", integer()),
        ("next_attempt", nullable_time()),
        ("idempotency_token", string()),
        ("last_status", nullable_integer()),
        ("last_error", nullable_string()),
        ("created", time()),
        ("updated", time()),
        ("attempt_log", array_of(attempt)),
    ])
}

fn event() -> Value {
    let data = object(&[
        ("account_sid", string()),
        ("service_sid", string()),
        ("user_sid", string()),
        ("identity", string()),
        ("is_online", nullable_boolean()),
        ("is_notifiable", nullable_boolean()),
        ("update_reasons", array_of(string())),
        ("reason", nullable_string()),
        ("sequence", integer()),
        ("last_seen", nullable_time()),
        ("session_count", nullable_integer()),
        ("source", string()),
    ]);
    object(&[
        ("id", json!({"type": "string", "pattern": "^[0-9]+$"})),
        ("type", json!({"type": "string", "enum": EVENT_TYPES})),
        ("timestamp", time()),
        ("data", data),
    ])
}

/// Every component schema.
pub fn schemas() -> Value {
    let mut user_row = reachability_props();
    user_row.push(("friendly_name", nullable_string()));
    let mut reachability_page = object(&[("users", array_of(reference("Reachability")))]);
    reachability_page["properties"]["not_found"] = array_of(string());
    reachability_page["properties"]["next_page_token"] = nullable_string();
    reachability_page["description"] =
        "`{users, not_found}` for identities, `{users, next_page_token}` for online=true.".into();
    let push = json!({"type": "string", "enum": ["apn", "gcm", "fcm"]});
    json!({
        "Error": object(&[
            ("code", integer()),
            ("message", string()),
            ("more_info", string()),
            ("status", integer()),
        ]),
        "Binding": object(&[
            ("sid", string()),
            ("service_sid", string()),
            ("user_sid", string()),
            ("identity", string()),
            ("binding_type", push),
            ("endpoint", string()),
            ("credential_sid", nullable_string()),
            ("date_created", time()),
            ("date_updated", time()),
        ]),
        "Reachability": object(&reachability_props()),
        "ReachabilityPage": reachability_page,
        "UserReachability": object(&user_row),
        "UserReachabilityPage": page("users", "UserReachability", "next_page_token"),
        "Session": object(&[
            ("id", string()),
            ("transport", json!({"type": "string", "enum": ["http", "websocket"]})),
            ("endpoint", nullable_string()),
            ("created", time()),
            ("last_ping", time()),
            ("expires", time()),
        ]),
        "SessionList": object(&[
            ("identity", string()),
            ("user_sid", string()),
            ("sessions", array_of(reference("Session"))),
        ]),
        "Settings": object(&[
            ("service_sid", string()),
            ("reachability_enabled", boolean()),
            ("ping_interval_ms", integer()),
            ("session_ttl_ms", integer()),
            ("offline_grace_ms", integer()),
            ("overrides", overrides()),
        ]),
        "Stats": object(&[
            ("service_sid", string()),
            ("friendly_name", string()),
            ("reachability_enabled", boolean()),
            ("users", integer()),
            ("online_users", integer()),
            ("live_sessions", integer()),
            ("deliveries", object(&[
                ("pending", integer()),
                ("retrying", integer()),
                ("delivered", integer()),
                ("failed", integer()),
                ("oldest_pending_age_ms", nullable_integer()),
            ])),
        ]),
        "Event": event(),
        "EventPage": object(&[
            ("events", array_of(reference("Event"))),
            ("next_cursor", json!({"type": "string", "pattern": "^[0-9]+$"})),
            ("has_more", boolean()),
        ]),
        "Endpoint": endpoint(),
        "EndpointList": object(&[("endpoints", array_of(reference("Endpoint")))]),
        "Delivery": delivery(),
        "DeliveryPage": object(&[
            ("deliveries", array_of(reference("Delivery"))),
            ("next_before", nullable_integer()),
        ]),
        "Recovered": object(&[("resent", integer())]),
        "ClientSession": object(&[
            ("session_id", json!({"type": "string", "pattern": "^SE[0-9a-f]{16}$"})),
            ("identity", string()),
            ("service_sid", string()),
            ("reachability_enabled", boolean()),
            ("ping_interval", integer()),
            ("session_ttl", integer()),
            ("resumed", boolean()),
        ]),
        "UserDescriptor": object(&[
            ("identity", string()),
            ("user_sid", string()),
            ("friendly_name", nullable_string()),
            ("attributes", string()),
            ("is_online", nullable_boolean()),
            ("is_notifiable", nullable_boolean()),
            ("reachability_enabled", boolean()),
        ]),
    })
}
