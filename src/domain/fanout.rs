//! Webhook routing and fan-out: which of an event's candidate targets get a delivery, in which
//! format, with how many attempts. Pure: the caller loads the candidates (the service's Chat
//! settings, the account's Conversations webhook, the enabled native endpoints) and writes the
//! deliveries this returns, in the event's own transaction.
//!
//! Twilio's rules (docs/twilio-compatibility.md §8.5): reachability transitions always reach
//! Twilio targets; user events from clients always; REST changes only with
//! `X-Twilio-Webhook-Enabled: true`; a non-empty filter list must name the event. Native
//! endpoints get every event type they subscribe to (all when they name none).
//!
//! May depend on: domain::{account, event, service, webhook}.

use super::account::AccountWebhook;
use super::event::{EventType, Source};
use super::service::{ChatSettings, WebhookDialect};
use super::webhook::{ACCOUNT_TARGET, Format, endpoint_target, service_target, twilio_event_name};

/// Conversations targets retry once (docs/twilio-compatibility.md §8.5).
pub const CONVERSATIONS_ATTEMPTS: i64 = 2;

/// What routing needs to know about an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoutedEvent<'a> {
    pub kind: EventType,
    pub service_sid: &'a str,
    pub source: Source,
    /// The change came over REST with `X-Twilio-Webhook-Enabled: true`.
    pub rest_webhooks: bool,
}

/// A native endpoint that may receive the event (enabled, of the event's service or from the
/// configuration file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointCandidate {
    pub id: String,
    pub url: String,
    /// `None` (or empty) means every event type.
    pub event_types: Option<Vec<String>>,
}

/// A service's post-event webhook, as its Chat settings hold it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceWebhook {
    pub url: Option<String>,
    /// `None` means POST.
    pub method: Option<String>,
    /// `None` (or empty) passes every event.
    pub filters: Option<Vec<String>>,
    pub retry_count: i64,
    /// Which API set it last, hence the format.
    pub dialect: WebhookDialect,
}

impl ServiceWebhook {
    pub fn of(settings: &ChatSettings) -> Self {
        ServiceWebhook {
            url: settings.post_webhook_url.clone(),
            method: settings.webhook_method.clone(),
            filters: settings.webhook_filters.clone(),
            retry_count: settings.post_webhook_retry_count,
            dialect: settings.webhook_dialect,
        }
    }
}

/// Every target an event might go to, as loaded by storage.
#[derive(Debug, Clone, Default)]
pub struct Candidates {
    /// The event's service's post-event webhook; `None` when the service is gone.
    pub service: Option<ServiceWebhook>,
    /// The account's Conversations webhook.
    pub account: Option<AccountWebhook>,
    /// Enabled native endpoints, in their creation order.
    pub endpoints: Vec<EndpointCandidate>,
}

/// A delivery to write: one target of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    /// `service:IS…`, `account` or `endpoint:WH…` (see [`super::webhook`]).
    pub target: String,
    pub format: Format,
    pub url: String,
    pub method: String,
    /// 0 for native deliveries: the dispatcher's retry policy decides.
    pub max_attempts: i64,
}

/// The Twilio event name if a Twilio target with these filters receives the event.
fn twilio_wants(e: &RoutedEvent<'_>, filters: Option<&Vec<String>>) -> Option<&'static str> {
    let name = twilio_event_name(e.kind)?;
    let allowed_origin =
        e.kind == EventType::ReachabilityUpdated || e.source == Source::Sdk || e.rest_webhooks;
    let passes = filters.is_none_or(|f| f.is_empty() || f.iter().any(|x| x == name));
    (allowed_origin && passes).then_some(name)
}

/// The deliveries an event gets: the service's post-event webhook (Chat or Conversations
/// dialect, whichever set it last), the account's Conversations webhook (unless it targets
/// Flex), then each native endpoint that subscribes to the event's type.
pub fn route(e: &RoutedEvent<'_>, candidates: &Candidates) -> Vec<NewDelivery> {
    let mut out = Vec::new();
    if let Some(s) = &candidates.service
        && let Some(url) = &s.url
        && twilio_wants(e, s.filters.as_ref()).is_some()
    {
        let (format, max_attempts) = match s.dialect {
            WebhookDialect::Chat => (Format::Chat, 1 + s.retry_count),
            WebhookDialect::Conversations => (Format::Conversations, CONVERSATIONS_ATTEMPTS),
        };
        out.push(NewDelivery {
            target: service_target(e.service_sid),
            format,
            url: url.clone(),
            method: s.method.clone().unwrap_or_else(|| "POST".into()),
            max_attempts,
        });
    }
    if let Some(a) = &candidates.account
        && let Some(url) = &a.post_webhook_url
        && a.target.as_deref() != Some("flex")
        && twilio_wants(e, a.filters.as_ref()).is_some()
    {
        out.push(NewDelivery {
            target: ACCOUNT_TARGET.into(),
            format: Format::Conversations,
            url: url.clone(),
            method: a.method.clone().unwrap_or_else(|| "POST".into()),
            max_attempts: CONVERSATIONS_ATTEMPTS,
        });
    }
    for endpoint in &candidates.endpoints {
        let wanted = endpoint
            .event_types
            .as_ref()
            .is_none_or(|t| t.is_empty() || t.iter().any(|x| x == e.kind.as_str()));
        if wanted {
            out.push(NewDelivery {
                target: endpoint_target(&endpoint.id),
                format: Format::Native,
                url: endpoint.url.clone(),
                method: "POST".into(),
                max_attempts: 0,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventType, source: Source, rest_webhooks: bool) -> RoutedEvent<'static> {
        RoutedEvent {
            kind,
            service_sid: "IS1",
            source,
            rest_webhooks,
        }
    }

    fn chat(url: &str, retry_count: i64, filters: Option<Vec<String>>) -> ServiceWebhook {
        ServiceWebhook {
            url: Some(url.into()),
            retry_count,
            filters,
            ..Default::default()
        }
    }

    fn targets(d: &[NewDelivery]) -> Vec<&str> {
        d.iter().map(|d| d.target.as_str()).collect()
    }

    #[test]
    fn twilio_targets_get_transitions_and_client_events_but_rest_changes_only_when_asked() {
        let c = Candidates {
            service: Some(chat("https://s.example.com/hook", 2, None)),
            ..Default::default()
        };
        let transition = route(
            &event(EventType::ReachabilityUpdated, Source::Api, false),
            &c,
        );
        assert_eq!(
            transition,
            vec![NewDelivery {
                target: "service:IS1".into(),
                format: Format::Chat,
                url: "https://s.example.com/hook".into(),
                method: "POST".into(),
                max_attempts: 3,
            }]
        );
        assert_eq!(
            route(&event(EventType::UserUpdated, Source::Sdk, false), &c).len(),
            1
        );
        assert!(route(&event(EventType::UserUpdated, Source::Api, false), &c).is_empty());
        assert_eq!(
            route(&event(EventType::UserUpdated, Source::Api, true), &c).len(),
            1
        );
        assert!(
            route(&event(EventType::UserDeleted, Source::Sdk, true), &c).is_empty(),
            "Twilio has no user-deleted post-event webhook"
        );
    }

    #[test]
    fn filters_must_name_the_event_and_dialects_choose_format_and_attempts() {
        let mut s = chat(
            "https://s.example.com/hook",
            5,
            Some(vec!["onUserAdded".into()]),
        );
        s.dialect = WebhookDialect::Conversations;
        s.method = Some("GET".into());
        let c = Candidates {
            service: Some(s),
            ..Default::default()
        };
        assert!(route(&event(EventType::UserUpdated, Source::Sdk, false), &c).is_empty());
        let added = route(&event(EventType::UserAdded, Source::Sdk, false), &c);
        assert_eq!(added[0].format, Format::Conversations);
        assert_eq!(added[0].max_attempts, CONVERSATIONS_ATTEMPTS);
        assert_eq!(added[0].method, "GET");
        let empty = Candidates {
            service: Some(chat("https://s.example.com/hook", 0, Some(Vec::new()))),
            ..Default::default()
        };
        assert_eq!(
            route(&event(EventType::UserUpdated, Source::Sdk, false), &empty)[0].max_attempts,
            1,
            "an empty filter list passes everything; retry count 0 is one attempt"
        );
    }

    #[test]
    fn the_account_webhook_is_conversations_unless_it_targets_flex() {
        let hook = AccountWebhook {
            post_webhook_url: Some("https://a.example.com/hook".into()),
            filters: Some(vec!["onUserUpdated".into()]),
            ..Default::default()
        };
        let c = Candidates {
            account: Some(hook.clone()),
            ..Default::default()
        };
        let e = event(EventType::ReachabilityUpdated, Source::Api, false);
        let d = route(&e, &c);
        assert_eq!(targets(&d), vec!["account"]);
        assert_eq!(d[0].format, Format::Conversations);
        assert_eq!(d[0].max_attempts, CONVERSATIONS_ATTEMPTS);
        assert!(
            route(&event(EventType::UserAdded, Source::Sdk, false), &c).is_empty(),
            "filtered out"
        );
        let flex = Candidates {
            account: Some(AccountWebhook {
                target: Some("flex".into()),
                ..hook
            }),
            ..Default::default()
        };
        assert!(route(&e, &flex).is_empty());
        let no_url = Candidates {
            account: Some(AccountWebhook::default()),
            ..Default::default()
        };
        assert!(route(&e, &no_url).is_empty());
    }

    #[test]
    fn native_endpoints_get_the_types_they_subscribe_to_in_order_after_twilio_targets() {
        let c = Candidates {
            service: Some(chat("https://s.example.com/hook", 0, None)),
            account: None,
            endpoints: vec![
                EndpointCandidate {
                    id: "WH1".into(),
                    url: "https://n.example.com/1".into(),
                    event_types: None,
                },
                EndpointCandidate {
                    id: "WH2".into(),
                    url: "https://n.example.com/2".into(),
                    event_types: Some(vec!["user.deleted".into()]),
                },
                EndpointCandidate {
                    id: "WH3".into(),
                    url: "https://n.example.com/3".into(),
                    event_types: Some(Vec::new()),
                },
            ],
        };
        let deleted = route(&event(EventType::UserDeleted, Source::Api, false), &c);
        assert_eq!(
            targets(&deleted),
            vec!["endpoint:WH1", "endpoint:WH2", "endpoint:WH3"]
        );
        assert!(
            deleted
                .iter()
                .all(|d| d.format == Format::Native && d.max_attempts == 0 && d.method == "POST")
        );
        let transition = route(
            &event(EventType::ReachabilityUpdated, Source::Api, false),
            &c,
        );
        assert_eq!(
            targets(&transition),
            vec!["service:IS1", "endpoint:WH1", "endpoint:WH3"]
        );
    }
}
