//! JSON views of the native API (RFC 3339 timestamps, snake_case).
//!
//! May depend on: serde_json, domain.

use serde_json::{Value, json};

use crate::domain::binding::Binding;
use crate::domain::time::rfc3339_ms;

pub fn binding_json(b: &Binding) -> Value {
    json!({
        "sid": b.sid,
        "service_sid": b.service_sid,
        "user_sid": b.user_sid,
        "identity": b.identity,
        "binding_type": b.binding_type.as_str(),
        "endpoint": b.endpoint,
        "credential_sid": b.credential_sid,
        "date_created": rfc3339_ms(b.date_created),
        "date_updated": rfc3339_ms(b.date_updated),
    })
}
