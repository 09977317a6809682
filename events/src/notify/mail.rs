//! Mail out: SMTP through `lettre` (async on tokio, TLS by rustls), or `.eml` files in a folder
//! when no SMTP server is configured (a development default).

use std::path::PathBuf;
use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::templates::MailText;
use crate::EventsError;

/// Where mail goes.
#[derive(Debug)]
pub enum Mailer {
    /// An SMTP server.
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// `.eml` files in a folder.
    Files(AsyncFileTransport<Tokio1Executor>),
}

impl Mailer {
    /// A mailer for `smtp_url` (`smtp://host:port`, `smtps://user:password@host:465`, lettre's
    /// URL form), each session bounded by `timeout`; without one, `.eml` files under `mail_dir`.
    pub fn new(
        smtp_url: Option<&str>,
        mail_dir: PathBuf,
        timeout: Duration,
    ) -> Result<Mailer, EventsError> {
        match smtp_url {
            Some(url) => {
                let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .map_err(|e| EventsError::Config(format!("notify.smtp_url: {e}")))?
                    .timeout(Some(timeout))
                    .build();
                Ok(Mailer::Smtp(transport))
            }
            None => {
                std::fs::create_dir_all(&mail_dir).map_err(|e| {
                    EventsError::Config(format!("cannot create {}: {e}", mail_dir.display()))
                })?;
                Ok(Mailer::Files(AsyncFileTransport::new(mail_dir)))
            }
        }
    }

    /// Sends one mail from `from` to `to`; its Message-ID derives from the event id, so a
    /// mail sent again is recognisably the same mail.
    pub async fn send(
        &self,
        from: &Mailbox,
        to: &str,
        event_id: &str,
        text: MailText,
    ) -> Result<(), EventsError> {
        let to: Mailbox =
            to.parse().map_err(|e| EventsError::Send(format!("recipient `{to}`: {e}")))?;
        let message = Message::builder()
            .from(from.clone())
            .to(to)
            .subject(text.subject)
            .message_id(Some(format!("<{event_id}@storefront>")))
            .multipart(MultiPart::alternative_plain_html(text.text, text.html))
            .map_err(EventsError::send)?;
        match self {
            Mailer::Smtp(smtp) => smtp.send(message).await.map(drop).map_err(EventsError::send),
            Mailer::Files(files) => files.send(message).await.map(drop).map_err(EventsError::send),
        }
    }
}
