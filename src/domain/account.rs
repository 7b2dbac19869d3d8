//! The account (one per server): its Conversations configuration, its account-level
//! Conversations webhook, and API keys.
//!
//! May depend on: domain::{ids, time, errors, service}.

use super::errors::{Error, Result};
use super::ids::Prefix;
use super::service::{validate_filters, validate_method, validate_sid, validate_webhook_url};
use super::time::Millis;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccountWebhook {
    pub method: Option<String>,
    pub filters: Option<Vec<String>>,
    pub pre_webhook_url: Option<String>,
    pub post_webhook_url: Option<String>,
    pub target: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    pub sid: String,
    pub default_chat_service_sid: Option<String>,
    pub default_messaging_service_sid: Option<String>,
    pub default_inactive_timer: Option<String>,
    pub default_closed_timer: Option<String>,
    pub webhook: AccountWebhook,
}

/// `POST /conversations/v1/Configuration`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccountConfigPatch {
    pub default_chat_service_sid: Option<String>,
    pub default_messaging_service_sid: Option<String>,
    pub default_inactive_timer: Option<String>,
    pub default_closed_timer: Option<String>,
}

impl AccountConfigPatch {
    pub fn validate(&self) -> Result<()> {
        if let Some(sid) = &self.default_chat_service_sid {
            validate_sid("DefaultChatServiceSid", sid, Prefix::Service)?;
        }
        if let Some(sid) = &self.default_messaging_service_sid {
            validate_sid("DefaultMessagingServiceSid", sid, Prefix::MessagingService)?;
        }
        validate_duration("DefaultInactiveTimer", &self.default_inactive_timer)?;
        validate_duration("DefaultClosedTimer", &self.default_closed_timer)
    }

    pub fn apply(&self, account: &mut Account) {
        let fields = [
            (
                &mut account.default_chat_service_sid,
                &self.default_chat_service_sid,
            ),
            (
                &mut account.default_messaging_service_sid,
                &self.default_messaging_service_sid,
            ),
            (
                &mut account.default_inactive_timer,
                &self.default_inactive_timer,
            ),
            (
                &mut account.default_closed_timer,
                &self.default_closed_timer,
            ),
        ];
        for (target, value) in fields {
            if let Some(v) = value {
                *target = Some(v.clone());
            }
        }
    }
}

/// The webhook configuration singletons (account or Conversations service level).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WebhookPatch {
    pub method: Option<String>,
    pub filters: Option<Vec<String>>,
    pub pre_webhook_url: Option<Option<String>>,
    pub post_webhook_url: Option<Option<String>>,
    pub target: Option<String>,
}

impl WebhookPatch {
    pub fn validate(&self) -> Result<()> {
        if let Some(method) = &self.method {
            validate_method("Method", method)?;
        }
        if let Some(filters) = &self.filters {
            validate_filters("Filters", filters)?;
        }
        for (param, url) in [
            ("PreWebhookUrl", &self.pre_webhook_url),
            ("PostWebhookUrl", &self.post_webhook_url),
        ] {
            if let Some(Some(url)) = url {
                validate_webhook_url(param, url)?;
            }
        }
        if let Some(target) = &self.target
            && !matches!(target.as_str(), "webhook" | "flex")
        {
            return Err(Error::invalid("Target", "must be webhook or flex"));
        }
        Ok(())
    }

    pub fn apply(&self, hook: &mut AccountWebhook) {
        if let Some(method) = &self.method {
            hook.method = Some(method.to_ascii_uppercase());
        }
        if let Some(filters) = &self.filters {
            hook.filters = Some(filters.clone());
        }
        if let Some(url) = &self.pre_webhook_url {
            hook.pre_webhook_url = url.clone();
        }
        if let Some(url) = &self.post_webhook_url {
            hook.post_webhook_url = url.clone();
        }
        if let Some(target) = &self.target {
            hook.target = Some(target.clone());
        }
    }
}

/// An API key: `iss` of access tokens and a Basic-auth username.
#[derive(Clone, PartialEq)]
pub struct ApiKey {
    pub sid: String,
    pub friendly_name: Option<String>,
    pub secret: String,
    pub date_created: Millis,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("sid", &self.sid)
            .field("friendly_name", &self.friendly_name)
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// An ISO 8601 duration such as `PT10M` or `P1DT2H`.
fn validate_duration(param: &str, value: &Option<String>) -> Result<()> {
    let Some(v) = value else { return Ok(()) };
    let bad = || Error::invalid(param, "must be an ISO 8601 duration such as PT10M");
    let rest = v.strip_prefix('P').ok_or_else(bad)?;
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) if !t.is_empty() => (d, Some(t)),
        Some(_) => return Err(bad()),
        None => (rest, None),
    };
    let parts_ok = |s: &str, units: &str| -> bool {
        let mut digits = 0;
        let mut last_unit = 0usize;
        for c in s.chars() {
            if c.is_ascii_digit() {
                digits += 1;
            } else if let Some(pos) = units.find(c) {
                if digits == 0 || pos < last_unit {
                    return false;
                }
                digits = 0;
                last_unit = pos + 1;
            } else {
                return false;
            }
        }
        digits == 0
    };
    if (date.is_empty() && time.is_none())
        || !parts_ok(date, "YMWD")
        || !time.is_none_or(|t| parts_ok(t, "HMS"))
    {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_follow_iso_8601() {
        for good in ["PT10M", "P1D", "P1DT2H30M", "PT45S"] {
            assert!(validate_duration("T", &Some(good.into())).is_ok(), "{good}");
        }
        for bad in ["10M", "P", "PT", "P1H", "PTM", "P1DT", "PT1S1M"] {
            assert!(validate_duration("T", &Some(bad.into())).is_err(), "{bad}");
        }
    }

    #[test]
    fn webhook_patch_validates_target_and_method() {
        let p = WebhookPatch {
            target: Some("sms".into()),
            ..Default::default()
        };
        assert!(p.validate().unwrap_err().to_string().contains("Target"));
        let p = WebhookPatch {
            method: Some("DELETE".into()),
            ..Default::default()
        };
        assert!(p.validate().unwrap_err().to_string().contains("Method"));
    }

    #[test]
    fn api_key_debug_hides_the_secret() {
        let k = ApiKey {
            sid: "SK1".into(),
            friendly_name: None,
            secret: "hunter2".into(),
            date_created: 0,
        };
        assert!(!format!("{k:?}").contains("hunter2"));
    }
}
