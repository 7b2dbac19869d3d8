//! What each operation of reachd's OpenAPI document says beyond its route: summary, query and
//! header parameters, request body and success answer, keyed by the handler name the route
//! tables use as `operationId`.
//!
//! May depend on: serde_json, api::openapi::schemas.

use serde_json::{Value, json};

use super::schemas::{EVENT_TYPES, reference};

/// Either access-token header; the document's default is Basic auth.
fn client_security() -> Value {
    json!([{"bearerAuth": []}, {"twilioToken": []}])
}

fn query(name: &str, schema: Value, description: &str) -> Value {
    json!({"name": name, "in": "query", "required": false, "schema": schema, "description": description})
}

fn required_query(name: &str, schema: Value, description: &str) -> Value {
    json!({"name": name, "in": "query", "required": true, "schema": schema, "description": description})
}

fn limit(max: i64, default: i64) -> Value {
    query(
        "limit",
        json!({"type": "integer", "minimum": 1, "maximum": max, "default": default}),
        "Page size.",
    )
}

fn page_token() -> Value {
    query(
        "page_token",
        json!({"type": "string"}),
        "`next_page_token` of the previous page.",
    )
}

/// A body accepted as JSON or as a form (repeated keys for lists).
fn body(properties: Value, required: &[&str]) -> Value {
    let schema = json!({"type": "object", "properties": properties, "required": required});
    json!({
        "required": !required.is_empty(),
        "content": {
            "application/json": {"schema": schema},
            "application/x-www-form-urlencoded": {"schema": schema},
        },
    })
}

fn answer(status: u16, description: &str, schema: Option<&str>) -> Value {
    let mut response = json!({"description": description});
    if let Some(name) = schema {
        response["content"] = json!({"application/json": {"schema": reference(name)}});
    }
    json!({ status.to_string(): response })
}

fn op(tag: &str, summary: &str, parameters: Vec<Value>, responses: Value) -> Value {
    json!({"tags": [tag], "summary": summary, "parameters": parameters, "responses": responses})
}

fn native(summary: &str, parameters: Vec<Value>, responses: Value) -> Value {
    op("native", summary, parameters, responses)
}

fn client(summary: &str, parameters: Vec<Value>, responses: Value) -> Value {
    let mut v = op("client", summary, parameters, responses);
    v["security"] = client_security();
    v
}

fn with_body(mut op: Value, body: Value) -> Value {
    op["requestBody"] = body;
    op
}

fn binding_body() -> Value {
    body(
        json!({
            "binding_type": {"type": "string", "enum": ["apn", "gcm", "fcm"]},
            "address": {"type": "string", "minLength": 1, "maxLength": 4096,
                "description": "The device token."},
            "credential_sid": {"type": "string", "pattern": "^CR[0-9a-fA-F]{32}$"},
            "endpoint": {"type": "string", "minLength": 1, "maxLength": 256,
                "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$",
                "description": "At most 256 bytes (UTF-8), no control characters. \
                    Re-registering an endpoint replaces its binding."},
        }),
        &["binding_type", "address"],
    )
}

fn endpoint_body(create: bool) -> Value {
    let mut props = json!({
        "url": {"type": "string", "format": "uri", "description": "Absolute http(s) URL."},
        "description": {"type": "string", "maxLength": 256},
        "event_types": {"type": "array", "items": {"type": "string", "enum": EVENT_TYPES},
            "description": "Empty (one empty value in a form): every type."},
    });
    if create {
        return body(props, &["url"]);
    }
    props["disabled"] = json!({"type": "boolean"});
    body(props, &[])
}

fn settings_body() -> Value {
    let ms = |min: i64| json!({"type": "integer", "nullable": true, "minimum": min, "maximum": 86_400_000});
    body(
        json!({
            "ping_interval_ms": ms(100),
            "session_ttl_ms": ms(200),
            "offline_grace_ms": ms(0),
        }),
        &[],
    )
}

/// The native API's operations.
fn describe_native(operation: &str) -> Option<Value> {
    let cursor = json!({"type": "string", "pattern": "^[0-9]*$"});
    Some(match operation {
        "register_binding" => with_body(
            native(
                "Register a push binding for a user (replaces the endpoint's binding)",
                vec![],
                answer(201, "The binding.", Some("Binding")),
            ),
            binding_body(),
        ),
        "list_sessions" => native(
            "A user's live sessions",
            vec![],
            answer(200, "The sessions.", Some("SessionList")),
        ),
        "read_reachability" => native(
            "Bulk reachability by identity, or page through online users",
            vec![
                query(
                    "identity",
                    json!({"type": "array", "items": {"type": "string"}, "maxItems": 1000}),
                    "Repeat for each identity (at most 1000).",
                ),
                query(
                    "online",
                    json!({"type": "boolean"}),
                    "`true` pages through online users; required when no identity is given.",
                ),
                limit(1000, 100),
                page_token(),
            ],
            answer(200, "Reachability views.", Some("ReachabilityPage")),
        ),
        "fetch_settings" => native(
            "The service's presence timings",
            vec![],
            answer(200, "Effective timings and overrides.", Some("Settings")),
        ),
        "update_settings" => with_body(
            native(
                "Override presence timings (null or empty resets one)",
                vec![],
                answer(200, "Effective timings and overrides.", Some("Settings")),
            ),
            settings_body(),
        ),
        "read_events" => native(
            "The durable event feed, oldest first (`Accept: text/event-stream` streams it)",
            vec![
                query("after", cursor.clone(), "Events after this cursor."),
                limit(1000, 100),
                query(
                    "tail",
                    json!({"type": "integer", "minimum": 1, "maximum": 1000}),
                    "Only the last N events.",
                ),
                json!({"name": "Last-Event-ID", "in": "header", "required": false,
                    "schema": cursor, "description": "Resume after this event id."}),
            ],
            answer(200, "A page of events.", Some("EventPage")),
        ),
        "fetch_stats" => native(
            "Per-service counts",
            vec![],
            answer(200, "Counts.", Some("Stats")),
        ),
        "list_user_reachability" => native(
            "Users with their reachability",
            vec![limit(1000, 100), page_token()],
            answer(200, "A page of users.", Some("UserReachabilityPage")),
        ),
        "list_endpoints" => native(
            "Native webhook endpoints (config-file ones included)",
            vec![],
            answer(200, "The endpoints.", Some("EndpointList")),
        ),
        "create_endpoint" => with_body(
            native(
                "Create a native webhook endpoint (its secret is shown only here)",
                vec![],
                answer(201, "The endpoint with its secret.", Some("Endpoint")),
            ),
            endpoint_body(true),
        ),
        "fetch_endpoint" => native(
            "One endpoint",
            vec![],
            answer(200, "The endpoint.", Some("Endpoint")),
        ),
        "update_endpoint" => with_body(
            native(
                "Update an endpoint",
                vec![],
                answer(200, "The endpoint.", Some("Endpoint")),
            ),
            endpoint_body(false),
        ),
        "delete_endpoint" => native("Delete an endpoint", vec![], answer(204, "Deleted.", None)),
        "list_deliveries" => native(
            "An endpoint's delivery log, newest first",
            vec![
                query(
                    "status",
                    json!({"type": "string", "enum": ["pending", "delivered", "failed"]}),
                    "Only deliveries in this state.",
                ),
                limit(200, 50),
                query(
                    "before",
                    json!({"type": "integer"}),
                    "`next_before` of the previous page.",
                ),
            ],
            answer(200, "A page of deliveries.", Some("DeliveryPage")),
        ),
        "recover_deliveries" => native(
            "Resend every failed delivery since a time",
            vec![required_query(
                "since",
                json!({"type": "string", "format": "date-time"}),
                "RFC 3339 time.",
            )],
            answer(202, "How many were queued again.", Some("Recovered")),
        ),
        "resend_delivery" => native(
            "Attempt a pending delivery now, or queue a fresh copy of a finished one",
            vec![],
            answer(
                202,
                "The pending delivery, now due; or the new copy.",
                Some("Delivery"),
            ),
        ),
        "fetch_openapi" => {
            let mut v = native(
                "This document (no authentication)",
                vec![],
                json!({"200": {"description": "OpenAPI 3 document.",
                    "content": {"application/json": {"schema": {"type": "object"}}}}}),
            );
            v["security"] = json!([]);
            v
        }
        _ => return None,
    })
}

/// The client API's operations.
fn describe_client(operation: &str) -> Option<Value> {
    Some(match operation {
        "open_session" => with_body(
            client(
                "Open a session (the user is created on first contact)",
                vec![],
                answer(201, "The session.", Some("ClientSession")),
            ),
            body(
                json!({
                    "resume": {"type": "string", "description": "An earlier session id."},
                    "endpoint": {"type": "string", "maxLength": 256},
                }),
                &[],
            ),
        ),
        "ping_session" => client("Keep a session alive", vec![], answer(204, "Alive.", None)),
        "close_session" => client("Close a session", vec![], answer(204, "Closed.", None)),
        "register_push" => with_body(
            client(
                "Register push for the caller (defaults from the token's grant)",
                vec![],
                answer(201, "The binding.", Some("Binding")),
            ),
            binding_body(),
        ),
        "unregister_push" => client(
            "Unregister one of the caller's bindings",
            vec![],
            answer(204, "Deleted.", None),
        ),
        "fetch_user_descriptor" => client(
            "Another user's descriptor, same service",
            vec![],
            answer(200, "The descriptor.", Some("UserDescriptor")),
        ),
        "open_socket" => {
            let mut v = client(
                "The realtime WebSocket (see the README for the protocol)",
                vec![query(
                    "resume",
                    json!({"type": "string"}),
                    "An earlier session id.",
                )],
                json!({"101": {"description": "Switching Protocols."}}),
            );
            v["security"] = json!([{"bearerAuth": []}, {"twilioToken": []}, {"tokenQuery": []}]);
            v
        }
        "serve_sdk" => {
            let mut v = client(
                "The JS SDK (an ES module; no authentication)",
                vec![],
                json!({"200": {"description": "JavaScript.",
                    "content": {"text/javascript": {"schema": {"type": "string"}}}}}),
            );
            v["security"] = json!([]);
            v
        }
        _ => return None,
    })
}

/// The Operation object (without path parameters) of a handler, if it is documented.
pub fn describe(operation: &str) -> Option<Value> {
    describe_native(operation).or_else(|| describe_client(operation))
}
