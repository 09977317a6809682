//! Set-up and checks through the public API, as the shop's admin: products, stock, accounts, and
//! reading orders and stock levels back after a run. Not measured.

use std::collections::HashSet;
use std::sync::Arc;

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};
use serde::Deserialize;
use serde_json::{Value, json};

/// Accounts per `POST /v1/admin/users` (its limit is 1,000; 500 keeps the body well under 64 KiB).
const PROVISION_BATCH: usize = 500;

/// The admin's client.
#[derive(Debug, Clone)]
pub struct Api {
    client: reqwest::Client,
    base: String,
    token: String,
}

/// A shopper's account.
#[derive(Debug, Clone)]
pub struct Account {
    /// The user.
    pub user_id: String,
    /// Its access token.
    pub token: Arc<str>,
}

/// Stock levels of a SKU.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Levels {
    /// Units on hand.
    pub on_hand: u64,
    /// Units held for orders in progress.
    pub reserved: u64,
    /// `on_hand - reserved`.
    pub available: u64,
}

/// An order of the admin list.
#[derive(Debug, Clone, Deserialize)]
pub struct OrderSummary {
    /// The order.
    pub order_id: String,
    /// The buyer.
    pub user_id: String,
}

impl Api {
    /// Logs in as the admin at `base` (a node's URL).
    pub async fn login(base: &str, email: &str, password: &str) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .context("building the HTTP client")?;
        let mut api = Self { client, base: base.to_owned(), token: String::new() };
        let (status, body) = api
            .send(
                reqwest::Method::POST,
                "/v1/auth/login",
                Some(json!({"email": email, "password": password})),
            )
            .await?;
        if status != 200 {
            bail!(
                "admin login as {email} at {base} answered {status}: {body} (the server's STOREFRONT_ADMIN_EMAIL/PASSWORD must match --admin-email/--admin-password)"
            );
        }
        api.token =
            body["access_token"].as_str().context("login answer without access_token")?.to_owned();
        Ok(api)
    }

    /// Sends a request with the admin's token; the status and the JSON body (`null` if none). A
    /// 429 is retried after its `Retry-After` (a node with rate limits on), up to a minute.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let give_up = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        let response = loop {
            let mut request = self.client.request(method.clone(), format!("{}{path}", self.base));
            if !self.token.is_empty() {
                request = request.bearer_auth(&self.token);
            }
            if let Some(body) = &body {
                request = request.json(body);
            }
            let response = request.send().await.with_context(|| format!("{method} {path}"))?;
            let wait = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                .map(std::time::Duration::from_secs);
            match wait {
                Some(wait)
                    if response.status() == reqwest::StatusCode::TOO_MANY_REQUESTS
                        && tokio::time::Instant::now() + wait < give_up =>
                {
                    tokio::time::sleep(wait).await;
                }
                _ => break response,
            }
        };
        let status = response.status().as_u16();
        let bytes = response.bytes().await.with_context(|| format!("{method} {path}: body"))?;
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes)? };
        Ok((status, body))
    }

    async fn expect(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        want: u16,
    ) -> anyhow::Result<Value> {
        let (status, answer) = self.send(method.clone(), path, body).await?;
        if status != want {
            bail!("{method} {path} answered {status}, expected {want}: {answer}");
        }
        Ok(answer)
    }

    /// A price of about 20 in the shop's base currency, as `{amount, currency}`.
    pub async fn price(&self) -> anyhow::Result<Value> {
        let answer = self.expect(reqwest::Method::GET, "/v1/currencies", None, 200).await?;
        let base = answer["base"].as_str().context("currencies without base")?;
        let digits = answer["items"]
            .as_array()
            .and_then(|items| items.iter().find(|c| c["code"] == base))
            .and_then(|c| c["minor_digits"].as_u64())
            .with_context(|| format!("the base currency {base} is not listed"))?;
        let amount = rust_decimal::Decimal::new(1999, 2).round_dp(digits as u32);
        Ok(json!({"amount": format!("{amount:.*}", digits as usize), "currency": base}))
    }

    /// Creates a product with `stock` units on hand.
    pub async fn create_product(
        &self,
        sku: &str,
        category: &str,
        price: &Value,
        stock: u64,
    ) -> anyhow::Result<()> {
        let product = json!({
            "sku": sku,
            "name": format!("Load test item {sku}"),
            "description": "Created by storefront-load",
            "category": category,
            "price": price,
            "initial_stock": stock,
        });
        self.expect(reqwest::Method::POST, "/v1/admin/products", Some(product), 201).await?;
        Ok(())
    }

    /// Adds `qty` units of `sku` on hand; the new levels.
    pub async fn restock(&self, sku: &str, qty: u64) -> anyhow::Result<Levels> {
        let path = format!("/v1/admin/inventory/{sku}/restock");
        let answer =
            self.expect(reqwest::Method::POST, &path, Some(json!({"qty": qty})), 200).await?;
        Ok(serde_json::from_value(answer)?)
    }

    /// Creates `count` shoppers named after `run`, in batches, a few batches at a time.
    pub async fn provision(&self, run: &str, count: usize) -> anyhow::Result<Vec<Account>> {
        let batches: Vec<_> = (0..count).step_by(PROVISION_BATCH).collect();
        let accounts: Vec<Vec<Account>> = futures::stream::iter(batches)
            .map(|first| async move {
                let users: Vec<Value> = (first..(first + PROVISION_BATCH).min(count))
                    .map(|n| json!({"email": format!("{run}-{n}@load.invalid")}))
                    .collect();
                let body = json!({"password": format!("{run}-password"), "users": users});
                let answer =
                    self.expect(reqwest::Method::POST, "/v1/admin/users", Some(body), 201).await?;
                let created: Vec<Account> = answer["users"]
                    .as_array()
                    .context("no users in the answer")?
                    .iter()
                    .map(|u| {
                        Ok(Account {
                            user_id: u["user_id"].as_str().context("user_id")?.to_owned(),
                            token: u["access_token"].as_str().context("access_token")?.into(),
                        })
                    })
                    .collect::<anyhow::Result<_>>()?;
                if created.len() != users.len() {
                    bail!(
                        "asked for {} accounts, got {}: {}",
                        users.len(),
                        created.len(),
                        answer["taken"]
                    );
                }
                Ok(created)
            })
            .buffered(4)
            .try_collect()
            .await?;
        Ok(accounts.into_iter().flatten().collect())
    }

    /// One page of the list at `list` (a path with its query, e.g. `/v1/products?limit=100`)
    /// after `cursor`: its items, and the cursor of the next page if there is one.
    pub async fn page<T: serde::de::DeserializeOwned>(
        &self,
        list: &str,
        cursor: Option<&str>,
    ) -> anyhow::Result<(Vec<T>, Option<String>)> {
        let path = match cursor {
            None => list.to_owned(),
            Some(c) => format!("{list}&cursor={c}"),
        };
        let answer = self.expect(reqwest::Method::GET, &path, None, 200).await?;
        let items = serde_json::from_value(answer["items"].clone())
            .with_context(|| format!("the items of GET {path}"))?;
        Ok((items, answer["next_cursor"].as_str().map(str::to_owned)))
    }

    /// The stock levels of `sku`.
    pub async fn levels(&self, sku: &str) -> anyhow::Result<Levels> {
        let answer =
            self.expect(reqwest::Method::GET, &format!("/v1/inventory/{sku}"), None, 200).await?;
        Ok(serde_json::from_value(answer)?)
    }

    /// Every order with `status` whose buyer is one of `users`, read from the admin list (newest
    /// first) until 1,000 orders in a row are not theirs (the run's orders are the newest).
    pub async fn orders_of(
        &self,
        users: &HashSet<String>,
        status: &str,
    ) -> anyhow::Result<Vec<OrderSummary>> {
        let mut found = Vec::new();
        let list = format!("/v1/admin/orders?status={status}&limit=100");
        let mut cursor: Option<String> = None;
        let mut strangers_in_a_row = 0;
        loop {
            let (items, next) = self.page::<OrderSummary>(&list, cursor.as_deref()).await?;
            for order in items {
                if users.contains(&order.user_id) {
                    strangers_in_a_row = 0;
                    found.push(order);
                } else {
                    strangers_in_a_row += 1;
                }
            }
            // The list is newest first and the run's orders are the newest: a long stretch of
            // others' orders means the run's are behind us.
            if strangers_in_a_row >= 1000 || next.is_none() {
                return Ok(found);
            }
            cursor = next;
        }
    }

    /// Reads every order of `ids` (as the admin), `concurrency` at a time; those that do not read
    /// back as `status` (with what they read as).
    pub async fn unreadable(
        &self,
        ids: Vec<String>,
        status: &str,
        concurrency: usize,
    ) -> anyhow::Result<Vec<String>> {
        let results: Vec<Option<String>> = futures::stream::iter(ids)
            .map(|id| async move {
                let (code, body) =
                    self.send(reqwest::Method::GET, &format!("/v1/orders/{id}"), None).await?;
                let seen = body["status"].as_str().unwrap_or("");
                anyhow::Ok((code != 200 || seen != status).then(|| format!("{id}: {code} {seen}")))
            })
            .buffer_unordered(concurrency)
            .try_collect()
            .await?;
        Ok(results.into_iter().flatten().collect())
    }
}
