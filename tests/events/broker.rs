//! The local RabbitMQ as the tests use it: a virtual host of its own for each test (so tests in
//! parallel never see each other's exchanges, queues or messages), and queues to read from.

use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};

/// A virtual host made for one test and removed after it.
pub struct Vhost {
    pub name: String,
}

fn rabbitmqctl(args: &[&str]) {
    let out =
        std::process::Command::new("rabbitmqctl").args(args).output().expect("run rabbitmqctl");
    assert!(out.status.success(), "rabbitmqctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Vhost {
    pub fn new() -> Vhost {
        let name = format!("sf-test-{}", uuid::Uuid::now_v7().simple());
        rabbitmqctl(&["add_vhost", &name]);
        rabbitmqctl(&["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"]);
        Vhost { name }
    }

    /// `amqp://guest:guest@127.0.0.1:5672/<vhost>`.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:5672/{}", self.name)
    }

    pub async fn channel(&self) -> (Connection, Channel) {
        let conn = Connection::connect(&self.url(), ConnectionProperties::default()).await.unwrap();
        let channel = conn.create_channel().await.unwrap();
        (conn, channel)
    }

    /// A durable queue bound to the events exchange for `routing_key` (declaring the exchange
    /// as the relay does, so the queue may come first).
    pub async fn bound_queue(&self, queue: &str, routing_key: &str) -> (Connection, Channel) {
        let (conn, channel) = self.channel().await;
        storefront_events::amqp::declare_exchange(&channel).await.unwrap();
        channel
            .queue_declare(queue.into(), QueueDeclareOptions::durable(), FieldTable::default())
            .await
            .unwrap();
        channel
            .queue_bind(
                queue.into(),
                storefront_events::amqp::EXCHANGE.into(),
                routing_key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        (conn, channel)
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ =
            std::process::Command::new("rabbitmqctl").args(["delete_vhost", &self.name]).output();
    }
}

/// Takes (and acknowledges) messages from `queue` until `count` have come or `limit` passes.
pub async fn take(
    channel: &Channel,
    queue: &str,
    count: usize,
    limit: Duration,
) -> Vec<lapin::message::BasicGetMessage> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut got = Vec::new();
    while got.len() < count && tokio::time::Instant::now() < deadline {
        match channel.basic_get(queue.into(), BasicGetOptions::default()).await.unwrap() {
            Some(message) => {
                message.delivery.ack(BasicAckOptions::default()).await.unwrap();
                got.push(message);
            }
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    got
}

/// How many messages `queue` holds now.
pub async fn depth(channel: &Channel, queue: &str) -> u32 {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() },
            FieldTable::default(),
        )
        .await
        .unwrap()
        .message_count()
}

/// Publishes `event` to the events exchange as the relay does (persistent, confirmed).
pub async fn publish(channel: &Channel, event: &storefront_events::CloudEvent) {
    channel.confirm_select(lapin::options::ConfirmSelectOptions::default()).await.unwrap();
    let confirm = channel
        .basic_publish(
            storefront_events::amqp::EXCHANGE.into(),
            event.event_type().as_str().into(),
            lapin::options::BasicPublishOptions::default(),
            &event.to_json().unwrap(),
            lapin::BasicProperties::default()
                .with_delivery_mode(2)
                .with_message_id(event.id.as_str().into()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack(), "the broker took the event");
}
