//! Wire types of the Tencent Cloud API 3.0 surface that gpucloud serves.
//!
//! This crate does no I/O. It holds:
//!
//! * [`sign`] — TC3-HMAC-SHA256 and legacy v1 signing, shared by the server's
//!   verifier and our own clients;
//! * [`params`] — GET-form flattening and lenient scalar decoding;
//! * [`cvm`] — request/response structures of CVM 2017-03-12;
//! * [`ids`] — resource ID formats (`ins-xxxxxxxx`, …);
//! * [`codes`] — the Tencent error codes gpucloud answers with;
//! * [`redact`] — `Debug` that never prints a secret;
//! * the response envelope ([`envelope_ok`], [`envelope_error`]).

pub mod codes;
pub mod cvm;
pub mod ids;
pub mod params;
pub mod redact;
pub mod sign;
pub mod tat;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// A `Describe*` filter: AND across filters, OR across values.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Filter {
    /// Filter name, e.g. `zone`.
    #[serde(default, deserialize_with = "params::lenient::opt_string")]
    pub name: Option<String>,
    /// Accepted values.
    #[serde(default)]
    pub values: Option<Vec<String>>,
}

/// Language of error messages (`X-TC-Language`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Language {
    /// `zh-CN`, the SDK default.
    #[default]
    ZhCn,
    /// `en-US`.
    EnUs,
}

impl Language {
    /// Parses `X-TC-Language`; anything unknown falls back to `zh-CN` like the SDK default.
    pub fn parse(s: Option<&str>) -> Self {
        match s.map(str::trim) {
            Some(l) if l.eq_ignore_ascii_case("en-US") || l.eq_ignore_ascii_case("en") => {
                Self::EnUs
            }
            _ => Self::ZhCn,
        }
    }
}

/// `{"Response": {<fields>, "RequestId": id}}`.
pub fn envelope_ok(mut fields: Value, request_id: &str) -> Value {
    if !fields.is_object() {
        fields = json!({});
    }
    fields["RequestId"] = Value::String(request_id.to_string());
    json!({ "Response": fields })
}

/// `{"Response": {"Error": {"Code", "Message"}, "RequestId": id}}`.
pub fn envelope_error(code: &str, message: &str, request_id: &str) -> Value {
    json!({
        "Response": {
            "Error": { "Code": code, "Message": message },
            "RequestId": request_id,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes() {
        let ok = envelope_ok(json!({"TotalCount": 0}), "r1");
        assert_eq!(
            ok,
            json!({"Response": {"TotalCount": 0, "RequestId": "r1"}})
        );
        let err = envelope_error("InvalidAction", "no", "r2");
        assert_eq!(
            err["Response"]["Error"]["Code"],
            Value::String("InvalidAction".into())
        );
        assert_eq!(err["Response"]["RequestId"], Value::String("r2".into()));
    }

    #[test]
    fn languages() {
        assert_eq!(Language::parse(Some("en-US")), Language::EnUs);
        assert_eq!(Language::parse(Some("zh-CN")), Language::ZhCn);
        assert_eq!(Language::parse(None), Language::ZhCn);
    }
}
