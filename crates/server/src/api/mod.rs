//! The HTTP surface: the Tencent-compatible API on `/`, plus `/healthz`,
//! `/metrics` and the serial-console WebSockets (`/console/v1/<token>`, see
//! [`crate::console`]).

pub mod cvm;
pub mod dispatch;
pub mod front;
pub mod params;
pub mod tat;

use crate::App;
use axum::routing::get;
use axum::Router;
use gpucloud_core::CloudError;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::sync::Arc;

/// Decodes parameters into a request type; errors name the parameter.
pub fn decode<T: DeserializeOwned>(params: Value) -> Result<T, CloudError> {
    serde_path_to_error::deserialize::<_, T>(params).map_err(|e| {
        let path = e.path().to_string();
        let msg = e.inner().to_string();
        decode_error(&path, &msg)
    })
}

fn decode_error(path: &str, msg: &str) -> CloudError {
    let path = if path == "." { "" } else { path };
    let quoted = msg.split('`').nth(1).unwrap_or("").to_string();
    let join = |name: &str| {
        if path.is_empty() || path == name || path.ends_with(&format!(".{name}")) {
            if path.is_empty() {
                name.to_string()
            } else {
                path.to_string()
            }
        } else {
            format!("{path}.{name}")
        }
    };
    if msg.starts_with("unknown field") {
        CloudError::UnknownParameter(join(&quoted))
    } else if msg.starts_with("missing field") {
        CloudError::MissingParameter(join(&quoted))
    } else {
        let detail = msg.split(" at line").next().unwrap_or(msg).to_string();
        CloudError::InvalidParameter {
            name: if path.is_empty() {
                "(parameters)".to_string()
            } else {
                path.to_string()
            },
            detail,
        }
    }
}

/// The router of the API server.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        // Every method and every other path get a Tencent-style answer too
        // (HTTP 200, JSON, RequestId), not a bare 404/405.
        .route("/", axum::routing::any(front::handle))
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            &format!("{}{{token}}", crate::console::PATH),
            get(crate::console::ws_handler),
        )
        .route(
            "/metrics",
            get(
                |axum::extract::State(app): axum::extract::State<Arc<App>>| async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4",
                        )],
                        app.metrics.render(),
                    )
                },
            ),
        )
        .fallback(front::handle)
        .with_state(app)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpucloud_api_types::cvm::DescribeInstancesRequest;
    use serde_json::json;

    #[test]
    fn decode_errors_name_the_parameter() {
        let e = decode::<DescribeInstancesRequest>(json!({"Limitt": 1})).unwrap_err();
        assert_eq!(e, CloudError::UnknownParameter("Limitt".into()));
        let e =
            decode::<DescribeInstancesRequest>(json!({"Filters": [{"Nmae": "zone"}]})).unwrap_err();
        assert_eq!(e, CloudError::UnknownParameter("Filters[0].Nmae".into()));
        let e = decode::<DescribeInstancesRequest>(json!({"Limit": "ten"})).unwrap_err();
        assert!(
            matches!(e, CloudError::InvalidParameter { ref name, .. } if name == "Limit"),
            "{e:?}"
        );
        let e = decode::<DescribeInstancesRequest>(json!({"InstanceIds": "ins-a"})).unwrap_err();
        assert!(
            matches!(e, CloudError::InvalidParameter { ref name, .. } if name == "InstanceIds"),
            "{e:?}"
        );
        let ok = decode::<DescribeInstancesRequest>(json!({"Limit": "10", "Offset": 0})).unwrap();
        assert_eq!(ok.limit, Some(10));
    }
}
