//! `notify_systems.email_notification`: a plain-text email through the SMTP relay in the
//! settings (`SMTP_HOST`, `SMTP_PORT`, `SMTP_TLS` starttls | tls | none, `SMTP_USERNAME`,
//! `SMTP_PASSWORD`, `SMTP_FROM`), with the run's facts under the message. Transient SMTP
//! errors are retried with backoff.

use std::time::Duration;

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use cloudact_core::settings::SmtpTls;
use lettre::{
    message::{header::ContentType, Mailbox},
    transport::smtp::authentication::Credentials,
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
};
use secrecy::ExposeSecret;
use serde::Deserialize;

use super::{run_facts, OneOrMany};
use crate::{
    context::StepContext,
    registry::{Processor, ProcessorDef, ProcessorError, StepOutput},
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// Recipients: a list, or one string of comma-separated addresses.
    pub to: OneOrMany,
    pub subject: String,
    #[serde(default)]
    pub message: String,
}

pub struct EmailNotification(EmailConfig);

impl ProcessorDef for EmailNotification {
    const PS_TYPE: &'static str = "notify_systems.email_notification";
    type Config = EmailConfig;

    fn build(config: EmailConfig) -> Result<Self, String> {
        let to = config.to.items();
        if to.is_empty() || to.len() > 50 {
            return Err("to must list 1 to 50 addresses".into());
        }
        for a in &to {
            if !a.contains('{') {
                a.parse::<Mailbox>().map_err(|e| format!("recipient {a:?}: {e}"))?;
            }
        }
        if config.subject.trim().is_empty() || config.subject.len() > 300 {
            return Err("subject must be 1 to 300 characters".into());
        }
        Ok(EmailNotification(config))
    }
}

#[async_trait]
impl Processor for EmailNotification {
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, ProcessorError> {
        let c = &self.0;
        let smtp =
            ctx.services.settings.smtp.clone().ok_or_else(|| {
                ProcessorError::Invalid("email notifications need SMTP_HOST (and friends) set".into())
            })?;
        let from: Mailbox = smtp
            .from
            .parse()
            .map_err(|e| ProcessorError::Invalid(format!("SMTP_FROM {:?}: {e}", smtp.from)))?;
        let mut builder = Message::builder().from(from).subject(c.subject.clone());
        let recipients = c.to.items();
        for a in &recipients {
            let mailbox: Mailbox = a
                .parse()
                .map_err(|e| ProcessorError::Invalid(format!("recipient {a:?}: {e}")))?;
            builder = builder.to(mailbox);
        }
        let mut body = c.message.clone();
        body.push_str("\n\n");
        for (k, v) in run_facts(ctx) {
            body.push_str(&format!("{k}: {v}\n"));
        }
        if let Some(e) = ctx.variable("run_error").filter(|e| !e.is_empty()) {
            body.push_str(&format!("Error: {e}\n"));
        }
        let message = builder
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| ProcessorError::Invalid(format!("email: {e}")))?;
        let transport = match smtp.tls {
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host),
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host),
            SmtpTls::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host)),
        }
        .map_err(|e| ProcessorError::Invalid(format!("SMTP_HOST {:?}: {e}", smtp.host)))?;
        let mut transport = transport.port(smtp.port).timeout(Some(Duration::from_secs(30)));
        if let (Some(user), Some(pass)) = (&smtp.username, &smtp.password) {
            transport = transport.credentials(Credentials::new(user.clone(), pass.expose_secret().to_string()));
        }
        let transport = transport.build();
        let send = || async { transport.send(message.clone()).await };
        let response = send
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(500))
                    .with_max_times(2)
                    .with_jitter(),
            )
            .when(|e: &lettre::transport::smtp::Error| !e.is_permanent())
            .await
            .map_err(|e| ProcessorError::Failed(format!("SMTP {}:{}: {e}", smtp.host, smtp.port)))?;
        Ok(StepOutput {
            rows_processed: 0,
            output: serde_json::json!({"sent_to": recipients.len(), "smtp_code": response.code().to_string()}),
        })
    }
}
