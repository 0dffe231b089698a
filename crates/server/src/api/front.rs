//! The Tencent Cloud API 3.0 front door: reads a request, authenticates it,
//! decodes its parameters and dispatches it, and always answers HTTP 200 with
//! `Content-Type: application/json` and a `RequestId` — never a 500, never a
//! hang (every request runs in its own task under a deadline, so even a bug
//! that panics becomes an `InternalError` answer).
//!
//! Authentication follows the official SDKs exactly (see `api_types::sign`):
//! TC3-HMAC-SHA256 with the service taken from the credential scope and the
//! canonical headers rebuilt from the raw values received (tccli sends
//! `Host: http://127.0.0.1:8080`), or the legacy v1 HmacSHA1/HmacSHA256 form
//! signature. The timestamp must be within 300 seconds of the server clock.

use crate::api::dispatch;
use crate::App;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use gpucloud_api_types::params::unflatten;
use gpucloud_api_types::sign::{
    self, sha256_hex, signatures_equal, tc3_signature, CanonicalInput, Tc3Authorization, V1Method,
};
use gpucloud_api_types::{envelope_error, envelope_ok, Language};
use gpucloud_core::CloudError;
use gpucloud_store::TenantScope;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest request body accepted.
pub const MAX_BODY: usize = 1024 * 1024;
/// Signature time window.
pub const MAX_SKEW_SECS: i64 = 300;
/// Longest a request may take before it is answered with an error.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(60);

/// Who is calling and how to answer.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The tenant.
    pub scope: TenantScope,
    /// `RequestId`.
    pub request_id: String,
    /// Message language.
    pub lang: Language,
    /// `X-TC-Region` (or v1 `Region`).
    pub region: Option<String>,
    /// The `Host` header as received (URLs handed out point there).
    pub host: Option<String>,
    /// The caller reached the API over TLS (a proxy said
    /// `X-Forwarded-Proto: https`); the front itself speaks plain HTTP.
    pub tls: bool,
}

fn origin(headers: &HeaderMap) -> (Option<String>, bool) {
    (
        header(headers, "host").map(String::from),
        header(headers, "x-forwarded-proto").is_some_and(|p| p.eq_ignore_ascii_case("https")),
    )
}

/// A request after authentication, ready for dispatch.
#[derive(Debug, Clone)]
pub struct Call {
    /// Service (`cvm`).
    pub service: String,
    /// API version.
    pub version: String,
    /// Action.
    pub action: String,
    /// Parameters as JSON.
    pub params: Value,
}

/// The response every API request gets.
fn json_response(v: &Value) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec());
    (
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The axum handler for `/`.
pub async fn handle(
    axum::extract::State(app): axum::extract::State<Arc<App>>,
    req: Request<Body>,
) -> Response {
    let started = Instant::now();
    let request_id = uuid::Uuid::new_v4().to_string();
    let (parts, body) = req.into_parts();
    let mut lang = Language::parse(header(&parts.headers, "x-tc-language"));
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            let e = CloudError::RequestSizeLimitExceeded { limit: MAX_BODY };
            return json_response(&envelope_error(e.code(), &e.message(lang), &request_id));
        }
    };
    if parts.uri.path() != "/" {
        let e = CloudError::InvalidRequest(format!(
            "{} is not an API path; send API requests to / (POST with JSON, or GET with the parameters in the query)",
            parts.uri.path()
        ));
        return json_response(&envelope_error(e.code(), &e.message(lang), &request_id));
    }
    let query = parts.uri.query().unwrap_or("").to_string();
    let app2 = app.clone();
    let rid = request_id.clone();
    let method = parts.method.clone();
    let headers = parts.headers.clone();
    // Run in a task: a panic becomes an InternalError answer, not a dropped connection.
    let task = tokio::spawn(async move {
        let (ctx, call) = authenticate(&app2, &method, &query, &headers, &body, &rid).await?;
        let out = tokio::time::timeout(REQUEST_DEADLINE, dispatch::dispatch(&app2, &ctx, &call))
            .await
            .map_err(|_| {
                tracing::error!(request_id = %rid, action = %call.action, "request deadline exceeded");
                failure(CloudError::Internal, Some(ctx.lang), Some(call.clone()), Some(ctx.scope))
            })?;
        match out {
            Ok(v) => Ok((v, ctx, call)),
            Err(e) => Err(failure(e, Some(ctx.lang), Some(call), Some(ctx.scope))),
        }
    });
    let result = match task.await {
        Ok(r) => r,
        Err(join) => {
            tracing::error!(request_id = %request_id, error = %join, "request handler panicked");
            Err(fail(CloudError::Internal))
        }
    };
    let elapsed = started.elapsed();
    match result {
        Ok((v, ctx, call)) => {
            app.metrics.observe(&call.action, "Success", elapsed);
            tracing::info!(request_id = %request_id, app_id = ctx.scope.app_id(), service = %call.service, action = %call.action, ms = elapsed.as_millis() as u64, "ok");
            json_response(&envelope_ok(v, &request_id))
        }
        Err(f) => {
            let Failure {
                err: e,
                lang: l,
                call,
                scope,
            } = *f;
            if let Some(l) = l {
                lang = l;
            }
            let action = call.as_ref().map_or("-", |c| c.action.as_str());
            // CVM spells its internal error `InternalServerError`; the other
            // services use the common `InternalError`.
            let code = match (e.code(), call.as_ref().map(|c| c.service.as_str())) {
                ("InternalError", Some("cvm")) => "InternalServerError",
                (c, _) => c,
            };
            app.metrics.observe(action, code, elapsed);
            tracing::info!(request_id = %request_id, app_id = scope.map(|s| s.app_id()), action, code, ms = elapsed.as_millis() as u64, "error");
            json_response(&envelope_error(code, &e.message(lang), &request_id))
        }
    }
}

/// A request that failed, with what is known about it for the answer and the log.
struct Failure {
    err: CloudError,
    lang: Option<Language>,
    call: Option<Call>,
    scope: Option<TenantScope>,
}

type AuthFail = Box<Failure>;

fn failure(
    err: CloudError,
    lang: Option<Language>,
    call: Option<Call>,
    scope: Option<TenantScope>,
) -> AuthFail {
    Box::new(Failure {
        err,
        lang,
        call,
        scope,
    })
}

fn fail(e: CloudError) -> AuthFail {
    failure(e, None, None, None)
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

fn check_skew(ts: i64) -> Result<(), CloudError> {
    let now = now_secs();
    if (now - ts).abs() > MAX_SKEW_SECS {
        return Err(CloudError::SignatureExpire {
            timestamp: ts,
            server_time: now,
        });
    }
    Ok(())
}

async fn authenticate(
    app: &App,
    method: &Method,
    query: &str,
    headers: &HeaderMap,
    body: &Bytes,
    request_id: &str,
) -> Result<(Ctx, Call), AuthFail> {
    if method != Method::POST && method != Method::GET {
        return Err(fail(CloudError::InvalidRequest(format!(
            "method {method} is not supported; use POST or GET"
        ))));
    }
    match header(headers, "authorization") {
        Some(auth) => tc3(app, method, query, headers, body, request_id, auth).await,
        None => v1(app, method, query, headers, body, request_id).await,
    }
}

#[allow(clippy::too_many_arguments)]
async fn tc3(
    app: &App,
    method: &Method,
    query: &str,
    headers: &HeaderMap,
    body: &Bytes,
    request_id: &str,
    auth: &str,
) -> Result<(Ctx, Call), AuthFail> {
    let lang = Language::parse(header(headers, "x-tc-language"));
    let with_lang = |e: CloudError| failure(e, Some(lang), None, None);
    let parsed = Tc3Authorization::parse(auth)
        .map_err(|e| with_lang(CloudError::InvalidAuthorization(e.to_string())))?;
    let ts_raw = header(headers, "x-tc-timestamp")
        .ok_or_else(|| with_lang(CloudError::MissingParameter("X-TC-Timestamp".into())))?;
    let ts: i64 = ts_raw.trim().parse().map_err(|_| {
        with_lang(CloudError::InvalidParameter {
            name: "X-TC-Timestamp".into(),
            detail: "it must be Unix seconds".into(),
        })
    })?;
    check_skew(ts).map_err(with_lang)?;
    let key = app
        .keys
        .lookup(&app.store, &parsed.secret_id)
        .await
        .map_err(|e| {
            tracing::error!(error = ?e, "key lookup failed");
            with_lang(CloudError::Internal)
        })?
        .filter(|k| k.active)
        .ok_or_else(|| with_lang(CloudError::SecretIdNotFound(parsed.secret_id.clone())))?;
    let mut canonical_headers = Vec::with_capacity(parsed.signed_headers.len());
    for name in &parsed.signed_headers {
        let v = header(headers, name).ok_or_else(|| {
            with_lang(CloudError::InvalidAuthorization(format!(
                "the signed header `{name}` is not in the request"
            )))
        })?;
        canonical_headers.push((name.clone(), v.to_string()));
    }
    let payload_hash = if header(headers, "x-tc-content-sha256") == Some("UNSIGNED-PAYLOAD") {
        sha256_hex(b"UNSIGNED-PAYLOAD")
    } else {
        sha256_hex(body)
    };
    let input = CanonicalInput {
        method: method.as_str(),
        query: if method == Method::GET { query } else { "" },
        headers: canonical_headers,
        payload_hash,
    };
    let expected = tc3_signature(
        &key.secret_key,
        &parsed.date,
        &parsed.service,
        ts,
        &input.canonical_request(),
    );
    if !signatures_equal(&expected, &parsed.signature) || parsed.date != sign::utc_date(ts) {
        return Err(with_lang(CloudError::SignatureFailure));
    }
    if header(headers, "x-tc-token").is_some_and(|t| !t.is_empty()) {
        return Err(failure(
            CloudError::TokenFailure,
            Some(lang),
            None,
            Some(key.scope),
        ));
    }
    let action = header(headers, "x-tc-action")
        .ok_or_else(|| with_lang(CloudError::MissingParameter("X-TC-Action".into())))?
        .to_string();
    let version = header(headers, "x-tc-version")
        .ok_or_else(|| with_lang(CloudError::MissingParameter("X-TC-Version".into())))?
        .to_string();
    let params = if method == Method::GET {
        parse_form(query, &[]).map_err(with_lang)?
    } else {
        let ct = header(headers, "content-type").unwrap_or("");
        let mime = ct.split(';').next().unwrap_or("").trim();
        if !mime.eq_ignore_ascii_case("application/json") {
            return Err(with_lang(CloudError::InvalidRequest(format!(
                "Content-Type `{ct}` is not supported for POST; send application/json"
            ))));
        }
        parse_json(body).map_err(with_lang)?
    };
    let ctx = Ctx {
        scope: key.scope,
        request_id: request_id.to_string(),
        lang,
        region: header(headers, "x-tc-region")
            .filter(|r| !r.is_empty())
            .map(String::from),
        host: origin(headers).0,
        tls: origin(headers).1,
    };
    Ok((
        ctx,
        Call {
            service: parsed.service,
            version,
            action,
            params,
        },
    ))
}

const V1_COMMON: &[&str] = &[
    "Action",
    "Version",
    "Region",
    "Timestamp",
    "Nonce",
    "SecretId",
    "Signature",
    "SignatureMethod",
    "Language",
    "RequestClient",
    "Token",
];

async fn v1(
    app: &App,
    method: &Method,
    query: &str,
    headers: &HeaderMap,
    body: &Bytes,
    request_id: &str,
) -> Result<(Ctx, Call), AuthFail> {
    let raw = if method == Method::GET {
        query.as_bytes().to_vec()
    } else {
        body.to_vec()
    };
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(&raw).into_owned().collect();
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let lang = Language::parse(get("Language"));
    let with_lang = |e: CloudError| failure(e, Some(lang), None, None);
    if get("Signature").is_none() && get("SecretId").is_none() {
        return Err(with_lang(CloudError::InvalidAuthorization(
            "the request carries neither an Authorization header nor a v1 Signature".into(),
        )));
    }
    let required =
        |k: &'static str| get(k).ok_or_else(|| with_lang(CloudError::MissingParameter(k.into())));
    let action = required("Action")?.to_string();
    let version = required("Version")?.to_string();
    let secret_id = required("SecretId")?.to_string();
    let signature = required("Signature")?.to_string();
    let ts: i64 = required("Timestamp")?.parse().map_err(|_| {
        with_lang(CloudError::InvalidParameter {
            name: "Timestamp".into(),
            detail: "it must be Unix seconds".into(),
        })
    })?;
    required("Nonce")?;
    let sig_method = V1Method::parse(get("SignatureMethod")).ok_or_else(|| {
        with_lang(CloudError::InvalidParameterValue {
            name: "SignatureMethod".into(),
            detail: "use HmacSHA1 or HmacSHA256".into(),
        })
    })?;
    check_skew(ts).map_err(with_lang)?;
    let key = app
        .keys
        .lookup(&app.store, &secret_id)
        .await
        .map_err(|e| {
            tracing::error!(error = ?e, "key lookup failed");
            with_lang(CloudError::Internal)
        })?
        .filter(|k| k.active)
        .ok_or_else(|| with_lang(CloudError::SecretIdNotFound(secret_id.clone())))?;
    let host = header(headers, "host").unwrap_or("");
    let signed: Vec<(String, String)> = pairs
        .iter()
        .filter(|(k, _)| k != "Signature")
        .cloned()
        .collect();
    let sts = sign::v1_string_to_sign(method.as_str(), host, &signed);
    let expected = sign::v1_signature(sig_method, &key.secret_key, &sts);
    if !signatures_equal(&expected, &signature) {
        return Err(with_lang(CloudError::SignatureFailure));
    }
    if get("Token").is_some_and(|t| !t.is_empty()) {
        return Err(failure(
            CloudError::TokenFailure,
            Some(lang),
            None,
            Some(key.scope),
        ));
    }
    let service = host
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .split('.')
        .next()
        .filter(|s| dispatch::is_service(s))
        .map(String::from)
        .or_else(|| dispatch::service_of(&version, &action).map(String::from))
        .unwrap_or_else(|| "cvm".to_string());
    let params = parse_form_pairs(&pairs, V1_COMMON).map_err(with_lang)?;
    let ctx = Ctx {
        scope: key.scope,
        request_id: request_id.to_string(),
        lang,
        region: get("Region").filter(|r| !r.is_empty()).map(String::from),
        host: origin(headers).0,
        tls: origin(headers).1,
    };
    Ok((
        ctx,
        Call {
            service,
            version,
            action,
            params,
        },
    ))
}

/// Parses a JSON body (empty = `{}`); it must be an object.
pub fn parse_json(body: &[u8]) -> Result<Value, CloudError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Default::default()));
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| CloudError::InvalidRequest(format!("the body is not valid JSON ({e})")))?;
    if !v.is_object() {
        return Err(CloudError::InvalidRequest(
            "the body must be a JSON object of parameters".into(),
        ));
    }
    Ok(v)
}

/// Parses a flattened form (`Filters.0.Name=zone`) into a parameter tree.
pub fn parse_form(query: &str, skip: &[&str]) -> Result<Value, CloudError> {
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    parse_form_pairs(&pairs, skip)
}

fn parse_form_pairs(pairs: &[(String, String)], skip: &[&str]) -> Result<Value, CloudError> {
    let kept: Vec<(String, String)> = pairs
        .iter()
        .filter(|(k, _)| !skip.contains(&k.as_str()))
        .cloned()
        .collect();
    let v = unflatten(&kept).map_err(|e| CloudError::InvalidParameter {
        name: "query".into(),
        detail: e.to_string(),
    })?;
    // Parameters have names: a query of bare indexes (`0=…`) would be a list,
    // which the decoder would otherwise fill into fields by position.
    if !v.is_object() {
        return Err(CloudError::InvalidParameter {
            name: "query".into(),
            detail: "parameters have names (InstanceIds.0=…), not bare indexes".into(),
        });
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_of_bare_indexes_is_refused() {
        assert!(matches!(
            parse_form("0=cmd-abcdefgh", &[]),
            Err(CloudError::InvalidParameter { .. })
        ));
        assert_eq!(parse_form("", &[]).unwrap(), serde_json::json!({}));
    }

    #[test]
    fn bodies() {
        assert_eq!(parse_json(b"").unwrap(), serde_json::json!({}));
        assert_eq!(
            parse_json(b" {\"A\": 1} ").unwrap(),
            serde_json::json!({"A": 1})
        );
        assert!(matches!(
            parse_json(b"[1]"),
            Err(CloudError::InvalidRequest(_))
        ));
        assert!(matches!(
            parse_json(b"{"),
            Err(CloudError::InvalidRequest(_))
        ));
        assert_eq!(
            parse_form(
                "Filters.0.Name=zone&Filters.0.Values.0=ap-guangzhou-3&Limit=20",
                &[]
            )
            .unwrap(),
            serde_json::json!({"Filters": [{"Name": "zone", "Values": ["ap-guangzhou-3"]}], "Limit": "20"})
        );
    }
}
