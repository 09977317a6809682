//! Text messages out: a Twilio-compatible Messages API over HTTPS (`reqwest`):
//! `POST {base}/2010-04-01/Accounts/{account}/Messages.json` with the form fields `To`, `From`
//! and `Body`, HTTP basic auth `account:token`; any 2xx answer is a sent message.

use std::time::Duration;

use crate::EventsError;

/// The SMS gateway's settings.
#[derive(Clone)]
pub struct SmsSettings {
    /// The API's base URL.
    pub base_url: String,
    /// The account (basic-auth user).
    pub account: String,
    /// The token (basic-auth password).
    pub token: String,
    /// The sender number.
    pub from: String,
}

impl std::fmt::Debug for SmsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmsSettings")
            .field("base_url", &self.base_url)
            .field("account", &self.account)
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

/// A client of the gateway.
#[derive(Debug, Clone)]
pub struct SmsClient {
    http: reqwest::Client,
    url: String,
    settings: SmsSettings,
}

impl SmsClient {
    /// A client whose every request (connect and answer) takes at most `timeout`.
    pub fn new(settings: SmsSettings, timeout: Duration) -> Result<SmsClient, EventsError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| EventsError::Config(format!("sms client: {e}")))?;
        let url = format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            settings.base_url.trim_end_matches('/'),
            settings.account
        );
        Ok(SmsClient { http, url, settings })
    }

    /// Sends `body` to `to` (E.164).
    pub async fn send(&self, to: &str, body: &str) -> Result<(), EventsError> {
        let answer = self
            .http
            .post(&self.url)
            .basic_auth(&self.settings.account, Some(&self.settings.token))
            .form(&[("To", to), ("From", self.settings.from.as_str()), ("Body", body)])
            .send()
            .await
            .map_err(|e| EventsError::Send(format!("sms gateway: {e}")))?;
        let status = answer.status();
        if status.is_success() {
            Ok(())
        } else {
            let text = answer.text().await.unwrap_or_default();
            let text: String = text.chars().take(200).collect();
            Err(EventsError::Send(format!("sms gateway answered {status}: {text}")))
        }
    }
}
