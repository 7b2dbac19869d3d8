//! Service update parameters (Chat v1/v2 service update, Conversations service Configuration
//! and Configuration/Webhooks) as domain patches.
//!
//! May depend on: serde_json, domain::service, api::{errors, params}.

use serde_json::Value;

use super::snake_case;
use crate::api::errors::{ApiError, ApiResult};
use crate::api::params::{Params, parse_bool};
use crate::domain::ids::Prefix;
use crate::domain::service::{
    NestedSetting, ServicePatch, WebhookDialect, validate_filters, validate_method, validate_sid,
    validate_webhook_url,
};

const NOTIFICATION_EVENTS: [&str; 4] = [
    "NewMessage",
    "AddedToChannel",
    "RemovedFromChannel",
    "InvitedToChannel",
];

/// Which Chat version's parameters to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatVersion {
    V1,
    V2,
}

/// `POST /v{1,2}/Services/{Sid}`.
pub fn chat_patch(params: &Params, version: ChatVersion) -> ApiResult<ServicePatch> {
    let mut patch = ServicePatch {
        friendly_name: params.string("FriendlyName"),
        default_service_role_sid: params.string("DefaultServiceRoleSid"),
        default_channel_role_sid: params.string("DefaultChannelRoleSid"),
        default_channel_creator_role_sid: params.string("DefaultChannelCreatorRoleSid"),
        read_status_enabled: params.bool("ReadStatusEnabled")?,
        reachability_enabled: params.bool("ReachabilityEnabled")?,
        typing_indicator_timeout: params.int("TypingIndicatorTimeout")?,
        consumption_report_interval: params.int("ConsumptionReportInterval")?,
        limits_channel_members: params.int("Limits.ChannelMembers")?,
        limits_user_channels: params.int("Limits.UserChannels")?,
        pre_webhook_url: params.clearable("PreWebhookUrl"),
        post_webhook_url: params.clearable("PostWebhookUrl"),
        webhook_method: params.string("WebhookMethod"),
        webhook_filters: params.opt_list("WebhookFilters")?,
        notifications: notification_settings(params, version)?,
        webhook_dialect: Some(WebhookDialect::Chat),
        ..Default::default()
    };
    if version == ChatVersion::V2 {
        patch.pre_webhook_retry_count = params.int("PreWebhookRetryCount")?;
        patch.post_webhook_retry_count = params.int("PostWebhookRetryCount")?;
        patch.media_compatibility_message = params.clearable("Media.CompatibilityMessage");
    } else {
        patch.v1_webhooks = v1_webhook_settings(params)?;
    }
    Ok(patch)
}

/// `Notifications.<Event>.<Field>` and `Notifications.LogEnabled`; unknown keys are ignored.
fn notification_settings(params: &Params, version: ChatVersion) -> ApiResult<Vec<NestedSetting>> {
    let mut out = Vec::new();
    for (rest, value) in params.with_prefix("Notifications.") {
        let full = format!("Notifications.{rest}");
        let (group, field) = match rest.split_once('.') {
            Some((event, field)) if NOTIFICATION_EVENTS.contains(&event) => (Some(event), field),
            None if rest == "LogEnabled" && version == ChatVersion::V2 => (None, rest),
            _ => continue,
        };
        let allowed = match (version, field) {
            (_, "Enabled" | "Template") => true,
            (ChatVersion::V2, "Sound") => true,
            (ChatVersion::V2, "BadgeCountEnabled") => group == Some("NewMessage"),
            (ChatVersion::V2, "LogEnabled") => group.is_none(),
            _ => false,
        };
        if !allowed {
            continue;
        }
        let value = if field.ends_with("Enabled") {
            Value::Bool(
                parse_bool(value)
                    .ok_or_else(|| ApiError::bad_param(&full, "must be true or false"))?,
            )
        } else {
            Value::String(value.to_string())
        };
        out.push(NestedSetting {
            group: group.map(snake_case),
            field: snake_case(field),
            value,
        });
    }
    Ok(out)
}

/// Chat v1's `Webhooks.<OnEvent>.{Url,Method,Format}`.
fn v1_webhook_settings(params: &Params) -> ApiResult<Vec<NestedSetting>> {
    let mut out = Vec::new();
    for (rest, value) in params.with_prefix("Webhooks.") {
        let full = format!("Webhooks.{rest}");
        let Some((event, field)) = rest.split_once('.') else {
            continue;
        };
        if !event.starts_with("On")
            || !event.chars().all(|c| c.is_ascii_alphabetic())
            || event.len() > 32
        {
            continue;
        }
        match field {
            "Url" => validate_webhook_url(&full, value)?,
            "Method" => validate_method(&full, value)?,
            "Format" => {}
            _ => continue,
        }
        let value = if field == "Method" {
            value.to_ascii_uppercase()
        } else {
            value.to_string()
        };
        out.push(NestedSetting {
            group: Some(snake_case(event)),
            field: snake_case(field),
            value: Value::String(value),
        });
    }
    Ok(out)
}

/// `POST /conversations/v1/Services/{Sid}/Configuration`.
pub fn conversations_config_patch(params: &Params) -> ApiResult<ServicePatch> {
    let patch = ServicePatch {
        default_channel_creator_role_sid: params.string("DefaultConversationCreatorRoleSid"),
        default_channel_role_sid: params.string("DefaultConversationRoleSid"),
        default_service_role_sid: params.string("DefaultChatServiceRoleSid"),
        reachability_enabled: params.bool("ReachabilityEnabled")?,
        ..Default::default()
    };
    // Validate here so errors name the Conversations parameter, not the Chat one.
    for (param, sid) in [
        (
            "DefaultConversationCreatorRoleSid",
            &patch.default_channel_creator_role_sid,
        ),
        (
            "DefaultConversationRoleSid",
            &patch.default_channel_role_sid,
        ),
        ("DefaultChatServiceRoleSid", &patch.default_service_role_sid),
    ] {
        if let Some(sid) = sid {
            validate_sid(param, sid, Prefix::Role)?;
        }
    }
    Ok(patch)
}

/// `POST /conversations/v1/Services/{Sid}/Configuration/Webhooks`.
pub fn conversations_webhook_patch(params: &Params) -> ApiResult<ServicePatch> {
    let method = params.string("Method");
    if let Some(m) = &method {
        validate_method("Method", m)?;
    }
    let filters = params.opt_list("Filters")?;
    if let Some(f) = &filters {
        validate_filters("Filters", f)?;
    }
    Ok(ServicePatch {
        pre_webhook_url: params.clearable("PreWebhookUrl"),
        post_webhook_url: params.clearable("PostWebhookUrl"),
        webhook_method: method,
        webhook_filters: filters,
        webhook_dialect: Some(WebhookDialect::Conversations),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params::from_pairs(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn chat_v2_patch_reads_the_probe_request() {
        let p = params(&[
            ("ReadStatusEnabled", "false"),
            ("ReachabilityEnabled", "True"),
            ("Notifications.NewMessage.Enabled", "true"),
            ("Notifications.NewMessage.BadgeCountEnabled", "true"),
            ("Notifications.AddedToChannel.BadgeCountEnabled", "true"),
            ("Notifications.LogEnabled", "true"),
            ("PostWebhookUrl", "https://example.invalid/post"),
            ("WebhookFilters", "onUserAdded"),
            ("WebhookFilters", "onUserUpdated"),
            ("Limits.UserChannels", "100"),
            ("PostWebhookRetryCount", "2"),
        ]);
        let patch = chat_patch(&p, ChatVersion::V2).expect("valid");
        assert_eq!(patch.reachability_enabled, Some(true));
        assert_eq!(patch.read_status_enabled, Some(false));
        assert_eq!(
            patch.webhook_filters,
            Some(vec!["onUserAdded".into(), "onUserUpdated".into()])
        );
        assert_eq!(patch.post_webhook_retry_count, Some(2));
        assert_eq!(patch.notifications.len(), 3, "{:?}", patch.notifications);
        assert_eq!(
            patch.notifications[2],
            NestedSetting {
                group: None,
                field: "log_enabled".into(),
                value: Value::Bool(true)
            }
        );
    }

    #[test]
    fn chat_v1_ignores_v2_only_keys_and_reads_webhooks() {
        let p = params(&[
            ("PostWebhookRetryCount", "2"),
            ("Notifications.NewMessage.Sound", "ding"),
            ("Webhooks.OnMessageSend.Url", "https://example.com/x"),
            ("Webhooks.OnMessageSend.Method", "get"),
        ]);
        let patch = chat_patch(&p, ChatVersion::V1).expect("valid");
        assert_eq!(patch.post_webhook_retry_count, None);
        assert!(patch.notifications.is_empty());
        assert_eq!(patch.v1_webhooks.len(), 2);
        assert_eq!(patch.v1_webhooks[1].value, Value::String("GET".into()));
        let bad = params(&[("Webhooks.OnMessageSend.Url", "nope")]);
        assert!(
            chat_patch(&bad, ChatVersion::V1)
                .unwrap_err()
                .message
                .contains("Webhooks.OnMessageSend.Url")
        );
    }

    #[test]
    fn bad_notification_booleans_name_the_dotted_key() {
        let p = params(&[("Notifications.NewMessage.Enabled", "yes")]);
        let e = chat_patch(&p, ChatVersion::V2).unwrap_err();
        assert!(e.message.contains("Notifications.NewMessage.Enabled"));
    }
}
