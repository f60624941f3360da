//! Access tokens for BigQuery. Production: Application Default Credentials through
//! `yup-oauth2` (re-exported by `gcp-bigquery-client`): the service-account JSON named by
//! `GOOGLE_APPLICATION_CREDENTIALS`, else the metadata server on Cloud Run. Tests against
//! the emulator: a fixed token (the emulator accepts any bearer token).

use std::sync::Arc;

use async_trait::async_trait;
use gcp_bigquery_client::{auth::Authenticator, error::BQError, yup_oauth2};

use crate::warehouse::WarehouseError;

const SCOPE: &str = "https://www.googleapis.com/auth/bigquery";

/// A constant bearer token (emulators only).
#[derive(Clone)]
pub struct FixedToken(pub String);

#[async_trait]
impl Authenticator for FixedToken {
    async fn access_token(&self) -> Result<String, BQError> {
        Ok(self.0.clone())
    }
}

/// Google credentials from the environment (ADC).
#[derive(Clone)]
pub struct GoogleToken {
    auth: Arc<yup_oauth2::authenticator::DefaultAuthenticator>,
}

impl GoogleToken {
    pub async fn from_environment() -> Result<Self, WarehouseError> {
        use yup_oauth2::authenticator::ApplicationDefaultCredentialsTypes as Adc;
        let opts = yup_oauth2::ApplicationDefaultCredentialsFlowOpts::default();
        let built = match yup_oauth2::ApplicationDefaultCredentialsAuthenticator::builder(opts).await {
            Adc::ServiceAccount(b) => b.build().await,
            Adc::InstanceMetadata(b) => b.build().await,
        };
        let auth = built.map_err(|e| WarehouseError::Backend(format!("Google credentials: {e}")))?;
        Ok(GoogleToken { auth: Arc::new(auth) })
    }
}

#[async_trait]
impl Authenticator for GoogleToken {
    async fn access_token(&self) -> Result<String, BQError> {
        let token = self.auth.token(&[SCOPE]).await?;
        token.token().map(str::to_string).ok_or(BQError::NoToken)
    }
}
