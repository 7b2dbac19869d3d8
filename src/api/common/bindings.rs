//! Binding list filters and registration parameters shared by the dialects and the native API.
//!
//! May depend on: domain::binding, api::{errors, params}.

use crate::api::errors::{ApiError, ApiResult};
use crate::api::params::Params;
use crate::domain::binding::{BindingFilter, BindingType, NewBinding};

/// `BindingType` (repeated) and, when `with_identity`, `Identity` (repeated); `allowed` lists
/// the types this dialect accepts.
pub fn binding_filter(
    params: &Params,
    with_identity: bool,
    allowed: &[BindingType],
) -> ApiResult<BindingFilter> {
    let mut types = Vec::new();
    for value in params.list("BindingType")? {
        let kind = BindingType::parse(&value)
            .filter(|k| allowed.contains(k))
            .ok_or_else(|| {
                ApiError::bad_param(
                    "BindingType",
                    &format!("{value} is not a binding type here"),
                )
            })?;
        types.push(kind);
    }
    let identities = if with_identity {
        params.list("Identity")?
    } else {
        Vec::new()
    };
    Ok(BindingFilter {
        types,
        identities,
        user_sid: None,
    })
}

/// The query filters to repeat in paging URLs.
pub fn filter_query(filter: &BindingFilter) -> Vec<(&'static str, String)> {
    let types = filter
        .types
        .iter()
        .map(|t| ("BindingType", t.as_str().to_string()));
    let identities = filter.identities.iter().map(|i| ("Identity", i.clone()));
    types.chain(identities).collect()
}

/// `binding_type`, `address`, `credential_sid`, `endpoint` (snake_case, JSON or form), with
/// defaults for the credential and endpoint (a client's grant).
pub fn new_binding(
    params: &Params,
    default_credential: Option<&str>,
    default_endpoint: Option<&str>,
) -> ApiResult<NewBinding> {
    let kind = params.required("binding_type")?;
    let binding_type = BindingType::parse(kind)
        .filter(|k| k.is_push())
        .ok_or_else(|| ApiError::bad_param("binding_type", "must be apn, gcm or fcm"))?;
    let binding = NewBinding {
        binding_type,
        address: params.required("address")?.to_string(),
        credential_sid: params
            .string("credential_sid")
            .or(default_credential.map(str::to_string)),
        endpoint: params
            .string("endpoint")
            .or(default_endpoint.map(str::to_string)),
    };
    binding.validate()?;
    Ok(binding)
}
