//! reachd's own OpenAPI 3 document for the native API (`/api/v1`) and the client API
//! (`/client/v1`), and the route tables both APIs are mounted from: one [`Route`] per
//! (method, path) names its handler and its operation, so the document and the router can
//! never disagree. The document is served without authentication at
//! `GET /api/v1/openapi.json`.
//!
//! May depend on: actix-web, serde_json, api::{errors, native, client} (their route tables).

mod operations;
mod schemas;

use std::sync::OnceLock;

use actix_web::http::Method;
use actix_web::http::header::{ALLOW, HeaderValue};
use actix_web::{HttpResponse, ResponseError, Scope, web};
use serde_json::{Map, Value, json};

use super::errors::ApiError;

/// An HTTP method a route answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Get,
    Post,
    Delete,
}

impl Verb {
    pub fn method(self) -> Method {
        match self {
            Verb::Get => Method::GET,
            Verb::Post => Method::POST,
            Verb::Delete => Method::DELETE,
        }
    }

    /// The method's name, as in `Allow`.
    pub fn name(self) -> &'static str {
        match self {
            Verb::Get => "GET",
            Verb::Post => "POST",
            Verb::Delete => "DELETE",
        }
    }

    /// The lower-case name OpenAPI uses as the operation key.
    pub fn key(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::Post => "post",
            Verb::Delete => "delete",
        }
    }
}

/// One [`Route`]: `route!(Get "/path" => module::handler)`; the handler's name becomes the
/// operation id.
macro_rules! route {
    ($verb:ident $path:literal => $($handler:ident)::+) => {
        $crate::api::openapi::Route {
            verb: $crate::api::openapi::Verb::$verb,
            path: $path,
            operation: route!(@last $($handler)::+),
            handler: |r| r.to($($handler)::+),
        }
    };
    (@last $head:ident) => { stringify!($head) };
    (@last $head:ident :: $($tail:ident)::+) => { route!(@last $($tail)::+) };
}
pub(crate) use route;

/// One mounted (method, path) and the handler answering it.
pub struct Route {
    pub verb: Verb,
    /// Relative to the API's prefix, with actix/OpenAPI `{name}` parameters.
    pub path: &'static str,
    /// The handler's name, used as the document's `operationId`.
    pub operation: &'static str,
    /// Attaches the handler to the route.
    pub handler: fn(actix_web::Route) -> actix_web::Route,
}

/// A route table under one prefix.
pub struct Api {
    pub prefix: &'static str,
    pub routes: &'static [Route],
}

impl Api {
    /// The scope serving every route of the table: one resource per path (in table order),
    /// whose other methods answer 405/20004 with `Allow`.
    pub fn scope(&self) -> Scope {
        let mut paths: Vec<&str> = Vec::new();
        for route in self.routes {
            if !paths.contains(&route.path) {
                paths.push(route.path);
            }
        }
        paths
            .into_iter()
            .fold(web::scope(self.prefix), |scope, path| {
                let routes: Vec<&Route> = self.routes.iter().filter(|r| r.path == path).collect();
                let allow: Vec<&str> = routes.iter().map(|r| r.verb.name()).collect();
                let allow = allow.join(", ");
                let resource = web::resource(path)
                    .default_service(web::to(move || reject_method(allow.clone())));
                let resource = routes.into_iter().fold(resource, |res, r| {
                    res.route((r.handler)(web::method(r.verb.method())))
                });
                scope.service(resource)
            })
    }

    /// Every `(method, full path)` the table mounts.
    pub fn endpoints(&self) -> impl Iterator<Item = (Verb, String)> + '_ {
        self.routes
            .iter()
            .map(|r| (r.verb, format!("{}{}", self.prefix, r.path)))
    }
}

/// 405/20004 for a method the path does not serve, with the `Allow` header RFC 9110 asks for.
async fn reject_method(allow: String) -> HttpResponse {
    let mut response = ApiError::method_not_allowed().error_response();
    if let Ok(value) = HeaderValue::from_str(&allow) {
        response.headers_mut().insert(ALLOW, value);
    }
    response
}

/// The route tables the document describes, in document order.
pub fn apis() -> [&'static Api; 2] {
    [&super::native::API, &super::client::API]
}

/// The path parameters of a template, in order: `/a/{sid}/b/{id}` → `["sid", "id"]`.
fn path_params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .collect()
}

/// One path parameter: always a string; described by its name.
fn path_param(name: &str) -> Value {
    let description = match name {
        "sid" => "The service SID (`IS…`).",
        "user" => "The user's SID (`US…`) or identity.",
        "identity" => "The user's identity.",
        "binding" => "One of the caller's binding SIDs (`BS…`) or endpoints.",
        "id" => "The endpoint (`WH…`), delivery (an integer) or session (`SE…`) named.",
        _ => "A path segment.",
    };
    json!({
        "name": name, "in": "path", "required": true, "description": description,
        "schema": {"type": "string", "minLength": 1},
    })
}

/// The Operation object of one route: its description plus path parameters and the Twilio
/// error responses every operation can give.
fn operation(route: &Route) -> Value {
    let mut op = operations::describe(route.operation).unwrap_or_else(|| json!({}));
    let Some(obj) = op.as_object_mut() else {
        return op;
    };
    obj.insert("operationId".into(), route.operation.into());
    let mut params: Vec<Value> = path_params(route.path)
        .into_iter()
        .map(path_param)
        .collect();
    if let Some(Value::Array(more)) = obj.remove("parameters") {
        params.extend(more);
    }
    if !params.is_empty() {
        obj.insert("parameters".into(), Value::Array(params));
    }
    let responses = obj
        .entry("responses")
        .or_insert_with(|| json!({}))
        .as_object_mut();
    if let Some(responses) = responses {
        for (status, what) in schemas::ERROR_RESPONSES {
            responses
                .entry(status.to_string())
                .or_insert_with(|| schemas::error_response(what));
        }
    }
    op
}

/// Builds the whole document from the route tables.
pub fn document() -> Value {
    let mut paths = Map::new();
    for api in apis() {
        for route in api.routes {
            let full = format!("{}{}", api.prefix, route.path);
            let item = paths.entry(full).or_insert_with(|| json!({}));
            if let Some(item) = item.as_object_mut() {
                item.insert(route.verb.key().into(), operation(route));
            }
        }
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "reachd native and client API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "reachd's own API: the native backend API under `/api/v1` (HTTP \
                Basic auth with the account SID and auth token, or an API key SID and secret) \
                and the client API under `/client/v1` (a Twilio-format access token in \
                `Authorization: Bearer` or `X-Twilio-Token`). JSON or form bodies; every error \
                is Twilio's `{code, message, more_info, status}`. This document is served at \
                `GET /api/v1/openapi.json` without authentication. The Twilio dialects \
                (`/chat`, `/conversations`) are described by Twilio's own OpenAPI files.",
        },
        "servers": [{"url": "/"}],
        "security": [{"basicAuth": []}],
        "tags": [
            {"name": "native", "description": "Backend API (`/api/v1`), HTTP Basic auth."},
            {"name": "client", "description": "Client API (`/client/v1`), access tokens."},
        ],
        "paths": paths,
        "components": {
            "securitySchemes": schemas::security_schemes(),
            "schemas": schemas::schemas(),
        },
    })
}

/// `GET /api/v1/openapi.json`: the document, built once.
pub async fn fetch_openapi() -> HttpResponse {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    let body = DOCUMENT.get_or_init(|| document().to_string());
    HttpResponse::Ok()
        .content_type("application/json")
        .body(body.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_described() {
        for api in apis() {
            for route in api.routes {
                assert!(
                    operations::describe(route.operation).is_some(),
                    "{} has no description",
                    route.operation
                );
            }
        }
    }

    #[test]
    fn the_document_lists_every_route_once() {
        let doc = document();
        let mut count = 0;
        for api in apis() {
            for (verb, path) in api.endpoints() {
                assert!(doc["paths"][&path][verb.key()].is_object(), "{path}");
                count += 1;
            }
        }
        let listed: usize = doc["paths"].as_object().map_or(0, |p| {
            p.values().filter_map(Value::as_object).map(Map::len).sum()
        });
        assert_eq!(listed, count);
    }

    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let text = doc.to_string();
        for part in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = part.split('"').next().unwrap_or_default();
            assert!(
                doc["components"]["schemas"][name].is_object(),
                "missing schema {name}"
            );
        }
    }

    #[test]
    fn path_parameters_follow_the_template() {
        assert_eq!(path_params("/services/{sid}/webhooks/{id}"), ["sid", "id"]);
        assert!(path_params("/sessions").is_empty());
    }
}
