//! The Cloud Pub/Sub fan-out (`SCHEDULER_QUEUE=pubsub`): the trigger publishes one message
//! per due occurrence (its id, with the org as an attribute) and every pipeline-service
//! instance pulls from one shared subscription. A message is acknowledged only once its
//! occurrence was admitted or refused for good; a redelivery finds the occurrence already
//! linked to its run and starts nothing. `PUBSUB_EMULATOR_HOST` points the client at the
//! emulator, as in every Google client library.

use std::{collections::HashMap, time::Duration};

use cloudact_core::settings::SchedulerSettings;
use gcloud_gax::conn::Environment;
use gcloud_googleapis::pubsub::v1::PubsubMessage;
use gcloud_pubsub::{
    client::{Client, ClientConfig},
    publisher::Publisher,
    subscriber::ReceivedMessage,
    subscription::{Subscription, SubscriptionConfig},
};

/// Pub/Sub failures (connection, topic or subscription set-up, publish, pull).
#[derive(Debug, thiserror::Error)]
#[error("Pub/Sub: {0}")]
pub struct PubSubError(pub String);

fn err(context: &str, e: impl std::fmt::Display) -> PubSubError {
    PubSubError(format!("{context}: {e}"))
}

/// A connected topic + subscription pair.
pub struct PubSubQueue {
    publisher: Publisher,
    subscription: Subscription,
    pub topic: String,
}

/// Seconds a delivery may stay unacknowledged before Pub/Sub redelivers it.
const ACK_DEADLINE_SECONDS: i32 = 60;

impl PubSubQueue {
    /// Connects (to the emulator when `PUBSUB_EMULATOR_HOST` is set, else with application
    /// default credentials) and creates the topic and subscription when missing.
    pub async fn connect(settings: &SchedulerSettings) -> Result<Self, PubSubError> {
        let project = settings
            .pubsub_project
            .clone()
            .ok_or_else(|| PubSubError("PUBSUB_PROJECT_ID (or GCP_PROJECT_ID) is not set".into()))?;
        let mut config = ClientConfig {
            project_id: Some(project),
            ..Default::default()
        };
        config = match &settings.pubsub_emulator_host {
            Some(host) => {
                config.environment = Environment::Emulator(host.clone());
                config
            }
            None => config.with_auth().await.map_err(|e| err("credentials", e))?,
        };
        let client = Client::new(config).await.map_err(|e| err("connect", e))?;
        let topic = client.topic(&settings.pubsub_topic);
        if !topic.exists(None).await.map_err(|e| err("topic lookup", e))? {
            if let Err(e) = topic.create(None, None).await {
                if e.code() != gcloud_gax::grpc::Code::AlreadyExists {
                    return Err(err("create topic", e));
                }
            }
        }
        let subscription = client.subscription(&settings.pubsub_subscription);
        if !subscription
            .exists(None)
            .await
            .map_err(|e| err("subscription lookup", e))?
        {
            let cfg = SubscriptionConfig {
                ack_deadline_seconds: ACK_DEADLINE_SECONDS,
                ..Default::default()
            };
            if let Err(e) = subscription.create(topic.fully_qualified_name(), cfg, None).await {
                if e.code() != gcloud_gax::grpc::Code::AlreadyExists {
                    return Err(err("create subscription", e));
                }
            }
        }
        Ok(PubSubQueue {
            publisher: topic.new_publisher(None),
            subscription,
            topic: topic.fully_qualified_name().to_string(),
        })
    }

    /// Publishes one occurrence and waits for the server's message id.
    pub async fn publish(&self, run_id: &str, org_slug: &str) -> Result<String, PubSubError> {
        let message = PubsubMessage {
            data: run_id.as_bytes().to_vec(),
            attributes: HashMap::from([("org_slug".to_string(), org_slug.to_string())]),
            ..Default::default()
        };
        self.publisher
            .publish(message)
            .await
            .get()
            .await
            .map_err(|e| err("publish", e))
    }

    /// Pulls up to `max` deliveries, waiting at most `wait` for the first.
    pub async fn pull(&self, max: i32, wait: Duration) -> Result<Vec<Delivery>, PubSubError> {
        match tokio::time::timeout(wait, self.subscription.pull(max, None)).await {
            Err(_) => Ok(Vec::new()),
            Ok(Err(e)) => Err(err("pull", e)),
            Ok(Ok(messages)) => Ok(messages.into_iter().map(Delivery).collect()),
        }
    }
}

/// One delivered message.
pub struct Delivery(ReceivedMessage);

impl Delivery {
    /// The occurrence id the message carries (`None` for a foreign message).
    pub fn run_id(&self) -> Option<String> {
        let s = std::str::from_utf8(&self.0.message.data).ok()?;
        (!s.is_empty() && s.len() <= 200 && s.chars().all(|c| c.is_ascii_graphic())).then(|| s.to_string())
    }

    pub fn delivery_attempt(&self) -> Option<usize> {
        self.0.delivery_attempt()
    }

    pub async fn ack(&self) -> Result<(), PubSubError> {
        self.0.ack().await.map_err(|e| err("ack", e))
    }

    /// Asks for redelivery now (a transient failure).
    pub async fn nack(&self) -> Result<(), PubSubError> {
        self.0.nack().await.map_err(|e| err("nack", e))
    }
}
