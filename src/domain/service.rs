//! A Chat / Conversations service (`IS…`): one object seen through every dialect. Holds the
//! Chat settings Twilio exposes, the shared reachability flag and reachd's presence overrides,
//! and the pure rules for applying an update.
//!
//! May depend on: serde, serde_json, domain::{ids, time, errors}.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::errors::{Error, Result};
use super::ids::{self, Prefix};
use super::time::Millis;

/// Longest friendly name a service may have.
pub const MAX_FRIENDLY_NAME: usize = 256;
/// Most webhook filters one service or account may list.
pub const MAX_FILTERS: usize = 100;
/// Most post-webhook retries Twilio targets may ask for.
pub const MAX_RETRY_COUNT: i64 = 10;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    pub channel_members: i64,
    pub user_channels: i64,
}

/// Which dialect configured the post-event webhook last; it decides the webhook's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WebhookDialect {
    #[default]
    Chat,
    Conversations,
}

/// Chat settings, stored as one JSON document next to the service's key columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatSettings {
    pub default_service_role_sid: String,
    pub default_channel_role_sid: String,
    pub default_channel_creator_role_sid: String,
    pub read_status_enabled: bool,
    pub typing_indicator_timeout: i64,
    pub consumption_report_interval: i64,
    pub limits: Limits,
    pub pre_webhook_url: Option<String>,
    pub post_webhook_url: Option<String>,
    /// `None` until set: Chat shows "POST", Conversations shows null.
    pub webhook_method: Option<String>,
    /// `None` until set: Chat shows [], Conversations shows null.
    pub webhook_filters: Option<Vec<String>>,
    pub pre_webhook_retry_count: i64,
    pub post_webhook_retry_count: i64,
    #[serde(default)]
    pub webhook_dialect: WebhookDialect,
    pub notifications: Value,
    pub media_size_limit_mb: i64,
    pub media_compatibility_message: Option<String>,
    /// Chat v1's per-event `webhooks` object.
    pub v1_webhooks: Value,
}

impl ChatSettings {
    fn fresh() -> Self {
        let event = || json!({"enabled": false, "template": null, "sound": null});
        let mut new_message = event();
        new_message["badge_count_enabled"] = Value::Bool(false);
        ChatSettings {
            default_service_role_sid: ids::new_sid(Prefix::Role),
            default_channel_role_sid: ids::new_sid(Prefix::Role),
            default_channel_creator_role_sid: ids::new_sid(Prefix::Role),
            read_status_enabled: true,
            typing_indicator_timeout: 5,
            consumption_report_interval: 10,
            limits: Limits {
                channel_members: 250,
                user_channels: 100,
            },
            pre_webhook_url: None,
            post_webhook_url: None,
            webhook_method: None,
            webhook_filters: None,
            pre_webhook_retry_count: 0,
            post_webhook_retry_count: 0,
            webhook_dialect: WebhookDialect::Chat,
            notifications: json!({
                "log_enabled": false,
                "new_message": new_message,
                "added_to_channel": event(),
                "removed_from_channel": event(),
                "invited_to_channel": event(),
            }),
            media_size_limit_mb: 150,
            media_compatibility_message: None,
            v1_webhooks: Value::Object(Map::new()),
        }
    }
}

/// Per-service presence timings; `None` falls back to the server configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PresenceOverrides {
    pub ping_interval_ms: Option<u64>,
    pub session_ttl_ms: Option<u64>,
    pub offline_grace_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub sid: String,
    pub friendly_name: String,
    pub reachability_enabled: bool,
    pub presence: PresenceOverrides,
    pub settings: ChatSettings,
    pub date_created: Millis,
    pub date_updated: Millis,
}

impl Service {
    /// A new service with Twilio's defaults; `friendly_name` is validated.
    pub fn new(friendly_name: &str, now: Millis) -> Result<Self> {
        validate_friendly_name("FriendlyName", friendly_name)?;
        Ok(Service {
            sid: ids::new_sid(Prefix::Service),
            friendly_name: friendly_name.to_string(),
            reachability_enabled: false,
            presence: PresenceOverrides::default(),
            settings: ChatSettings::fresh(),
            date_created: now,
            date_updated: now,
        })
    }

    /// Applies a validated patch; reports whether the reachability flag changed.
    pub fn apply(&mut self, patch: &ServicePatch, now: Millis) -> Result<ReachabilityToggle> {
        patch.validate()?;
        let s = &mut self.settings;
        set(&mut self.friendly_name, &patch.friendly_name);
        set(
            &mut s.default_service_role_sid,
            &patch.default_service_role_sid,
        );
        set(
            &mut s.default_channel_role_sid,
            &patch.default_channel_role_sid,
        );
        set(
            &mut s.default_channel_creator_role_sid,
            &patch.default_channel_creator_role_sid,
        );
        set(&mut s.read_status_enabled, &patch.read_status_enabled);
        set(
            &mut s.typing_indicator_timeout,
            &patch.typing_indicator_timeout,
        );
        set(
            &mut s.consumption_report_interval,
            &patch.consumption_report_interval,
        );
        set(&mut s.limits.channel_members, &patch.limits_channel_members);
        set(&mut s.limits.user_channels, &patch.limits_user_channels);
        set(&mut s.pre_webhook_url, &patch.pre_webhook_url);
        set(&mut s.post_webhook_url, &patch.post_webhook_url);
        if let Some(method) = &patch.webhook_method {
            s.webhook_method = Some(method.to_ascii_uppercase());
        }
        if let Some(filters) = &patch.webhook_filters {
            s.webhook_filters = Some(filters.clone());
        }
        set(
            &mut s.pre_webhook_retry_count,
            &patch.pre_webhook_retry_count,
        );
        set(
            &mut s.post_webhook_retry_count,
            &patch.post_webhook_retry_count,
        );
        set(
            &mut s.media_compatibility_message,
            &patch.media_compatibility_message,
        );
        if let Some(dialect) = patch.webhook_dialect {
            let touches_webhook = patch.post_webhook_url.is_some()
                || patch.webhook_method.is_some()
                || patch.webhook_filters.is_some();
            if touches_webhook {
                s.webhook_dialect = dialect;
            }
        }
        apply_nested(&mut s.notifications, &patch.notifications);
        apply_nested(&mut s.v1_webhooks, &patch.v1_webhooks);
        let toggle = match patch.reachability_enabled {
            Some(true) if !self.reachability_enabled => ReachabilityToggle::Enabled,
            Some(false) if self.reachability_enabled => ReachabilityToggle::Disabled,
            _ => ReachabilityToggle::Unchanged,
        };
        set(&mut self.reachability_enabled, &patch.reachability_enabled);
        self.date_updated = now;
        Ok(toggle)
    }
}

/// What an update did to the reachability flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReachabilityToggle {
    Unchanged,
    Enabled,
    Disabled,
}

/// One nested setting written with a dotted key, e.g. `Notifications.NewMessage.Enabled`:
/// `group` is `new_message` (or `None` for a top-level key such as `log_enabled`), `field`
/// is `enabled`.
#[derive(Debug, Clone, PartialEq)]
pub struct NestedSetting {
    pub group: Option<String>,
    pub field: String,
    pub value: Value,
}

/// A partial update of a service; `None` leaves a field as it is. For URLs, `Some(None)`
/// clears the value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServicePatch {
    pub friendly_name: Option<String>,
    pub default_service_role_sid: Option<String>,
    pub default_channel_role_sid: Option<String>,
    pub default_channel_creator_role_sid: Option<String>,
    pub read_status_enabled: Option<bool>,
    pub reachability_enabled: Option<bool>,
    pub typing_indicator_timeout: Option<i64>,
    pub consumption_report_interval: Option<i64>,
    pub limits_channel_members: Option<i64>,
    pub limits_user_channels: Option<i64>,
    pub pre_webhook_url: Option<Option<String>>,
    pub post_webhook_url: Option<Option<String>>,
    pub webhook_method: Option<String>,
    pub webhook_filters: Option<Vec<String>>,
    pub pre_webhook_retry_count: Option<i64>,
    pub post_webhook_retry_count: Option<i64>,
    pub media_compatibility_message: Option<Option<String>>,
    pub notifications: Vec<NestedSetting>,
    pub v1_webhooks: Vec<NestedSetting>,
    /// The dialect making the change; recorded when it touches the post-event webhook.
    pub webhook_dialect: Option<WebhookDialect>,
}

impl ServicePatch {
    /// Checks every value, naming the Twilio parameter that is wrong.
    pub fn validate(&self) -> Result<()> {
        if let Some(name) = &self.friendly_name {
            validate_friendly_name("FriendlyName", name)?;
        }
        for (param, sid) in [
            ("DefaultServiceRoleSid", &self.default_service_role_sid),
            ("DefaultChannelRoleSid", &self.default_channel_role_sid),
            (
                "DefaultChannelCreatorRoleSid",
                &self.default_channel_creator_role_sid,
            ),
        ] {
            if let Some(sid) = sid {
                validate_sid(param, sid, Prefix::Role)?;
            }
        }
        validate_range(
            "TypingIndicatorTimeout",
            self.typing_indicator_timeout,
            0,
            3600,
        )?;
        validate_range(
            "ConsumptionReportInterval",
            self.consumption_report_interval,
            0,
            3600,
        )?;
        validate_range(
            "Limits.ChannelMembers",
            self.limits_channel_members,
            1,
            1000,
        )?;
        validate_range("Limits.UserChannels", self.limits_user_channels, 1, 1000)?;
        validate_range(
            "PreWebhookRetryCount",
            self.pre_webhook_retry_count,
            0,
            MAX_RETRY_COUNT,
        )?;
        validate_range(
            "PostWebhookRetryCount",
            self.post_webhook_retry_count,
            0,
            MAX_RETRY_COUNT,
        )?;
        for (param, url) in [
            ("PreWebhookUrl", &self.pre_webhook_url),
            ("PostWebhookUrl", &self.post_webhook_url),
        ] {
            if let Some(Some(url)) = url {
                validate_webhook_url(param, url)?;
            }
        }
        if let Some(method) = &self.webhook_method {
            validate_method("WebhookMethod", method)?;
        }
        if let Some(filters) = &self.webhook_filters {
            validate_filters("WebhookFilters", filters)?;
        }
        Ok(())
    }
}

fn set<T: Clone>(target: &mut T, value: &Option<T>) {
    if let Some(v) = value {
        *target = v.clone();
    }
}

fn apply_nested(doc: &mut Value, settings: &[NestedSetting]) {
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    for setting in settings {
        let Some(root) = doc.as_object_mut() else {
            return;
        };
        let target = match &setting.group {
            None => root,
            Some(group) => {
                let entry = root
                    .entry(group.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !entry.is_object() {
                    *entry = Value::Object(Map::new());
                }
                match entry.as_object_mut() {
                    Some(map) => map,
                    None => continue,
                }
            }
        };
        target.insert(setting.field.clone(), setting.value.clone());
    }
}

pub fn validate_friendly_name(param: &str, name: &str) -> Result<()> {
    if name.chars().count() > MAX_FRIENDLY_NAME {
        return Err(Error::invalid(
            param,
            format!("must be at most {MAX_FRIENDLY_NAME} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::invalid(param, "must not contain control characters"));
    }
    Ok(())
}

pub fn validate_sid(param: &str, sid: &str, prefix: Prefix) -> Result<()> {
    if ids::is_sid(sid, prefix) {
        Ok(())
    } else {
        Err(Error::invalid(
            param,
            format!(
                "must be a {} SID ({}{})",
                prefix.as_str(),
                prefix.as_str(),
                "+32 hex digits"
            ),
        ))
    }
}

fn validate_range(param: &str, value: Option<i64>, min: i64, max: i64) -> Result<()> {
    match value {
        Some(v) if v < min || v > max => Err(Error::invalid(
            param,
            format!("must be between {min} and {max}"),
        )),
        _ => Ok(()),
    }
}

/// A webhook URL must be an absolute http(s) URL.
pub fn validate_webhook_url(param: &str, value: &str) -> Result<()> {
    let ok = url::Url::parse(value)
        .map(|u| {
            matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty())
        })
        .unwrap_or(false);
    if ok && value.len() <= 2048 {
        Ok(())
    } else {
        Err(Error::invalid(
            param,
            "must be an absolute http or https URL",
        ))
    }
}

pub fn validate_method(param: &str, value: &str) -> Result<()> {
    if value.eq_ignore_ascii_case("GET") || value.eq_ignore_ascii_case("POST") {
        Ok(())
    } else {
        Err(Error::invalid(param, "must be GET or POST"))
    }
}

pub fn validate_filters(param: &str, filters: &[String]) -> Result<()> {
    if filters.len() > MAX_FILTERS {
        return Err(Error::invalid(
            param,
            format!("at most {MAX_FILTERS} values"),
        ));
    }
    if filters
        .iter()
        .any(|f| f.is_empty() || f.len() > 64 || !f.chars().all(|c| c.is_ascii_alphanumeric()))
    {
        return Err(Error::invalid(
            param,
            "each filter must be an event name such as onUserUpdated",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_service_has_twilio_defaults() {
        let s = Service::new("Svc", 1).expect("valid");
        assert!(ids::is_sid(&s.sid, Prefix::Service));
        assert!(!s.reachability_enabled);
        assert!(s.settings.read_status_enabled);
        assert_eq!(
            s.settings.notifications["new_message"]["badge_count_enabled"],
            json!(false)
        );
        assert_eq!(
            s.settings.limits,
            Limits {
                channel_members: 250,
                user_channels: 100
            }
        );
    }

    #[test]
    fn apply_sets_fields_nested_keys_and_reports_toggles() {
        let mut s = Service::new("Svc", 1).expect("valid");
        let patch = ServicePatch {
            reachability_enabled: Some(true),
            webhook_method: Some("get".into()),
            webhook_filters: Some(vec!["onUserAdded".into()]),
            notifications: vec![NestedSetting {
                group: Some("new_message".into()),
                field: "enabled".into(),
                value: json!(true),
            }],
            ..Default::default()
        };
        assert_eq!(
            s.apply(&patch, 2).expect("valid"),
            ReachabilityToggle::Enabled
        );
        assert_eq!(s.settings.webhook_method.as_deref(), Some("GET"));
        assert_eq!(
            s.settings.notifications["new_message"]["enabled"],
            json!(true)
        );
        assert_eq!(
            s.settings.notifications["new_message"]["badge_count_enabled"],
            json!(false)
        );
        assert_eq!(
            s.apply(&patch, 3).expect("valid"),
            ReachabilityToggle::Unchanged
        );
        let off = ServicePatch {
            reachability_enabled: Some(false),
            ..Default::default()
        };
        assert_eq!(
            s.apply(&off, 4).expect("valid"),
            ReachabilityToggle::Disabled
        );
        assert_eq!(s.date_updated, 4);
    }

    #[test]
    fn invalid_values_name_their_parameter_and_change_nothing() {
        let mut s = Service::new("Svc", 1).expect("valid");
        let before = s.clone();
        for (patch, param) in [
            (
                ServicePatch {
                    webhook_method: Some("PUT".into()),
                    ..Default::default()
                },
                "WebhookMethod",
            ),
            (
                ServicePatch {
                    post_webhook_url: Some(Some("ftp://x".into())),
                    ..Default::default()
                },
                "PostWebhookUrl",
            ),
            (
                ServicePatch {
                    post_webhook_retry_count: Some(11),
                    ..Default::default()
                },
                "PostWebhookRetryCount",
            ),
            (
                ServicePatch {
                    default_service_role_sid: Some("US1".into()),
                    ..Default::default()
                },
                "DefaultServiceRoleSid",
            ),
            (
                ServicePatch {
                    limits_user_channels: Some(1001),
                    ..Default::default()
                },
                "Limits.UserChannels",
            ),
        ] {
            let err = s.apply(&patch, 9).unwrap_err();
            assert!(err.to_string().contains(param), "{err}");
        }
        assert_eq!(s, before);
    }
}
