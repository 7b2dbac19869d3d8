//! Native webhook endpoints (CRUD; the secret is shown once, at creation), their delivery log,
//! and replay: resend one delivery, recover every failed one since a time.
//!
//! May depend on: actix-web, serde_json, domain, api::{common, ctx, errors, params}.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde_json::json;

use super::views::{delivery_json, endpoint_json};
use crate::api::common::{created, deleted, ok};
use crate::api::ctx::Ctx;
use crate::api::errors::{ApiError, ApiResult};
use crate::api::params::Params;
use crate::domain::time::parse_rfc3339;
use crate::domain::webhook::{DeliveryStatus, EndpointPatch, NewEndpoint, endpoint_target};

const MAX_LIMIT: i64 = 200;

/// `event_types` as a list without repeats; one empty value means "every type".
fn event_types(params: &Params) -> ApiResult<Option<Option<Vec<String>>>> {
    let mut values = params.list("event_types")?;
    let mut seen = std::collections::HashSet::new();
    values.retain(|v| seen.insert(v.clone()));
    Ok(match values.as_slice() {
        [] => None,
        [only] if only.is_empty() => Some(None),
        _ => Some(Some(values)),
    })
}

pub async fn create_endpoint(ctx: Ctx, sid: web::Path<String>, params: Params) -> ApiResult {
    let service = ctx.service(&sid)?;
    let new = NewEndpoint {
        url: params.required("url")?.to_string(),
        description: params.string("description"),
        event_types: event_types(&params)?.flatten(),
    };
    new.validate()?;
    let (endpoint, secret) = ctx.store().create_endpoint(&service.sid, new).await?;
    Ok(created(endpoint_json(&endpoint, Some(&secret))))
}

pub async fn list_endpoints(ctx: Ctx, sid: web::Path<String>) -> ApiResult {
    let service = ctx.service(&sid)?;
    let endpoints: Vec<_> = ctx
        .store()
        .list_endpoints(&service.sid)?
        .iter()
        .map(|e| endpoint_json(e, None))
        .collect();
    Ok(ok(json!({"endpoints": endpoints})))
}

fn find(
    ctx: &Ctx,
    path: &(String, String),
) -> ApiResult<(String, crate::domain::webhook::Endpoint)> {
    let service = ctx.service(&path.0)?;
    let endpoint = ctx
        .store()
        .endpoint(&service.sid, &path.1)?
        .ok_or_else(ApiError::not_found)?;
    Ok((service.sid.clone(), endpoint))
}

pub async fn fetch_endpoint(ctx: Ctx, path: web::Path<(String, String)>) -> ApiResult {
    Ok(ok(endpoint_json(&find(&ctx, &path)?.1, None)))
}

pub async fn update_endpoint(
    ctx: Ctx,
    path: web::Path<(String, String)>,
    params: Params,
) -> ApiResult {
    let (service_sid, endpoint) = find(&ctx, &path)?;
    let patch = EndpointPatch {
        url: params.string("url"),
        description: params.string("description"),
        event_types: event_types(&params)?,
        disabled: params.bool("disabled")?,
    };
    patch.validate()?;
    let updated = ctx
        .store()
        .update_endpoint(&service_sid, &endpoint.id, patch)
        .await?;
    Ok(ok(endpoint_json(&updated, None)))
}

pub async fn delete_endpoint(ctx: Ctx, path: web::Path<(String, String)>) -> ApiResult {
    let (service_sid, endpoint) = find(&ctx, &path)?;
    deleted(
        ctx.store()
            .delete_endpoint(&service_sid, &endpoint.id)
            .await?,
    )
}

/// `GET …/webhooks/{id}/deliveries?status=failed&limit=50&before=<delivery id>`, newest first.
pub async fn list_deliveries(
    ctx: Ctx,
    path: web::Path<(String, String)>,
    params: Params,
) -> ApiResult {
    let (_, endpoint) = find(&ctx, &path)?;
    let status = params
        .get("status")
        .map(|s| {
            DeliveryStatus::parse(s).ok_or_else(|| {
                ApiError::bad_param("status", "must be pending, delivered or failed")
            })
        })
        .transpose()?;
    let limit = params.int("limit")?.unwrap_or(50);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_param("limit", "must be between 1 and 200"));
    }
    let before = params.int("before")?;
    let target = endpoint_target(&endpoint.id);
    let page = ctx
        .store()
        .list_deliveries(&target, status, before, limit as usize)?;
    let next = if page.len() as i64 == limit {
        page.last().map(|(d, _)| d.id)
    } else {
        None
    };
    let items: Vec<_> = page.iter().map(|(d, a)| delivery_json(d, a)).collect();
    Ok(ok(json!({"deliveries": items, "next_before": next})))
}

/// `POST /api/v1/deliveries/{id}/resend`: a pending delivery is made due now (same id); a
/// delivered or failed one is queued again as a fresh copy (new id and token).
pub async fn resend_delivery(ctx: Ctx, id: web::Path<String>) -> ApiResult {
    let id: i64 = id.parse().map_err(|_| ApiError::not_found())?;
    if ctx.store().delivery(id)?.is_none() {
        return Err(ApiError::not_found());
    }
    let copy = ctx.store().resend_delivery(id).await?;
    Ok(HttpResponse::build(StatusCode::ACCEPTED).json(delivery_json(&copy, &[])))
}

/// `POST …/webhooks/{id}/recover?since=<RFC 3339>`: resends every failed delivery since then.
pub async fn recover_deliveries(
    ctx: Ctx,
    path: web::Path<(String, String)>,
    params: Params,
) -> ApiResult {
    let (_, endpoint) = find(&ctx, &path)?;
    let since = params.required("since")?;
    let since = parse_rfc3339(since)
        .ok_or_else(|| ApiError::bad_param("since", "must be an RFC 3339 time"))?;
    let resent = ctx
        .store()
        .recover_deliveries(&endpoint_target(&endpoint.id), since)
        .await?;
    Ok(HttpResponse::build(StatusCode::ACCEPTED).json(json!({"resent": resent})))
}
