//! A client of gpucloud's Tencent Cloud API 3.0 surface. It signs requests
//! with TC3-HMAC-SHA256 exactly as `tencentcloud-sdk-python` does (same
//! canonical request, same headers), so it exercises the server the way the
//! official clients do. Used by the CLI, the benchmarks and the tests.

use gpucloud_api_types::sign::{sign_tc3_post, Tc3Post};
use serde_json::Value;
use std::time::Duration;

/// An API failure.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a Tencent error.
    #[error("{code}: {message} (RequestId {request_id})")]
    Api {
        /// Error code.
        code: String,
        /// Message.
        message: String,
        /// RequestId.
        request_id: String,
    },
    /// Transport failure or a non-API answer.
    #[error("{0}")]
    Transport(String),
}

impl ClientError {
    /// The Tencent error code, if the server answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            ClientError::Transport(_) => None,
        }
    }
}

/// A signing client.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    endpoint: String,
    host: String,
    secret_id: String,
    secret_key: String,
    region: String,
    language: Option<String>,
}

impl Client {
    /// A client for `endpoint` (`http://127.0.0.1:8080`).
    pub fn new(endpoint: &str, secret_id: &str, secret_key: &str, region: &str) -> Self {
        let host = endpoint
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .to_string();
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .pool_max_idle_per_host(64)
                .build()
                .expect("an HTTP client builds"),
            endpoint: endpoint.trim_end_matches('/').to_string(),
            host,
            secret_id: secret_id.to_string(),
            secret_key: secret_key.to_string(),
            region: region.to_string(),
            language: None,
        }
    }

    /// Asks for messages in `lang` (`en-US`, `zh-CN`).
    pub fn with_language(mut self, lang: &str) -> Self {
        self.language = Some(lang.to_string());
        self
    }

    /// Calls `service`/`version`/`action` with JSON parameters; returns the
    /// `Response` object (without `RequestId`) or the API error.
    pub async fn call(
        &self,
        service: &str,
        version: &str,
        action: &str,
        params: &Value,
    ) -> Result<Value, ClientError> {
        let body = serde_json::to_vec(params).map_err(|e| ClientError::Transport(e.to_string()))?;
        let signed = sign_tc3_post(
            &self.secret_id,
            &self.secret_key,
            &Tc3Post {
                service,
                host: &self.host,
                action,
                version,
                region: Some(&self.region),
                language: self.language.as_deref(),
                timestamp: chrono::Utc::now().timestamp(),
                body: &body,
            },
        );
        let mut req = self.http.post(format!("{}/", self.endpoint)).body(body);
        for (k, v) in signed.headers {
            if k != "Host" {
                req = req.header(k, v);
            }
        }
        let resp = req
            .send()
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        let status = resp.status();
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let text = resp
            .text()
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        if !status.is_success() || ct != "application/json" {
            return Err(ClientError::Transport(format!(
                "HTTP {status} ({ct}): {text}"
            )));
        }
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| ClientError::Transport(format!("{e}: {text}")))?;
        let mut r = v
            .get("Response")
            .cloned()
            .ok_or_else(|| ClientError::Transport(format!("no Response in {text}")))?;
        let request_id = r["RequestId"].as_str().unwrap_or("").to_string();
        if let Some(err) = r.get("Error") {
            return Err(ClientError::Api {
                code: err["Code"].as_str().unwrap_or("").to_string(),
                message: err["Message"].as_str().unwrap_or("").to_string(),
                request_id,
            });
        }
        if let Some(o) = r.as_object_mut() {
            o.remove("RequestId");
        }
        Ok(r)
    }

    /// Calls a CVM action.
    pub async fn cvm(&self, action: &str, params: Value) -> Result<Value, ClientError> {
        self.call("cvm", "2017-03-12", action, &params).await
    }
}
