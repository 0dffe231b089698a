//! The wire protocol: signatures, envelopes and the errors bad requests get.

mod common;

use common::TestCloud;
use gpucloud_api_types::sign::{self, sha256_hex, tc3_signature, CanonicalInput};
use serde_json::{json, Value};

struct Raw {
    http: reqwest::Client,
    endpoint: String,
    host: String,
    sid: String,
    sk: String,
}

impl Raw {
    async fn new(cloud: &TestCloud) -> Self {
        let c = cloud.app.store.tenant_create("raw", 100).await.unwrap();
        Self {
            http: reqwest::Client::new(),
            endpoint: cloud.endpoint.clone(),
            host: cloud.addr.to_string(),
            sid: c.secret_id,
            sk: c.secret_key,
        }
    }

    /// A TC3 POST with full control over each part.
    #[allow(clippy::too_many_arguments)]
    async fn post(
        &self,
        host_header: &str,
        action: &str,
        version: &str,
        service: &str,
        body: &[u8],
        ts: i64,
        key: &str,
        extra: &[(&str, &str)],
    ) -> (u16, String, Value) {
        let input = CanonicalInput {
            method: "POST",
            query: "",
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("host".into(), host_header.into()),
            ],
            payload_hash: sha256_hex(body),
        };
        let date = sign::utc_date(ts);
        let sig = tc3_signature(key, &date, service, ts, &input.canonical_request());
        let auth = format!(
            "TC3-HMAC-SHA256 Credential={}/{date}/{service}/tc3_request, SignedHeaders=content-type;host, Signature={sig}",
            self.sid
        );
        let mut req = self
            .http
            .post(format!("{}/", self.endpoint))
            .header("Host", host_header)
            .header("Content-Type", "application/json")
            .header("Authorization", auth)
            .header("X-TC-Action", action)
            .header("X-TC-Version", version)
            .header("X-TC-Timestamp", ts.to_string())
            .header("X-TC-Region", "ap-guangzhou")
            .body(body.to_vec());
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        let v: Value = r.json().await.unwrap();
        (status, ct, v)
    }

    async fn ok_post(&self, action: &str, body: &[u8], extra: &[(&str, &str)]) -> Value {
        let now = chrono::Utc::now().timestamp();
        let (s, ct, v) = self
            .post(
                &self.host,
                action,
                "2017-03-12",
                "cvm",
                body,
                now,
                &self.sk.clone(),
                extra,
            )
            .await;
        assert_eq!((s, ct.as_str()), (200, "application/json"));
        assert!(
            v["Response"]["RequestId"]
                .as_str()
                .is_some_and(|r| r.len() == 36),
            "{v}"
        );
        v["Response"].clone()
    }
}

fn err_code(v: &Value) -> &str {
    v["Error"]["Code"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_and_envelopes() {
    let cloud = TestCloud::start("1*H100x8").await;
    let raw = Raw::new(&cloud).await;
    let now = chrono::Utc::now().timestamp();
    let sk = raw.sk.clone();

    // tccli sends the scheme in Host; it is part of what is signed.
    let (s, ct, v) = raw
        .post(
            &format!("http://{}", raw.host),
            "DescribeZones",
            "2017-03-12",
            "cvm",
            b"{}",
            now,
            &sk,
            &[],
        )
        .await;
    assert_eq!((s, ct.as_str()), (200, "application/json"));
    assert_eq!(v["Response"]["TotalCount"], 1, "{v}");

    // Wrong key.
    let (s, ct, v) = raw
        .post(
            &raw.host,
            "DescribeZones",
            "2017-03-12",
            "cvm",
            b"{}",
            now,
            "wrong-key",
            &[],
        )
        .await;
    assert_eq!((s, ct.as_str()), (200, "application/json"));
    assert_eq!(err_code(&v["Response"]), "AuthFailure.SignatureFailure");
    assert!(v["Response"]["RequestId"].is_string());

    // Expired and future timestamps.
    for ts in [now - 301, now + 400] {
        let (_, _, v) = raw
            .post(
                &raw.host,
                "DescribeZones",
                "2017-03-12",
                "cvm",
                b"{}",
                ts,
                &sk,
                &[],
            )
            .await;
        assert_eq!(err_code(&v["Response"]), "AuthFailure.SignatureExpire");
    }
    // Inside the window is fine.
    let (_, _, v) = raw
        .post(
            &raw.host,
            "DescribeZones",
            "2017-03-12",
            "cvm",
            b"{}",
            now - 250,
            &sk,
            &[],
        )
        .await;
    assert!(v["Response"]["Error"].is_null(), "{v}");

    // The body is what is signed: a changed body fails.
    let input = CanonicalInput {
        method: "POST",
        query: "",
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("host".into(), raw.host.clone()),
        ],
        payload_hash: sha256_hex(b"{}"),
    };
    let sig = tc3_signature(
        &sk,
        &sign::utc_date(now),
        "cvm",
        now,
        &input.canonical_request(),
    );
    let r: Value = reqwest::Client::new()
        .post(format!("{}/", raw.endpoint))
        .header("Content-Type", "application/json")
        .header(
            "Authorization",
            format!("TC3-HMAC-SHA256 Credential={}/{}/cvm/tc3_request, SignedHeaders=content-type;host, Signature={sig}", raw.sid, sign::utc_date(now)),
        )
        .header("X-TC-Action", "DescribeZones")
        .header("X-TC-Version", "2017-03-12")
        .header("X-TC-Timestamp", now.to_string())
        .body(r#"{"Limit": 1}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(err_code(&r["Response"]), "AuthFailure.SignatureFailure");

    // Unknown SecretId.
    let r: Value = reqwest::Client::new()
        .post(format!("{}/", raw.endpoint))
        .header("Content-Type", "application/json")
        .header("Authorization", format!("TC3-HMAC-SHA256 Credential=AKIDnobody/{}/cvm/tc3_request, SignedHeaders=content-type;host, Signature=00", sign::utc_date(now)))
        .header("X-TC-Action", "DescribeZones")
        .header("X-TC-Version", "2017-03-12")
        .header("X-TC-Timestamp", now.to_string())
        .body("{}")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(err_code(&r["Response"]), "AuthFailure.SecretIdNotFound");

    // Malformed Authorization; no Authorization at all.
    for auth in ["Bearer x", "TC3-HMAC-SHA256 Credential=x"] {
        let r: Value = reqwest::Client::new()
            .post(format!("{}/", raw.endpoint))
            .header("Content-Type", "application/json")
            .header("Authorization", auth)
            .header("X-TC-Timestamp", now.to_string())
            .body("{}")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            err_code(&r["Response"]),
            "AuthFailure.InvalidAuthorization",
            "{auth}"
        );
    }
    let r: Value = reqwest::Client::new()
        .post(format!("{}/", raw.endpoint))
        .body("{}")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(err_code(&r["Response"]), "AuthFailure.InvalidAuthorization");

    // Other methods and other paths: still HTTP 200, JSON and a RequestId.
    for (method, path) in [
        (reqwest::Method::PUT, "/"),
        (reqwest::Method::DELETE, "/"),
        (reqwest::Method::POST, "/v2/index.php"),
        (reqwest::Method::GET, "/nothing/here"),
    ] {
        let resp = reqwest::Client::new()
            .request(method.clone(), format!("{}{path}", raw.endpoint))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{method} {path}");
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"));
        let r: Value = resp.json().await.unwrap();
        assert_eq!(
            err_code(&r["Response"]),
            "InvalidRequest",
            "{method} {path}: {r}"
        );
        assert!(r["Response"]["RequestId"]
            .as_str()
            .is_some_and(|s| !s.is_empty()));
    }

    // A security token is refused: no temporary credentials are issued.
    let v = raw
        .ok_post("DescribeZones", b"{}", &[("X-TC-Token", "tmp")])
        .await;
    assert_eq!(err_code(&v), "AuthFailure.TokenFailure");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_and_decoding_errors() {
    let cloud = TestCloud::start("1*H100x8").await;
    let raw = Raw::new(&cloud).await;
    let now = chrono::Utc::now().timestamp();
    let sk = raw.sk.clone();
    let check = |v: &Value, code: &str| assert_eq!(err_code(&v["Response"]), code, "{v}");
    let (_, _, v) = raw
        .post(
            &raw.host,
            "DescribeNothing",
            "2017-03-12",
            "cvm",
            b"{}",
            now,
            &sk,
            &[],
        )
        .await;
    check(&v, "InvalidAction");
    let (_, _, v) = raw
        .post(
            &raw.host,
            "DescribeZones",
            "2099-01-01",
            "cvm",
            b"{}",
            now,
            &sk,
            &[],
        )
        .await;
    check(&v, "NoSuchVersion");
    let (_, _, v) = raw
        .post(
            &raw.host,
            "DescribeVpcs",
            "2017-03-12",
            "nosuch",
            b"{}",
            now,
            &sk,
            &[],
        )
        .await;
    check(&v, "NoSuchProduct");
    let (_, _, v) = raw
        .post(
            &raw.host,
            "DescribeZones",
            "2017-03-12",
            "cvm",
            b"[1,2]",
            now,
            &sk,
            &[],
        )
        .await;
    check(&v, "InvalidRequest");
    let (_, _, v) = raw
        .post(
            &raw.host,
            "DescribeZones",
            "2017-03-12",
            "cvm",
            b"{\"Limit\":",
            now,
            &sk,
            &[],
        )
        .await;
    check(&v, "InvalidRequest");
    let (_, _, v) = raw
        .post(
            &raw.host,
            "DescribeInstances",
            "2017-03-12",
            "cvm",
            br#"{"Limitt": 1}"#,
            now,
            &sk,
            &[],
        )
        .await;
    check(&v, "UnknownParameter");
    assert!(v["Response"]["Error"]["Message"]
        .as_str()
        .unwrap()
        .contains("Limitt"));
    let (_, _, v) = raw
        .post(
            &raw.host,
            "DescribeInstances",
            "2017-03-12",
            "cvm",
            br#"{"Limit": "many"}"#,
            now,
            &sk,
            &[],
        )
        .await;
    check(&v, "InvalidParameter");
    // Numbers as strings and True/False are accepted.
    let (_, _, v) = raw
        .post(
            &raw.host,
            "DescribeInstances",
            "2017-03-12",
            "cvm",
            br#"{"Limit": "10", "Offset": "0"}"#,
            now,
            &sk,
            &[],
        )
        .await;
    assert_eq!(v["Response"]["TotalCount"], 0, "{v}");
    let (_, _, v) = raw
        .post(
            &raw.host,
            "RunInstances",
            "2017-03-12",
            "cvm",
            br#"{"Placement": {"Zone": "ap-guangzhou-3"}, "ImageId": "img-gc0ubt22", "InstanceType": "GT5.6XLARGE240", "DryRun": "True", "InstanceCount": "1"}"#,
            now,
            &sk,
            &[],
        )
        .await;
    assert!(v["Response"]["Error"].is_null(), "{v}");
    assert!(
        v["Response"]["InstanceIdSet"].is_null(),
        "a dry run creates nothing: {v}"
    );
    // Oversized body.
    let big = vec![b' '; 2 * 1024 * 1024];
    let (s, _, v) = raw
        .post(
            &raw.host,
            "DescribeZones",
            "2017-03-12",
            "cvm",
            &big,
            now,
            &sk,
            &[],
        )
        .await;
    assert_eq!(s, 200);
    check(&v, "RequestSizeLimitExceeded");
    // Region.
    let r: Value = {
        let c = gpucloud_client::Client::new(&raw.endpoint, &raw.sid, &raw.sk, "ap-shanghai");
        match c.cvm("DescribeZones", json!({})).await {
            Err(e) => json!({"Code": e.code()}),
            Ok(v) => v,
        }
    };
    assert_eq!(r["Code"], "UnsupportedRegion");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_follow_the_language() {
    let cloud = TestCloud::start("1*H100x8").await;
    let c = cloud.app.store.tenant_create("lang", 10).await.unwrap();
    let en =
        gpucloud_client::Client::new(&cloud.endpoint, &c.secret_id, &c.secret_key, "ap-guangzhou")
            .with_language("en-US");
    let zh =
        gpucloud_client::Client::new(&cloud.endpoint, &c.secret_id, &c.secret_key, "ap-guangzhou")
            .with_language("zh-CN");
    let e1 = en
        .cvm("StartInstances", json!({"InstanceIds": ["ins-zzzzzzzz"]}))
        .await
        .unwrap_err();
    let e2 = zh
        .cvm("StartInstances", json!({"InstanceIds": ["ins-zzzzzzzz"]}))
        .await
        .unwrap_err();
    match (e1, e2) {
        (
            gpucloud_client::ClientError::Api {
                code: c1,
                message: m1,
                ..
            },
            gpucloud_client::ClientError::Api {
                code: c2,
                message: m2,
                ..
            },
        ) => {
            assert_eq!(c1, "InvalidInstanceId.NotFound");
            assert_eq!(c1, c2);
            assert!(
                m1.starts_with("The instance `ins-zzzzzzzz` is not found."),
                "{m1}"
            );
            assert!(m2.contains("不存在"), "{m2}");
        }
        other => panic!("{other:?}"),
    }
    let r = en.cvm("DescribeRegions", json!({})).await.unwrap();
    assert_eq!(r["RegionSet"][0]["RegionName"], "South China(Guangzhou)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_form_and_legacy_v1_signatures() {
    let cloud = TestCloud::start("1*H100x8").await;
    let raw = Raw::new(&cloud).await;
    let now = chrono::Utc::now().timestamp();
    // TC3 GET with a flattened query, the way the SDK sends it with reqMethod=GET.
    let query = "Filters.0.Name=zone&Filters.0.Values.0=ap-guangzhou-3&Limit=20";
    let input = CanonicalInput {
        method: "GET",
        query,
        headers: vec![
            (
                "content-type".into(),
                "application/x-www-form-urlencoded".into(),
            ),
            ("host".into(), raw.host.clone()),
        ],
        payload_hash: sha256_hex(b""),
    };
    let date = sign::utc_date(now);
    let sig = tc3_signature(&raw.sk, &date, "cvm", now, &input.canonical_request());
    let v: Value = reqwest::Client::new()
        .get(format!("{}/?{query}", raw.endpoint))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("Authorization", format!("TC3-HMAC-SHA256 Credential={}/{date}/cvm/tc3_request, SignedHeaders=content-type;host, Signature={sig}", raw.sid))
        .header("X-TC-Action", "DescribeInstances")
        .header("X-TC-Version", "2017-03-12")
        .header("X-TC-Timestamp", now.to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["Response"]["TotalCount"], 0, "{v}");

    // Legacy v1, HmacSHA256 in a POST form and HmacSHA1 in a GET query.
    for (method, sm) in [("POST", "HmacSHA256"), ("GET", "HmacSHA1")] {
        let mut params: Vec<(String, String)> = [
            ("Action", "DescribeZones"),
            ("Version", "2017-03-12"),
            ("Region", "ap-guangzhou"),
            ("Nonce", "11886"),
            ("SecretId", raw.sid.as_str()),
            ("SignatureMethod", sm),
            ("Language", "en-US"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        params.push(("Timestamp".into(), now.to_string()));
        let sts = sign::v1_string_to_sign(method, &raw.host, &params);
        let m = sign::V1Method::parse(Some(sm)).unwrap();
        params.push(("Signature".into(), sign::v1_signature(m, &raw.sk, &sts)));
        let form: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params.iter())
            .finish();
        let resp = if method == "POST" {
            reqwest::Client::new()
                .post(format!("{}/", raw.endpoint))
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(form)
                .send()
                .await
                .unwrap()
        } else {
            reqwest::Client::new()
                .get(format!("{}/?{form}", raw.endpoint))
                .send()
                .await
                .unwrap()
        };
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["Response"]["TotalCount"], 1, "{method} {sm}: {v}");
    }
}
