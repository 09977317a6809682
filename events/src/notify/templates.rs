//! The notification texts: Jinja templates (minijinja), one set per event type, built in and
//! replaceable file by file from an operator's folder.
//!
//! For an event type `T` a mail is `T.subject` (one line), `T.txt` (the text part) and `T.html`
//! (the HTML part, auto-escaped); a text message is `sms/T.txt`. Every template sees `data` (the
//! event's `data`), `id`, `type` and `time`. A file of the same name in the operator's folder
//! replaces the built-in one. All are compiled at start, so a broken template stops the service
//! there instead of failing sends.

use std::path::Path;

use minijinja::Environment;
use minijinja::value::Serde;

use crate::{CloudEvent, EventType, EventsError};

/// Built-in templates, by file name.
const BUILT_IN: &[(&str, &str)] = &[
    ("user.registered.subject", include_str!("../../templates/user.registered.subject")),
    ("user.registered.txt", include_str!("../../templates/user.registered.txt")),
    ("user.registered.html", include_str!("../../templates/user.registered.html")),
    ("order.confirmed.subject", include_str!("../../templates/order.confirmed.subject")),
    ("order.confirmed.txt", include_str!("../../templates/order.confirmed.txt")),
    ("order.confirmed.html", include_str!("../../templates/order.confirmed.html")),
    ("order.cancelled.subject", include_str!("../../templates/order.cancelled.subject")),
    ("order.cancelled.txt", include_str!("../../templates/order.cancelled.txt")),
    ("order.cancelled.html", include_str!("../../templates/order.cancelled.html")),
    ("payment.failed.subject", include_str!("../../templates/payment.failed.subject")),
    ("payment.failed.txt", include_str!("../../templates/payment.failed.txt")),
    ("payment.failed.html", include_str!("../../templates/payment.failed.html")),
    (
        "user.password_reset_requested.subject",
        include_str!("../../templates/user.password_reset_requested.subject"),
    ),
    (
        "user.password_reset_requested.txt",
        include_str!("../../templates/user.password_reset_requested.txt"),
    ),
    (
        "user.password_reset_requested.html",
        include_str!("../../templates/user.password_reset_requested.html"),
    ),
    ("sms/order.confirmed.txt", include_str!("../../templates/sms/order.confirmed.txt")),
];

/// A mail's rendered parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailText {
    /// One line.
    pub subject: String,
    /// The text/plain part.
    pub text: String,
    /// The text/html part.
    pub html: String,
}

/// The compiled templates.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    /// The built-in templates, each replaced by the file of the same name under `dir` if there
    /// is one.
    pub fn load(dir: Option<&Path>) -> Result<Templates, EventsError> {
        let mut env = Environment::new();
        for (name, built_in) in BUILT_IN {
            let source = match dir.map(|d| d.join(name)) {
                Some(path) if path.is_file() => std::fs::read_to_string(&path).map_err(|e| {
                    EventsError::Template(format!("cannot read {}: {e}", path.display()))
                })?,
                _ => (*built_in).to_owned(),
            };
            env.add_template_owned(*name, source)
                .map_err(|e| EventsError::Template(format!("{name}: {e}")))?;
        }
        Ok(Templates { env })
    }

    /// The mail for `event`, if its type has one.
    pub fn mail(&self, event: &CloudEvent) -> Result<Option<MailText>, EventsError> {
        let kind = event.event_type();
        if !self.has(&format!("{kind}.subject")) {
            return Ok(None);
        }
        let subject = self.render(&format!("{kind}.subject"), event)?;
        Ok(Some(MailText {
            // Headers are one line: whatever a template leaves, newlines never reach the header.
            subject: subject.split_whitespace().collect::<Vec<_>>().join(" "),
            text: self.render(&format!("{kind}.txt"), event)?,
            html: self.render(&format!("{kind}.html"), event)?,
        }))
    }

    /// The text message for `event`, if its type has one.
    pub fn sms(&self, event: &CloudEvent) -> Result<Option<String>, EventsError> {
        let name = format!("sms/{}.txt", event.event_type());
        if !self.has(&name) {
            return Ok(None);
        }
        Ok(Some(self.render(&name, event)?.trim().to_owned()))
    }

    fn has(&self, name: &str) -> bool {
        self.env.get_template(name).is_ok()
    }

    fn render(&self, name: &str, event: &CloudEvent) -> Result<String, EventsError> {
        let template = self
            .env
            .get_template(name)
            .map_err(|e| EventsError::Template(format!("{name}: {e}")))?;
        let json = event.to_json()?;
        let envelope: serde_json::Value =
            serde_json::from_slice(&json).map_err(EventsError::encode)?;
        template
            .render(minijinja::context! {
                data => Serde(&envelope["data"]),
                id => event.id.as_str(),
                type => EventType::as_str(event.event_type()),
                time => Serde(&envelope["time"]),
            })
            .map_err(|e| EventsError::Template(format!("{name}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::EventData;
    use crate::event::{Money, OrderData, OrderItem};

    fn confirmed(name: &str) -> CloudEvent {
        let usd = |a: &str| Money { amount: a.into(), currency: "USD".into() };
        CloudEvent::new(
            1_700_000_000_000,
            EventData::OrderConfirmed(OrderData {
                order_id: "ord-42".into(),
                user_id: "u".into(),
                email: "ann@example.com".into(),
                status: "confirmed".into(),
                items: vec![OrderItem {
                    sku: "HOT-1".into(),
                    name: name.into(),
                    qty: 2,
                    unit_price: usd("5.00"),
                    line_total: usd("10.00"),
                }],
                total: usd("10.00"),
                shipping_address: Some(serde_json::json!({
                    "name": "Ann", "line1": "1 Main St", "city": "Springfield",
                    "postal_code": "12345", "country": "US", "phone": "+15005550006"
                })),
                refund: None,
            }),
        )
    }

    #[test]
    fn built_in_mails_name_the_order_and_escape_html() {
        let templates = Templates::load(None).unwrap();
        let mail = templates.mail(&confirmed("Mug <b>&</b> saucer")).unwrap().unwrap();
        assert_eq!(mail.subject, "Your order ord-42 is confirmed");
        assert!(mail.text.contains("2 x Mug <b>&</b> saucer (HOT-1)"), "{}", mail.text);
        assert!(mail.text.contains("Total: 10.00 USD"), "{}", mail.text);
        assert!(mail.text.contains("1 Main St"), "{}", mail.text);
        assert!(mail.html.contains("Mug &lt;b&gt;&amp;&lt;&#x2f;b&gt; saucer"), "{}", mail.html);
        let sms = templates.sms(&confirmed("Mug")).unwrap().unwrap();
        assert_eq!(sms, "Order ord-42 confirmed: 10.00 USD. Thank you!");
    }

    #[test]
    fn an_operators_file_replaces_its_built_in_one_and_a_broken_one_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("order.confirmed.subject"), "Danke! {{ data.order_id }}")
            .unwrap();
        let templates = Templates::load(Some(dir.path())).unwrap();
        let mail = templates.mail(&confirmed("Mug")).unwrap().unwrap();
        assert_eq!(mail.subject, "Danke! ord-42");
        assert!(mail.text.contains("ord-42"), "the other files stay built in");
        std::fs::write(dir.path().join("order.confirmed.txt"), "{% for %}").unwrap();
        assert!(matches!(Templates::load(Some(dir.path())), Err(EventsError::Template(_))));
    }
}
