//! The event vocabulary of EVENTS.md: the event types, the `data` each carries, and the CloudEvents
//! 1.0 envelope (JSON structured form) that is the body of every AMQP message and webhook.
//!
//! Entities build their events here and put them in the outbox of the same append as their state
//! change ([`CloudEvent::into_outbox`]); consumers read them back with [`CloudEvent::parse`]. It
//! does not own when an event happens (the entities) or how it leaves (the relay).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use storefront_storage::OutboxRecord;

use crate::EventsError;

/// Every event type of the contract. The routing key and the CloudEvents `type` are its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventType {
    /// `user.registered`: [`UserRegistered`].
    #[serde(rename = "user.registered")]
    UserRegistered,
    /// `order.confirmed`: [`OrderData`].
    #[serde(rename = "order.confirmed")]
    OrderConfirmed,
    /// `order.cancelled`: [`OrderData`] with `refund`.
    #[serde(rename = "order.cancelled")]
    OrderCancelled,
    /// `payment.failed`: [`PaymentFailed`].
    #[serde(rename = "payment.failed")]
    PaymentFailed,
    /// `stock.low`: [`StockLow`].
    #[serde(rename = "stock.low")]
    StockLow,
    /// `stock.sold_out`: [`StockSoldOut`].
    #[serde(rename = "stock.sold_out")]
    StockSoldOut,
    /// `user.password_reset_requested`: [`PasswordResetRequested`]. Carries a secret: never
    /// offered to webhooks.
    #[serde(rename = "user.password_reset_requested")]
    PasswordResetRequested,
}

impl EventType {
    /// Every type, in the contract's order.
    pub const ALL: [EventType; 7] = [
        EventType::UserRegistered,
        EventType::OrderConfirmed,
        EventType::OrderCancelled,
        EventType::PaymentFailed,
        EventType::StockLow,
        EventType::StockSoldOut,
        EventType::PasswordResetRequested,
    ];

    /// The type's name: routing key, CloudEvents `type`, AMQP `type` property.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::UserRegistered => "user.registered",
            EventType::OrderConfirmed => "order.confirmed",
            EventType::OrderCancelled => "order.cancelled",
            EventType::PaymentFailed => "payment.failed",
            EventType::StockLow => "stock.low",
            EventType::StockSoldOut => "stock.sold_out",
            EventType::PasswordResetRequested => "user.password_reset_requested",
        }
    }

    /// The type named `name`, if the contract has one.
    pub fn parse(name: &str) -> Option<EventType> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// Whether merchants' webhooks may subscribe to it (a password reset token never leaves
    /// for a merchant's endpoint).
    pub fn offered_to_webhooks(self) -> bool {
        self != EventType::PasswordResetRequested
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The API's Money object as it travels in events: `amount` a decimal string in the currency's
/// minor units, `currency` ISO 4217.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    /// For example `"19.99"`.
    pub amount: String,
    /// For example `"USD"`.
    pub currency: String,
}

/// One line of an order, with what a mail shows of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderItem {
    /// The SKU.
    pub sku: String,
    /// The product's name at checkout.
    pub name: String,
    /// Units.
    pub qty: u32,
    /// Price of one unit.
    pub unit_price: Money,
    /// `qty × unit_price`.
    pub line_total: Money,
}

/// `data` of `order.confirmed` and `order.cancelled`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderData {
    /// The order.
    pub order_id: String,
    /// The buyer.
    pub user_id: String,
    /// The buyer's address at checkout.
    pub email: String,
    /// The order's status after the event (`confirmed`, `cancelled`).
    pub status: String,
    /// What was bought.
    pub items: Vec<OrderItem>,
    /// What the order costs.
    pub total: Money,
    /// The checkout's shipping address (API.md "Shipping address"), `null` if none.
    pub shipping_address: Option<serde_json::Value>,
    /// `order.cancelled` only: what was refunded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund: Option<Money>,
}

impl OrderData {
    /// The E.164 phone of the shipping address, if it has one.
    pub fn phone(&self) -> Option<&str> {
        self.shipping_address.as_ref()?.get("phone")?.as_str().filter(|p| !p.is_empty())
    }
}

/// Why a payment failed, as `payment.failed` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentFailureReason {
    /// The card was declined.
    Declined,
    /// Not enough funds.
    InsufficientFunds,
    /// The gateway kept failing.
    GatewayError,
}

/// `data` of `payment.failed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentFailed {
    /// The order.
    pub order_id: String,
    /// The buyer.
    pub user_id: String,
    /// The buyer's address at checkout.
    pub email: String,
    /// Why.
    pub reason: PaymentFailureReason,
    /// What the order would have cost.
    pub total: Money,
}

/// `data` of `user.registered`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRegistered {
    /// The new account.
    pub user_id: String,
    /// Its address.
    pub email: String,
    /// Its display name, if given.
    pub name: Option<String>,
}

/// `data` of `stock.low`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockLow {
    /// The SKU.
    pub sku: String,
    /// Units available after the change.
    pub available: u64,
    /// The threshold it fell below.
    pub threshold: u64,
}

/// `data` of `stock.sold_out`: available reached 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockSoldOut {
    /// The SKU.
    pub sku: String,
    /// Units on hand (held ones included).
    pub on_hand: u64,
    /// Units held by open reservations.
    pub reserved: u64,
}

/// `data` of `user.password_reset_requested`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordResetRequested {
    /// The account.
    pub user_id: String,
    /// Where the reset mail goes.
    pub email: String,
    /// The single-use reset token (its hash is what the server keeps).
    pub token: String,
    /// When the token stops working (RFC 3339 UTC).
    pub expires_at: String,
}

impl PasswordResetRequested {
    /// Whether the token has expired at `now` (an unreadable expiry counts as expired: a
    /// reset mail is never sent on a guess).
    pub fn expired(&self, now: SystemTime) -> bool {
        humantime::parse_rfc3339(&self.expires_at).map_or(true, |expires| expires <= now)
    }
}

/// The payload of a domain event, typed by its event type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventData {
    /// `user.registered`.
    UserRegistered(UserRegistered),
    /// `order.confirmed`.
    OrderConfirmed(OrderData),
    /// `order.cancelled`.
    OrderCancelled(OrderData),
    /// `payment.failed`.
    PaymentFailed(PaymentFailed),
    /// `stock.low`.
    StockLow(StockLow),
    /// `stock.sold_out`.
    StockSoldOut(StockSoldOut),
    /// `user.password_reset_requested`.
    PasswordResetRequested(PasswordResetRequested),
}

impl EventData {
    /// The event's type.
    pub fn event_type(&self) -> EventType {
        match self {
            EventData::UserRegistered(_) => EventType::UserRegistered,
            EventData::OrderConfirmed(_) => EventType::OrderConfirmed,
            EventData::OrderCancelled(_) => EventType::OrderCancelled,
            EventData::PaymentFailed(_) => EventType::PaymentFailed,
            EventData::StockLow(_) => EventType::StockLow,
            EventData::StockSoldOut(_) => EventType::StockSoldOut,
            EventData::PasswordResetRequested(_) => EventType::PasswordResetRequested,
        }
    }

    /// The customer's address the event names, if it is one a customer hears of.
    pub fn email(&self) -> Option<&str> {
        match self {
            EventData::UserRegistered(d) => Some(d.email.as_str()),
            EventData::OrderConfirmed(d) | EventData::OrderCancelled(d) => Some(d.email.as_str()),
            EventData::PaymentFailed(d) => Some(d.email.as_str()),
            EventData::PasswordResetRequested(d) => Some(d.email.as_str()),
            EventData::StockLow(_) | EventData::StockSoldOut(_) => None,
        }
        .filter(|email| !email.is_empty())
    }

    /// The entity the event is about (the CloudEvents `subject`).
    pub fn subject(&self) -> &str {
        match self {
            EventData::UserRegistered(d) => &d.user_id,
            EventData::OrderConfirmed(d) | EventData::OrderCancelled(d) => &d.order_id,
            EventData::PaymentFailed(d) => &d.order_id,
            EventData::StockLow(d) => &d.sku,
            EventData::StockSoldOut(d) => &d.sku,
            EventData::PasswordResetRequested(d) => &d.user_id,
        }
    }

    fn from_json(kind: EventType, data: serde_json::Value) -> Result<Self, serde_json::Error> {
        Ok(match kind {
            EventType::UserRegistered => EventData::UserRegistered(serde_json::from_value(data)?),
            EventType::OrderConfirmed => EventData::OrderConfirmed(serde_json::from_value(data)?),
            EventType::OrderCancelled => EventData::OrderCancelled(serde_json::from_value(data)?),
            EventType::PaymentFailed => EventData::PaymentFailed(serde_json::from_value(data)?),
            EventType::StockLow => EventData::StockLow(serde_json::from_value(data)?),
            EventType::StockSoldOut => EventData::StockSoldOut(serde_json::from_value(data)?),
            EventType::PasswordResetRequested => {
                EventData::PasswordResetRequested(serde_json::from_value(data)?)
            }
        })
    }
}

/// When the event with id `id` happened, in milliseconds since the Unix epoch: the timestamp
/// of its UUIDv7 (`None` for an id that is not one).
pub fn time_of_id(id: &str) -> Option<u64> {
    let (secs, nanos) = uuid::Uuid::parse_str(id).ok()?.get_timestamp()?.to_unix();
    Some(secs * 1000 + u64::from(nanos / 1_000_000))
}

/// The CloudEvents `source` of every Storefront event.
pub const SOURCE: &str = "storefront";

/// A domain event in its CloudEvents 1.0 envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudEvent {
    /// Unique; consumers deduplicate on it (a UUIDv7, so ids sort by when they were made).
    pub id: String,
    /// When it happened, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// What happened.
    pub data: EventData,
}

/// The JSON structured form, field for field, as read: every field is required, though only some
/// are kept.
#[derive(Deserialize)]
struct Envelope {
    specversion: String,
    id: String,
    #[allow(dead_code)]
    source: String,
    #[serde(rename = "type")]
    kind: EventType,
    #[allow(dead_code)]
    subject: String,
    time: String,
    #[allow(dead_code)]
    datacontenttype: String,
    data: serde_json::Value,
}

/// The JSON structured form as written: borrowed from the event, its data serialized in place
/// rather than built as a `serde_json::Value` first (which cost an outbox write a tree of maps
/// and strings per event).
#[derive(Serialize)]
struct EnvelopeOut<'a> {
    specversion: &'static str,
    id: &'a str,
    source: &'static str,
    #[serde(rename = "type")]
    kind: EventType,
    subject: &'a str,
    time: String,
    datacontenttype: &'static str,
    data: DataOut<'a>,
}

/// An event's data, serialized as its own type (the envelope's `type` names it).
struct DataOut<'a>(&'a EventData);

impl Serialize for DataOut<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            EventData::UserRegistered(d) => d.serialize(serializer),
            EventData::OrderConfirmed(d) | EventData::OrderCancelled(d) => d.serialize(serializer),
            EventData::PaymentFailed(d) => d.serialize(serializer),
            EventData::StockLow(d) => d.serialize(serializer),
            EventData::StockSoldOut(d) => d.serialize(serializer),
            EventData::PasswordResetRequested(d) => d.serialize(serializer),
        }
    }
}

impl CloudEvent {
    /// A new event that happened at `time_ms` (the entity's clock), with a fresh id: a UUIDv7
    /// whose timestamp is that time (so a reader of the outbox knows when an event happened
    /// from its id alone, see [`time_of_id`]).
    pub fn new(time_ms: u64, data: EventData) -> Self {
        let at = uuid::Timestamp::from_unix(
            uuid::NoContext,
            time_ms / 1000,
            u32::try_from(time_ms % 1000).unwrap_or_default() * 1_000_000,
        );
        Self { id: uuid::Uuid::new_v7(at).to_string(), time_ms, data }
    }

    /// The event's type.
    pub fn event_type(&self) -> EventType {
        self.data.event_type()
    }

    /// The JSON structured form: the body of AMQP messages and webhook requests.
    pub fn to_json(&self) -> Result<Vec<u8>, EventsError> {
        let envelope = EnvelopeOut {
            specversion: "1.0",
            id: &self.id,
            source: SOURCE,
            kind: self.event_type(),
            subject: self.data.subject(),
            time: humantime::format_rfc3339_millis(
                UNIX_EPOCH + Duration::from_millis(self.time_ms),
            )
            .to_string(),
            datacontenttype: "application/json",
            data: DataOut(&self.data),
        };
        serde_json::to_vec(&envelope).map_err(EventsError::encode)
    }

    /// The outbox record an entity appends with its state change.
    pub fn into_outbox(self) -> Result<OutboxRecord, EventsError> {
        let payload = self.to_json()?;
        let topic = self.event_type().as_str().into();
        Ok(OutboxRecord { event_id: self.id, topic, payload })
    }

    /// Reads an event back from its JSON structured form.
    pub fn parse(body: &[u8]) -> Result<Self, EventsError> {
        let envelope: Envelope = serde_json::from_slice(body).map_err(EventsError::decode)?;
        if envelope.specversion != "1.0" {
            return Err(EventsError::Decode(format!(
                "specversion {} is not 1.0",
                envelope.specversion
            )));
        }
        let time = humantime::parse_rfc3339(&envelope.time)
            .map_err(|e| EventsError::Decode(format!("time: {e}")))?;
        let time_ms = time
            .duration_since(UNIX_EPOCH)
            .map_err(|_| EventsError::Decode("time before 1970".into()))?
            .as_millis();
        let data =
            EventData::from_json(envelope.kind, envelope.data).map_err(EventsError::decode)?;
        Ok(Self {
            id: envelope.id,
            time_ms: u64::try_from(time_ms)
                .map_err(|_| EventsError::Decode("time out of range".into()))?,
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn order() -> OrderData {
        let eur = |amount: &str| Money { amount: amount.into(), currency: "EUR".into() };
        OrderData {
            order_id: "ord_1".into(),
            user_id: "usr_1".into(),
            email: "ada@example.com".into(),
            status: "confirmed".into(),
            items: vec![OrderItem {
                sku: "HOT-1".into(),
                name: "Hot thing".into(),
                qty: 2,
                unit_price: eur("9.50"),
                line_total: eur("19.00"),
            }],
            total: eur("19.00"),
            shipping_address: Some(serde_json::json!({"name": "Ada", "phone": "+15005550006"})),
            refund: None,
        }
    }

    #[test]
    fn the_envelope_is_cloudevents_json_as_the_contract_spells_it() {
        let event = CloudEvent::new(1_700_000_000_123, EventData::OrderConfirmed(order()));
        let json: serde_json::Value = serde_json::from_slice(&event.to_json().unwrap()).unwrap();
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["id"], event.id.as_str());
        assert_eq!(json["source"], "storefront");
        assert_eq!(json["type"], "order.confirmed");
        assert_eq!(json["subject"], "ord_1");
        assert_eq!(json["time"], "2023-11-14T22:13:20.123Z");
        assert_eq!(json["datacontenttype"], "application/json");
        assert_eq!(json["data"]["items"][0]["line_total"]["amount"], "19.00");
        assert_eq!(json["data"]["shipping_address"]["phone"], "+15005550006");
        assert!(json["data"].get("refund").is_none(), "refund is order.cancelled's only");
        assert_eq!(CloudEvent::parse(&event.to_json().unwrap()).unwrap(), event);
        assert_eq!(time_of_id(&event.id), Some(1_700_000_000_123), "the id tells the time");
        assert_ne!(CloudEvent::new(1, EventData::OrderConfirmed(order())).id, event.id);
    }

    #[test]
    fn every_type_round_trips_by_name_and_only_password_resets_stay_off_webhooks() {
        for kind in EventType::ALL {
            assert_eq!(EventType::parse(kind.as_str()), Some(kind));
            assert_eq!(serde_json::to_value(kind).unwrap(), serde_json::Value::from(kind.as_str()));
            assert_eq!(kind.offered_to_webhooks(), kind != EventType::PasswordResetRequested);
        }
        assert_eq!(EventType::parse("order.shipped"), None);
    }

    #[test]
    fn a_reset_token_past_its_expiry_is_expired() {
        let reset = |expires_at: &str| PasswordResetRequested {
            user_id: "u".into(),
            email: "e@example.com".into(),
            token: "t".into(),
            expires_at: expires_at.into(),
        };
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert!(reset("2023-11-14T22:13:19Z").expired(now));
        assert!(!reset("2023-11-14T22:13:21Z").expired(now));
        assert!(reset("not a time").expired(now));
    }
}
