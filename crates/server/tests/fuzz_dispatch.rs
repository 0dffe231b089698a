//! Property-based fuzzing of everything behind authentication: random
//! parameter trees (biased towards real parameter names and plausible values)
//! for every action, against a real control plane. Every call must come back
//! as a success or a well-formed Tencent error — never a panic, never an
//! `InternalError`, never a hang. The libFuzzer targets in `fuzz/` cover the
//! byte-level decoders.

mod common;

use common::TestCloud;
use gpucloud_api_types::Language;
use gpucloud_server::api::dispatch::{dispatch, ACTIONS};
use gpucloud_server::api::front::{parse_form, parse_json, Call, Ctx};
use gpucloud_store::TenantScope;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value};

const KEYS: &[&str] = &[
    "InstanceIds",
    "Filters",
    "Name",
    "Values",
    "Placement",
    "Zone",
    "ProjectId",
    "ImageId",
    "ImageIds",
    "InstanceType",
    "InstanceCount",
    "MinCount",
    "Limit",
    "Offset",
    "KeyIds",
    "KeyId",
    "KeyName",
    "PublicKey",
    "LoginSettings",
    "Password",
    "KeepImageLogin",
    "UserData",
    "DryRun",
    "ClientToken",
    "InstanceName",
    "HostName",
    "InstanceChargeType",
    "InstanceChargePrepaid",
    "Period",
    "RenewFlag",
    "SystemDisk",
    "DiskType",
    "DiskSize",
    "DataDisks",
    "InternetAccessible",
    "InternetMaxBandwidthOut",
    "InternetChargeType",
    "VirtualPrivateCloud",
    "VpcId",
    "SubnetId",
    "DisasterRecoverGroupIds",
    "Type",
    "StopType",
    "StoppedMode",
    "ForceStop",
    "ForceReboot",
    "DisableApiTermination",
    "SecurityGroupIds",
    "TagSpecification",
    "ResourceType",
    "Tags",
    "Key",
    "Value",
    "Affinity",
    "Strategy",
    "Description",
    "Bogus",
];

const STRINGS: &[&str] = &[
    "ins-aaaaaaaa",
    "ins-1122",
    "img-gc0ubt22",
    "img-zzzzzzzz",
    "ap-guangzhou-3",
    "ap-guangzhou-4",
    "ap-shanghai-1",
    "GT5.6XLARGE240",
    "GT5.48XLARGE1920",
    "S5.SMALL1",
    "GN7.2XLARGE32",
    "nonsense",
    "zone",
    "instance-state",
    "instance-id",
    "RUNNING",
    "PREPAID",
    "POSTPAID_BY_HOUR",
    "SPOTPAID",
    "SOFT",
    "HARD",
    "STOP_CHARGING",
    "skey-aaaaaaaa",
    "ps-aaaaaaaa",
    "HOST",
    "SW",
    "aGVsbG8=",
    "%%%",
    "",
    "True",
    "False",
    "-1",
    "99999999999999999999",
    "Passw0rd!",
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHE5vJzvoQXOYsT6ZW3d4YoLz9TAbQx1EEfmBdS+b2Qd x",
    "tag:team",
    "cpu:desc",
    "\u{672a}\u{547d}\u{540d}",
    "{R:3}",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop_oneof![
            Just(0i64),
            Just(1),
            Just(-1),
            Just(8),
            Just(500),
            Just(501),
            any::<i64>()
        ]
        .prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        prop::sample::select(STRINGS).prop_map(|s| Value::String(s.to_string())),
        ".{0,12}".prop_map(Value::String),
    ]
}

fn tree() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..5).prop_map(|kv| {
                let mut m = Map::new();
                for (k, v) in kv {
                    m.insert(k.to_string(), v);
                }
                Value::Object(m)
            }),
        ]
    })
}

fn params() -> impl Strategy<Value = Value> {
    prop::collection::vec((prop::sample::select(KEYS), tree()), 0..6).prop_map(|kv| {
        let mut m = Map::new();
        for (k, v) in kv {
            m.insert(k.to_string(), v);
        }
        Value::Object(m)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_parameters_never_break_the_server() {
    let cloud = TestCloud::start("2*H100x8,1*CPU").await;
    let c = cloud
        .app
        .store
        .tenant_create("fuzz", 100_000)
        .await
        .unwrap();
    let scope = TenantScope::new(c.app_id);
    let mut runner = TestRunner::new(Config {
        cases: 600,
        ..Config::default()
    });
    let strategy = (prop::sample::select(ACTIONS), params(), any::<bool>());
    let mut cases = Vec::new();
    for _ in 0..600 {
        let tree = strategy.new_tree(&mut runner).unwrap();
        cases.push(proptest::strategy::ValueTree::current(&tree));
    }
    for ((service, version, action), p, en) in cases {
        let ctx = Ctx {
            scope,
            request_id: "fuzz".into(),
            lang: if en { Language::EnUs } else { Language::ZhCn },
            region: None,
            host: None,
            tls: false,
        };
        let call = Call {
            service: service.to_string(),
            version: version.to_string(),
            action: action.to_string(),
            params: p.clone(),
        };
        let out = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            dispatch(&cloud.app, &ctx, &call),
        )
        .await
        .unwrap_or_else(|_| panic!("{action} hung on {p}"));
        if let Err(e) = out {
            assert_ne!(e.code(), "InternalError", "{action} {p}: {e:?}");
            assert!(!e.message(ctx.lang).is_empty());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    #[test]
    fn body_and_query_decoders_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512), q in ".{0,256}") {
        let _ = parse_json(&bytes);
        let _ = parse_form(&q, &[]);
    }

    #[test]
    fn every_request_type_decodes_or_refuses(p in params()) {
        use gpucloud_api_types::cvm::*;
        use gpucloud_server::api::decode;
        let _ = decode::<RunInstancesRequest>(p.clone());
        let _ = decode::<DescribeInstancesRequest>(p.clone());
        let _ = decode::<StopInstancesRequest>(p.clone());
        let _ = decode::<ResetInstancesTypeRequest>(p.clone());
        let _ = decode::<CreateKeyPairRequest>(p.clone());
        let _ = decode::<ImportKeyPairRequest>(p.clone());
        let _ = decode::<CreateDisasterRecoverGroupRequest>(p.clone());
        let _ = decode::<DescribeZoneInstanceConfigInfosRequest>(p);
    }
}
