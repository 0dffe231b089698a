//! `gpucloud call`: one API call with the operator's credentials from the
//! data directory — for scripts and hosts without tccli.

use anyhow::{Context, Result};
use std::path::PathBuf;

/// Flags of `call`.
#[derive(clap::Args, Debug)]
pub struct CallArgs {
    /// Service: cvm or tat.
    service: String,
    /// Action, e.g. DescribeInstances.
    action: String,
    /// Parameters as a JSON object.
    #[arg(default_value = "{}")]
    params: String,
    /// The cloud's data directory (its credentials.json is used).
    #[arg(long, env = "GPUCLOUD_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

/// API versions of the services gpucloud serves.
fn version_of(service: &str) -> Option<&'static str> {
    match service {
        "cvm" => Some("2017-03-12"),
        "tat" => Some("2020-10-28"),
        _ => None,
    }
}

/// Runs `call`: prints the response; exits 1 with the error code on an API error.
pub async fn run(a: CallArgs) -> Result<()> {
    let version = version_of(&a.service)
        .with_context(|| format!("unknown service `{}`; use cvm or tat", a.service))?;
    let params: serde_json::Value = serde_json::from_str(&a.params)
        .with_context(|| format!("the parameters are not JSON: {}", a.params))?;
    let dir = a.data_dir.clone().unwrap_or_else(crate::default_data_dir);
    let path = dir.join("credentials.json");
    let creds: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&path)
            .with_context(|| format!("reading {} (start the cloud first)", path.display()))?,
    )?;
    let field = |k: &str| {
        creds[k]
            .as_str()
            .map(String::from)
            .with_context(|| format!("{} has no {k}", path.display()))
    };
    let client = gpucloud_client::Client::new(
        &field("Endpoint")?,
        &field("SecretId")?,
        &field("SecretKey")?,
        &field("Region")?,
    );
    match client.call(&a.service, version, &a.action, &params).await {
        Ok(v) => {
            crate::output::json(&v);
            Ok(())
        }
        Err(e) => anyhow::bail!("{e}"),
    }
}
