//! Instance actions end to end, in process: real server, SQLite, simulated agents.

mod common;

use common::*;
use serde_json::json;
use std::collections::HashSet;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle() {
    let cloud = TestCloud::start("2*H100x8").await;
    let (c, _) = cloud.tenant("alice").await;
    let id = run_one(&c, "GT5.6XLARGE240").await;
    let first = c
        .cvm("DescribeInstances", json!({"InstanceIds": [id]}))
        .await
        .unwrap();
    let st = first["InstanceSet"][0]["InstanceState"].as_str().unwrap();
    assert!(st == "PENDING" || st == "RUNNING");
    let i = wait_state(&c, &id, "RUNNING").await;
    assert_eq!(i["LatestOperation"], "RunInstances");
    assert_eq!(i["LatestOperationState"], "SUCCESS");
    assert_eq!(i["GPUInfo"]["GPUCount"], 1.0);
    assert_eq!(i["GPUInfo"]["GPUType"], "NVIDIA H100 SXM 80GB");
    let gpu = i["GPUInfo"]["GPUId"][0].as_str().unwrap();
    assert!(gpu.starts_with("GPU-") && gpu.len() == 40, "{gpu}");
    assert_eq!(i["CPU"], 24);
    assert_eq!(i["Memory"], 240);
    assert!(i["CreatedTime"].as_str().unwrap().ends_with('Z'));
    assert!(i["PrivateIpAddresses"][0]
        .as_str()
        .unwrap()
        .starts_with("172.16."));
    assert_eq!(i["HostName"], id.as_str());

    c.cvm(
        "StopInstances",
        json!({"InstanceIds": [id], "StopType": "SOFT"}),
    )
    .await
    .unwrap();
    let i = wait_state(&c, &id, "STOPPED").await;
    assert_eq!(i["LatestOperation"], "StopInstances");
    assert_eq!(i["LatestOperationState"], "SUCCESS");
    assert_eq!(
        code(c.cvm("StopInstances", json!({"InstanceIds": [id]})).await),
        "UnsupportedOperation.InstanceStateStopped"
    );
    c.cvm("StartInstances", json!({"InstanceIds": [id]}))
        .await
        .unwrap();
    wait_state(&c, &id, "RUNNING").await;
    c.cvm("RebootInstances", json!({"InstanceIds": [id]}))
        .await
        .unwrap();
    let i = wait_state(&c, &id, "RUNNING").await;
    assert_eq!(i["LatestOperation"], "RebootInstances");
    poll("reboot to finish", Duration::from_secs(20), || async {
        let r = c
            .cvm("DescribeInstances", json!({"InstanceIds": [id]}))
            .await
            .unwrap();
        (r["InstanceSet"][0]["LatestOperationState"] == "SUCCESS").then_some(())
    })
    .await;
    c.cvm(
        "ModifyInstancesAttribute",
        json!({"InstanceIds": [id], "InstanceName": "trainer", "DisableApiTermination": true}),
    )
    .await
    .unwrap();
    assert_eq!(
        code(
            c.cvm("TerminateInstances", json!({"InstanceIds": [id]}))
                .await
        ),
        "UnsupportedOperation.InstancesProtected"
    );
    c.cvm(
        "ModifyInstancesAttribute",
        json!({"InstanceIds": [id], "DisableApiTermination": false}),
    )
    .await
    .unwrap();
    let r = c
        .cvm(
            "DescribeInstances",
            json!({"Filters": [{"Name": "instance-name", "Values": ["trainer"]}]}),
        )
        .await
        .unwrap();
    assert_eq!(r["TotalCount"], 1);
    c.cvm("TerminateInstances", json!({"InstanceIds": [id]}))
        .await
        .unwrap();
    wait_gone(&c, &id).await;
    poll("claims released", Duration::from_secs(10), || async {
        cloud
            .app
            .store
            .gpu_claims()
            .await
            .unwrap()
            .is_empty()
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resize_grows_in_place_then_moves() {
    let cloud = TestCloud::start("2*H100x8").await;
    let (c, _) = cloud.tenant("alice").await;
    let id = run_one(&c, "GT5.6XLARGE240").await;
    let other = run_one(&c, "GT5.6XLARGE240").await;
    wait_state(&c, &id, "RUNNING").await;
    let host0 = wait_state(&c, &other, "RUNNING").await["Placement"]["HostId"].clone();
    // Running without ForceStop is refused.
    assert_eq!(
        code(
            c.cvm(
                "ResetInstancesType",
                json!({"InstanceIds": [id], "InstanceType": "GT5.48XLARGE1920"})
            )
            .await
        ),
        "UnsupportedOperation.InstanceStateRunning"
    );
    // GPU model changes are refused.
    assert_eq!(
        code(
            c.cvm(
                "ResetInstancesType",
                json!({"InstanceIds": [id], "InstanceType": "GN7.2XLARGE32", "ForceStop": true})
            )
            .await
        ),
        "InvalidParameterValue.InvalidGPUFamilyChange"
    );
    c.cvm("StopInstances", json!({"InstanceIds": [id]}))
        .await
        .unwrap();
    wait_state(&c, &id, "STOPPED").await;
    let before = c
        .cvm("DescribeInstances", json!({"InstanceIds": [id]}))
        .await
        .unwrap()["InstanceSet"][0]
        .clone();
    // 1 -> 8: the two instances share a host, so it must move to the empty one.
    c.cvm(
        "ResetInstancesType",
        json!({"InstanceIds": [id], "InstanceType": "GT5.48XLARGE1920"}),
    )
    .await
    .unwrap();
    let after = wait_state(&c, &id, "RUNNING").await;
    assert_eq!(after["InstanceType"], "GT5.48XLARGE1920");
    assert_eq!(after["GPUInfo"]["GPUCount"], 8.0);
    assert_eq!(after["GPUInfo"]["GPUId"].as_array().unwrap().len(), 8);
    assert_eq!(after["CPU"], 192);
    assert_ne!(after["Placement"]["HostId"], before["Placement"]["HostId"]);
    assert_ne!(after["Placement"]["HostId"], host0);
    assert_eq!(after["LatestOperation"], "ResetInstancesType");
    // No GPU is held twice, and the old host gave its GPU back.
    poll("old claims released", Duration::from_secs(10), || async {
        let claims = cloud.app.store.gpu_claims().await.unwrap();
        (claims.len() == 9 && claims.iter().all(|c| !c.3)).then_some(())
    })
    .await;
    // 8 -> 2 with ForceStop while running: stays on its host.
    c.cvm(
        "ResetInstancesType",
        json!({"InstanceIds": [id], "InstanceType": "GT5.12XLARGE480", "ForceStop": true}),
    )
    .await
    .unwrap();
    let small = wait_state(&c, &id, "RUNNING").await;
    assert_eq!(small["GPUInfo"]["GPUCount"], 2.0);
    assert_eq!(small["Placement"]["HostId"], after["Placement"]["HostId"]);
    poll("dropped GPUs released", Duration::from_secs(10), || async {
        (cloud.app.store.gpu_claims().await.unwrap().len() == 3).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_token_dry_run_and_capacity_refusal() {
    let cloud = TestCloud::start("1*H100x8").await;
    let (c, _) = cloud.tenant("alice").await;
    let mut p = run_params("GT5.12XLARGE480");
    p["ClientToken"] = json!("retry-me-1");
    p["InstanceCount"] = json!(2);
    let a = c.cvm("RunInstances", p.clone()).await.unwrap();
    let b = c.cvm("RunInstances", p.clone()).await.unwrap();
    assert_eq!(a["InstanceIdSet"], b["InstanceIdSet"]);
    assert_eq!(a["InstanceIdSet"].as_array().unwrap().len(), 2);
    // Dry run: checks, creates nothing; failing checks give their code.
    let mut d = run_params("GT5.24XLARGE960");
    d["DryRun"] = json!(true);
    let r = c.cvm("RunInstances", d.clone()).await.unwrap();
    assert!(r.get("InstanceIdSet").is_none());
    d["InstanceCount"] = json!(2);
    assert_eq!(
        code(c.cvm("RunInstances", d).await),
        "ResourceInsufficient.SpecifiedInstanceType"
    );
    // Beyond capacity: refused, nothing leaked.
    let claims_before = cloud.app.store.gpu_claims().await.unwrap().len();
    let e = c
        .cvm("RunInstances", run_params("GT5.48XLARGE1920"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("ResourceInsufficient.SpecifiedInstanceType"));
    assert!(e.to_string().contains("most free on any host is 4"), "{e}");
    assert_eq!(
        cloud.app.store.gpu_claims().await.unwrap().len(),
        claims_before
    );
    let r = c.cvm("DescribeInstances", json!({})).await.unwrap();
    assert_eq!(r["TotalCount"], 2);
    // MinCount: partial delivery.
    let mut m = run_params("GT5.6XLARGE240");
    m["InstanceCount"] = json!(6);
    m["MinCount"] = json!(2);
    let r = c.cvm("RunInstances", m).await.unwrap();
    assert_eq!(r["InstanceIdSet"].as_array().unwrap().len(), 4);
    // Stock reflects it.
    let r = c
        .cvm(
            "DescribeZoneInstanceConfigInfos",
            json!({"Filters": [{"Name": "instance-type", "Values": ["GT5.6XLARGE240"]}]}),
        )
        .await
        .unwrap();
    assert_eq!(r["InstanceTypeQuotaSet"][0]["Status"], "SOLD_OUT");
    assert_eq!(
        r["InstanceTypeQuotaSet"][0]["StatusCategory"],
        "WithoutStock"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_launches_never_overbook() {
    // 16 hosts × 8 GPUs = 128 GPUs; 200 concurrent 1-GPU launches.
    let cloud = TestCloud::start("16*H100x8").await;
    let (c, _) = cloud.tenant("crowd").await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut p = run_params("GT5.6XLARGE240");
            p["ClientToken"] = json!(format!("crowd-{i}"));
            c.cvm("RunInstances", p).await
        }));
    }
    let mut ok = Vec::new();
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(v) => ok.push(v["InstanceIdSet"][0].as_str().unwrap().to_string()),
            Err(e) => {
                assert_eq!(
                    e.code(),
                    Some("ResourceInsufficient.SpecifiedInstanceType"),
                    "{e}"
                );
                refused += 1;
            }
        }
    }
    assert_eq!((ok.len(), refused), (128, 72));
    let claims = cloud.app.store.gpu_claims().await.unwrap();
    assert_eq!(claims.len(), 128);
    let gpus: HashSet<&String> = claims.iter().map(|c| &c.0).collect();
    assert_eq!(gpus.len(), 128);
    poll("all running", Duration::from_secs(60), || async {
        let r = c
            .cvm(
                "DescribeInstances",
                json!({"Filters": [{"Name": "instance-state", "Values": ["RUNNING"]}], "Limit": 1}),
            )
            .await
            .unwrap();
        (r["TotalCount"] == 128).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_failure_is_reported_and_cleaned_up() {
    use base64::Engine as _;
    let cloud = TestCloud::start("1*H100x8").await;
    let (c, _) = cloud.tenant("alice").await;
    let mut p = run_params("GT5.6XLARGE240");
    p["UserData"] = json!(base64::engine::general_purpose::STANDARD
        .encode("#cloud-config\n# gpucloud-sim: fail-launch\n"));
    let id = c.cvm("RunInstances", p).await.unwrap()["InstanceIdSet"][0]
        .as_str()
        .unwrap()
        .to_string();
    let i = wait_state(&c, &id, "LAUNCH_FAILED").await;
    assert_eq!(i["LatestOperationState"], "FAILED");
    assert!(i["LatestOperationErrorMsg"]
        .as_str()
        .unwrap()
        .contains("failed to boot"));
    poll("claim released", Duration::from_secs(10), || async {
        cloud
            .app
            .store
            .gpu_claims()
            .await
            .unwrap()
            .is_empty()
            .then_some(())
    })
    .await;
    c.cvm("TerminateInstances", json!({"InstanceIds": [id]}))
        .await
        .unwrap();
    wait_gone(&c, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spread_groups_and_validation() {
    use base64::Engine as _;
    let cloud = TestCloud::start("2*H100x8").await;
    let (c, _) = cloud.tenant("alice").await;
    let g = c
        .cvm(
            "CreateDisasterRecoverGroup",
            json!({"Name": "ha", "Type": "HOST"}),
        )
        .await
        .unwrap();
    let gid = g["DisasterRecoverGroupId"].as_str().unwrap().to_string();
    assert!(gid.starts_with("ps-"));
    assert_eq!(g["CvmQuotaTotal"], 50);
    let mut p = run_params("GT5.6XLARGE240");
    p["DisasterRecoverGroupIds"] = json!([gid]);
    p["InstanceCount"] = json!(2);
    let r = c.cvm("RunInstances", p.clone()).await.unwrap();
    let ids: Vec<String> = r["InstanceIdSet"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let d = c
        .cvm("DescribeInstances", json!({"InstanceIds": ids}))
        .await
        .unwrap();
    let hosts: HashSet<String> = d["InstanceSet"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["Placement"]["HostId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(hosts.len(), 2, "spread over both hosts");
    p["InstanceCount"] = json!(1);
    assert_eq!(
        code(c.cvm("RunInstances", p).await),
        "ResourceInsufficient.SpecifiedInstanceType"
    );
    let g = c
        .cvm(
            "DescribeDisasterRecoverGroups",
            json!({"DisasterRecoverGroupIds": [gid]}),
        )
        .await
        .unwrap();
    assert_eq!(g["DisasterRecoverGroupSet"][0]["CurrentNum"], 2);

    let bad = |patch: serde_json::Value| {
        let mut p = run_params("GT5.6XLARGE240");
        for (k, v) in patch.as_object().unwrap() {
            p[k] = v.clone();
        }
        p
    };
    let cases = [
        (
            bad(json!({"UserData": "not base64!!"})),
            "InvalidParameterValue.InvalidUserDataFormat",
        ),
        (
            bad(
                json!({"UserData": base64::engine::general_purpose::STANDARD.encode(vec![b'x'; 16 * 1024 + 1])}),
            ),
            "InvalidParameterValue.TooLarge",
        ),
        (
            bad(json!({"LoginSettings": {"Password": "short"}})),
            "InvalidPassword",
        ),
        (
            bad(json!({"LoginSettings": {"KeyIds": ["skey-zzzzzzzz"]}})),
            "InvalidParameterValue.KeyPairNotFound",
        ),
        (
            bad(json!({"LoginSettings": {"KeyIds": ["skey-1"]}})),
            "InvalidKeyPairId.Malformed",
        ),
        (
            bad(json!({"InstanceType": "GT5.99XLARGE1"})),
            "InvalidParameterValue.InstanceTypeNotFound",
        ),
        (
            bad(json!({"InstanceType": "nonsense"})),
            "InvalidInstanceType.Malformed",
        ),
        (
            bad(json!({"InstanceType": "GN7.2XLARGE32"})),
            "ResourceUnavailable.InstanceType",
        ),
        (
            bad(json!({"ImageId": "img-zzzzzzzz"})),
            "InvalidImageId.NotFound",
        ),
        (
            bad(json!({"ImageId": "ubuntu"})),
            "InvalidImageId.Malformed",
        ),
        (
            bad(json!({"Placement": {"Zone": "ap-shanghai-2"}})),
            "InvalidZone.MismatchRegion",
        ),
        (
            bad(json!({"Placement": {"Zone": "ap-guangzhou-+3"}})),
            "InvalidZone.MismatchRegion",
        ),
        (
            bad(json!({"InstanceName": "n{R:18446744073709551615}", "InstanceCount": 2})),
            "InvalidParameterValue",
        ),
        (
            bad(json!({"VirtualPrivateCloud": {"VpcId": "my-vpc", "SubnetId": "subnet-zzzzzzzz"}})),
            "InvalidParameterValue.VpcIdMalformed",
        ),
        (
            bad(json!({"VirtualPrivateCloud": {"VpcId": "vpc-zzzzzzzz", "SubnetId": "sub1"}})),
            "InvalidParameterValue.SubnetIdMalformed",
        ),
        (
            bad(
                json!({"VirtualPrivateCloud": {"VpcId": "vpc-zzzzzzzz", "SubnetId": "subnet-zzzzzzzz"}}),
            ),
            "InvalidParameterValue.VpcIdNotExist",
        ),
        (
            bad(json!({"InstanceCount": 501})),
            "InvalidParameterValue.Range",
        ),
        (
            bad(json!({"HostName": "-bad-"})),
            "InvalidParameterValue.IllegalHostName",
        ),
        (
            bad(json!({"ClientToken": "x".repeat(65)})),
            "InvalidClientToken.TooLong",
        ),
        (
            bad(json!({"InstanceChargeType": "PREPAID"})),
            "MissingParameter",
        ),
        (
            bad(json!({"InstanceChargeType": "PREPAID", "InstanceChargePrepaid": {"Period": 13}})),
            "InvalidPeriod",
        ),
        (
            bad(json!({"SecurityGroupIds": ["sg-zzzzzzzz"]})),
            "InvalidSecurityGroupId.NotFound",
        ),
        (
            bad(json!({"DisasterRecoverGroupIds": ["ps-zzzzzzzz"]})),
            "FailedOperation.DisasterRecoverGroupNotFound",
        ),
        (bad(json!({"Bogus": 1})), "UnknownParameter"),
    ];
    for (p, want) in cases {
        assert_eq!(code(c.cvm("RunInstances", p.clone()).await), want, "{p}");
    }
    let mut no_zone = run_params("GT5.6XLARGE240");
    no_zone.as_object_mut().unwrap().remove("Placement");
    assert_eq!(
        code(c.cvm("RunInstances", no_zone).await),
        "MissingParameter"
    );
    // Describe validation.
    assert_eq!(
        code(c.cvm("DescribeInstances", json!({"InstanceIds": ["ins-aaaaaaaa"], "Filters": [{"Name": "zone", "Values": ["x"]}]})).await),
        "InvalidParameter"
    );
    assert_eq!(
        code(
            c.cvm(
                "DescribeInstances",
                json!({"Filters": [{"Name": "creation-start-time", "Values": ["2024/01/01"]}]})
            )
            .await
        ),
        "InvalidParameterValue.InvalidTimeFormat"
    );
    assert_eq!(
        code(c.cvm("DescribeInstances", json!({"Filters": [{"Name": "creation-end-time", "Values": ["2024-01-01 00:00:00", "2025-01-01 00:00:00"]}]})).await),
        "InvalidParameterValue"
    );
    assert_eq!(
        code(
            c.cvm(
                "DescribeInstances",
                json!({"Filters": [{"Name": "colour", "Values": ["x"]}]})
            )
            .await
        ),
        "InvalidFilter"
    );
    assert_eq!(
        code(c.cvm("DescribeInstances", json!({"Limit": 101})).await),
        "InvalidParameterValue.Range"
    );
    assert_eq!(
        code(
            c.cvm("DescribeInstances", json!({"InstanceIds": ["ins-1122"]}))
                .await
        ),
        "InvalidInstanceId.Malformed"
    );
    assert_eq!(
        code(
            c.cvm(
                "DescribeInstances",
                json!({"Filters": [{"Name": "zone", "Values": ["a", "b", "c", "d", "e", "f"]}]})
            )
            .await
        ),
        "InvalidFilterValue.LimitExceeded"
    );
    assert_eq!(
        code(c.cvm("StartInstances", json!({})).await),
        "MissingParameter"
    );
    assert_eq!(
        code(
            c.cvm(
                "StopInstances",
                json!({"InstanceIds": ids, "StopType": "GENTLE"})
            )
            .await
        ),
        "InvalidParameterValue"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_pairs() {
    let cloud = TestCloud::start("1*H100x8").await;
    let (c, _) = cloud.tenant("alice").await;
    let k = c
        .cvm("CreateKeyPair", json!({"KeyName": "main", "ProjectId": 0}))
        .await
        .unwrap();
    let kp = &k["KeyPair"];
    assert!(kp["KeyId"].as_str().unwrap().starts_with("skey-"));
    assert!(kp["PrivateKey"]
        .as_str()
        .unwrap()
        .starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    assert!(kp["PublicKey"]
        .as_str()
        .unwrap()
        .starts_with("ssh-rsa AAAA"));
    let kid = kp["KeyId"].as_str().unwrap().to_string();
    assert_eq!(
        code(
            c.cvm("CreateKeyPair", json!({"KeyName": "main", "ProjectId": 0}))
                .await
        ),
        "InvalidKeyPairName.Duplicate"
    );
    assert_eq!(
        code(
            c.cvm("CreateKeyPair", json!({"KeyName": "a-b", "ProjectId": 0}))
                .await
        ),
        "InvalidKeyPairNameIncludeIllegalChar"
    );
    assert_eq!(
        code(
            c.cvm("CreateKeyPair", json!({"KeyName": "", "ProjectId": 0}))
                .await
        ),
        "InvalidKeyPairNameEmpty"
    );
    assert_eq!(
        code(
            c.cvm(
                "CreateKeyPair",
                json!({"KeyName": "x".repeat(26), "ProjectId": 0})
            )
            .await
        ),
        "InvalidKeyPairNameTooLong"
    );
    let ed =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHE5vJzvoQXOYsT6ZW3d4YoLz9TAbQx1EEfmBdS+b2Qd laptop";
    let imported = c
        .cvm(
            "ImportKeyPair",
            json!({"KeyName": "laptop", "ProjectId": 0, "PublicKey": ed}),
        )
        .await
        .unwrap();
    let lid = imported["KeyId"].as_str().unwrap().to_string();
    assert_eq!(
        code(
            c.cvm(
                "ImportKeyPair",
                json!({"KeyName": "again", "ProjectId": 0, "PublicKey": ed})
            )
            .await
        ),
        "InvalidPublicKey.Duplicate"
    );
    assert_eq!(
        code(
            c.cvm(
                "ImportKeyPair",
                json!({"KeyName": "bad", "ProjectId": 0, "PublicKey": "ssh-rsa notakey"})
            )
            .await
        ),
        "InvalidPublicKey.Malformed"
    );
    let mut p = run_params("GT5.6XLARGE240");
    p["LoginSettings"] = json!({"KeyIds": [kid]});
    let id = c.cvm("RunInstances", p).await.unwrap()["InstanceIdSet"][0]
        .as_str()
        .unwrap()
        .to_string();
    let i = wait_state(&c, &id, "RUNNING").await;
    assert_eq!(i["LoginSettings"]["KeyIds"][0], kid.as_str());
    let d = c
        .cvm("DescribeKeyPairs", json!({"KeyIds": [kid]}))
        .await
        .unwrap();
    assert_eq!(d["KeyPairSet"][0]["AssociatedInstanceIds"][0], id.as_str());
    assert!(
        d["KeyPairSet"][0]["PrivateKey"].is_null(),
        "private keys are never shown again"
    );
    assert_eq!(
        code(c.cvm("DeleteKeyPairs", json!({"KeyIds": [kid]})).await),
        "InvalidParameterValue.KeyPairNotSupported"
    );
    // Associating with a running instance needs ForceStop.
    assert_eq!(
        code(
            c.cvm(
                "AssociateInstancesKeyPairs",
                json!({"InstanceIds": [id], "KeyIds": [lid]})
            )
            .await
        ),
        "UnsupportedOperation.InstanceStateRunning"
    );
    c.cvm(
        "AssociateInstancesKeyPairs",
        json!({"InstanceIds": [id], "KeyIds": [lid], "ForceStop": true}),
    )
    .await
    .unwrap();
    let i = wait_state(&c, &id, "RUNNING").await;
    assert_eq!(i["LoginSettings"]["KeyIds"].as_array().unwrap().len(), 2);
    poll(
        "key association settles",
        Duration::from_secs(20),
        || async {
            let r = c
                .cvm("DescribeInstances", json!({"InstanceIds": [id]}))
                .await
                .unwrap();
            (r["InstanceSet"][0]["LatestOperationState"] == "SUCCESS").then_some(())
        },
    )
    .await;
    c.cvm(
        "DisassociateInstancesKeyPairs",
        json!({"InstanceIds": [id], "KeyIds": [kid], "ForceStop": true}),
    )
    .await
    .unwrap();
    poll(
        "key disassociation settles",
        Duration::from_secs(20),
        || async {
            let r = c
                .cvm("DescribeInstances", json!({"InstanceIds": [id]}))
                .await
                .unwrap();
            (r["InstanceSet"][0]["LatestOperationState"] == "SUCCESS").then_some(())
        },
    )
    .await;
    c.cvm("DeleteKeyPairs", json!({"KeyIds": [kid]}))
        .await
        .unwrap();
    let d = c.cvm("DescribeKeyPairs", json!({})).await.unwrap();
    assert_eq!(d["TotalCount"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_instances_password_checks_and_restarts_with_force_stop() {
    let cloud = TestCloud::start("1*CPU").await;
    let (c, _) = cloud.tenant("alice").await;
    let id = run_one(&c, "S5.SMALL2").await;
    wait_state(&c, &id, "RUNNING").await;
    let reset = |p: serde_json::Value| {
        let c = c.clone();
        async move { c.cvm("ResetInstancesPassword", p).await }
    };
    let good = "Gpu-Cloud-2026x";
    for (p, want) in [
        (json!({"InstanceIds": [id]}), "MissingParameter"),
        (json!({"Password": good}), "MissingParameter"),
        (
            json!({"InstanceIds": [id], "Password": "short"}),
            "InvalidPassword",
        ),
        (
            json!({"InstanceIds": [id], "Password": good, "UserName": "ubuntu"}),
            "InvalidParameterValue",
        ),
        (
            json!({"InstanceIds": ["ins-nothere1"], "Password": good}),
            "InvalidInstanceId.NotFound",
        ),
        // Running: only with ForceStop.
        (
            json!({"InstanceIds": [id], "Password": good}),
            "UnsupportedOperation.InstanceStateRunning",
        ),
    ] {
        assert_eq!(code(reset(p.clone()).await), want, "{p}");
    }
    let before = cloud
        .app
        .store
        .host_desired(&cloud.app.store.host_list().await.unwrap()[0].host_id)
        .await
        .unwrap()
        .1;
    assert_eq!(before[0].password, None);

    reset(json!({"InstanceIds": [id], "Password": good, "ForceStop": true}))
        .await
        .unwrap();
    let i = c
        .cvm("DescribeInstances", json!({"InstanceIds": [id]}))
        .await
        .unwrap();
    assert_eq!(
        i["InstanceSet"][0]["LatestOperation"],
        "ResetInstancesPassword"
    );
    wait_state(&c, &id, "RUNNING").await;
    poll("the reset settles", Duration::from_secs(20), || async {
        let r = c
            .cvm("DescribeInstances", json!({"InstanceIds": [id]}))
            .await
            .unwrap();
        (r["InstanceSet"][0]["LatestOperationState"] == "SUCCESS").then_some(())
    })
    .await;
    // The host's desired state carries the new password (sealed at rest).
    let host = cloud.app.store.host_list().await.unwrap()[0]
        .host_id
        .clone();
    let after = cloud.app.store.host_desired(&host).await.unwrap().1;
    assert_eq!(after[0].password.as_deref(), Some(good));

    // Stopped: no ForceStop needed, and nothing restarts.
    c.cvm("StopInstances", json!({"InstanceIds": [id]}))
        .await
        .unwrap();
    wait_state(&c, &id, "STOPPED").await;
    reset(json!({"InstanceIds": [id], "Password": "Another-Pass-9"}))
        .await
        .unwrap();
    assert_eq!(state(&c, &id).await, "STOPPED");
    let after = cloud.app.store.host_desired(&host).await.unwrap().1;
    assert_eq!(after[0].password.as_deref(), Some("Another-Pass-9"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_instance_reinstalls_and_runs() {
    let cloud = TestCloud::start("1*CPU").await;
    vm_image(&cloud).await;
    let (c, _) = cloud.tenant("alice").await;
    let id = run_one(&c, "S5.SMALL2").await;
    wait_state(&c, &id, "RUNNING").await;
    let host = cloud.app.store.host_list().await.unwrap()[0]
        .host_id
        .clone();
    let seq = |cloud: &TestCloud| {
        let store = cloud.app.store.clone();
        let host = host.clone();
        async move { store.host_desired(&host).await.unwrap().1[0].reset_seq }
    };
    assert_eq!(seq(&cloud).await, 0);
    let reset = |p: serde_json::Value| {
        let c = c.clone();
        async move { c.cvm("ResetInstance", p).await }
    };
    for (p, want) in [
        (json!({}), "MissingParameter"),
        (json!({"InstanceId": "ins-"}), "InvalidInstanceId.Malformed"),
        (
            json!({"InstanceId": "ins-nothere1"}),
            "InvalidInstanceId.NotFound",
        ),
        (
            json!({"InstanceId": id, "ImageId": "img-nothere1"}),
            "InvalidImageId.NotFound",
        ),
        // Another runtime: the instance runs on the simulated runtime.
        (
            json!({"InstanceId": id, "ImageId": "img-gcvmtest"}),
            "UnsupportedOperation",
        ),
        (
            json!({"InstanceId": id, "HostName": "-bad-"}),
            "InvalidParameterValue.IllegalHostName",
        ),
        (
            json!({"InstanceId": id, "UserData": "%%%"}),
            "InvalidParameterValue.InvalidUserDataFormat",
        ),
        (
            json!({"InstanceId": id, "LoginSettings": {"Password": "short"}}),
            "InvalidPassword",
        ),
        (
            json!({"InstanceId": id, "SystemDisk": {"DiskType": "CLOUD_SSD", "DiskSize": 200}}),
            "UnsupportedOperation",
        ),
    ] {
        assert_eq!(code(reset(p.clone()).await), want, "{p}");
    }
    assert_eq!(seq(&cloud).await, 0, "refusals change nothing");

    // Running: reinstalled, restarted, with the new login and host name
    // (naming the disk it has is no change).
    let disk = c
        .cvm("DescribeInstances", json!({"InstanceIds": [id]}))
        .await
        .unwrap()["InstanceSet"][0]["SystemDisk"]
        .clone();
    let same_disk = json!({"DiskType": disk["DiskType"], "DiskSize": disk["DiskSize"]});
    reset(json!({"InstanceId": id, "HostName": "fresh-host", "LoginSettings": {"Password": "Gpu-Cloud-2026x"}, "SystemDisk": same_disk}))
        .await
        .unwrap();
    let i = c
        .cvm("DescribeInstances", json!({"InstanceIds": [id]}))
        .await
        .unwrap();
    assert_eq!(i["InstanceSet"][0]["LatestOperation"], "ResetInstance");
    assert_eq!(i["InstanceSet"][0]["InstanceState"], "STARTING");
    // Busy: a second request waits its turn.
    assert_eq!(
        code(reset(json!({"InstanceId": id})).await),
        "OperationDenied.InstanceOperationInProgress"
    );
    wait_state(&c, &id, "RUNNING").await;
    poll("the reinstall settles", Duration::from_secs(20), || async {
        let r = c
            .cvm("DescribeInstances", json!({"InstanceIds": [id]}))
            .await
            .unwrap();
        (r["InstanceSet"][0]["LatestOperationState"] == "SUCCESS").then_some(())
    })
    .await;
    let d = cloud.app.store.host_desired(&host).await.unwrap().1;
    assert_eq!(
        (
            d[0].reset_seq,
            d[0].host_name.as_str(),
            d[0].password.as_deref()
        ),
        (1, "fresh-host", Some("Gpu-Cloud-2026x"))
    );

    // Stopped: reinstalled and started.
    c.cvm("StopInstances", json!({"InstanceIds": [id]}))
        .await
        .unwrap();
    wait_state(&c, &id, "STOPPED").await;
    reset(json!({"InstanceId": id})).await.unwrap();
    wait_state(&c, &id, "RUNNING").await;
    let d = cloud.app.store.host_desired(&host).await.unwrap().1;
    assert_eq!(
        (d[0].reset_seq, d[0].password.as_deref()),
        (2, Some("Gpu-Cloud-2026x")),
        "login kept when not given"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_and_prices() {
    let cloud = TestCloud::start("1*H100x8,1*T4x4@ap-guangzhou-4,1*CPU").await;
    let (c, _) = cloud.tenant("alice").await;
    let r = c
        .cvm(
            "DescribeInstanceTypeConfigs",
            json!({"Filters": [{"Name": "instance-family", "Values": ["GT5"]}]}),
        )
        .await
        .unwrap();
    let set = r["InstanceTypeConfigSet"].as_array().unwrap();
    assert_eq!(set.len(), 5);
    assert!(set
        .iter()
        .all(|t| t["Zone"] == "ap-guangzhou-3" && t["GpuType"] == "NVIDIA H100 SXM 80GB"));
    let r = c.cvm("DescribeZoneInstanceConfigInfos", json!({"Filters": [{"Name": "zone", "Values": ["ap-guangzhou-4"]}, {"Name": "instance-charge-type", "Values": ["POSTPAID_BY_HOUR"]}]})).await.unwrap();
    let set = r["InstanceTypeQuotaSet"].as_array().unwrap();
    assert!(set
        .iter()
        .any(|t| t["InstanceType"] == "GN7.20XLARGE320" && t["Status"] == "SELL"));
    assert!(
        set.iter().all(|t| t["InstanceFamily"] != "GT5"),
        "no H100 in zone 4"
    );
    let gn7 = set
        .iter()
        .find(|t| t["InstanceType"] == "GN7.2XLARGE32")
        .unwrap();
    assert_eq!(gn7["Price"]["ChargeUnit"], "HOUR");
    assert_eq!(gn7["StatusCategory"], "NormalStock");
    let p = c.cvm("InquiryPriceRunInstances", json!({"Placement": {"Zone": "ap-guangzhou-3"}, "ImageId": "img-gc0ubt22", "InstanceType": "GT5.6XLARGE240", "InstanceCount": 2})).await.unwrap();
    assert_eq!(p["Price"]["InstancePrice"]["UnitPrice"], 69.44);
    let p = c.cvm("InquiryPriceRunInstances", json!({"Placement": {"Zone": "ap-guangzhou-3"}, "ImageId": "img-gc0ubt22", "InstanceType": "GT5.6XLARGE240", "InstanceChargeType": "PREPAID", "InstanceChargePrepaid": {"Period": 12}})).await.unwrap();
    assert_eq!(p["Price"]["InstancePrice"]["Discount"], 83.0);
    // A price only for what RunInstances would take.
    for (bw, want) in [
        (-5, "InvalidParameterValue.Range"),
        (10, "UnsupportedOperation"),
    ] {
        let r = c.cvm("InquiryPriceRunInstances", json!({"Placement": {"Zone": "ap-guangzhou-3"}, "ImageId": "img-gc0ubt22", "InstanceType": "GT5.6XLARGE240", "InternetAccessible": {"InternetMaxBandwidthOut": bw}})).await;
        assert_eq!(code(r), want, "{bw}");
    }
    let id = run_one(&c, "GT5.6XLARGE240").await;
    let p = c
        .cvm(
            "InquiryPriceResetInstancesType",
            json!({"InstanceIds": [id], "InstanceType": "GT5.12XLARGE480"}),
        )
        .await
        .unwrap();
    assert_eq!(p["Price"]["InstancePrice"]["UnitPrice"], 69.44);
    let imgs = c
        .cvm(
            "DescribeImages",
            json!({"Filters": [{"Name": "platform", "Values": ["Ubuntu"]}]}),
        )
        .await
        .unwrap();
    assert!(imgs["TotalCount"].as_i64().unwrap() >= 2);
    let imgs = c
        .cvm(
            "DescribeImages",
            json!({"Filters": [{"Name": "tag:runtime", "Values": ["sim"]}]}),
        )
        .await
        .unwrap();
    assert!(imgs["TotalCount"].as_i64().unwrap() >= 5);
    let cpu = c
        .cvm("RunInstances", run_params("S5.MEDIUM4"))
        .await
        .unwrap();
    let cid = cpu["InstanceIdSet"][0].as_str().unwrap();
    let i = wait_state(&c, cid, "RUNNING").await;
    assert!(i["GPUInfo"].is_null(), "no GPUInfo without GPUs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_checks_the_instance_quota() {
    let cloud = TestCloud::start("1*H100x8").await;
    // A dry run checks the business limits too: a tenant at its instance quota.
    let small = cloud.app.store.tenant_create("small", 1).await.unwrap();
    let s = gpucloud_client::Client::new(
        &cloud.endpoint,
        &small.secret_id,
        &small.secret_key,
        "ap-guangzhou",
    );
    let mut d = run_params("GT5.6XLARGE240");
    d["DryRun"] = json!(true);
    assert!(s.cvm("RunInstances", d.clone()).await.is_ok());
    s.cvm("RunInstances", run_params("GT5.6XLARGE240"))
        .await
        .unwrap();
    assert_eq!(
        code(s.cvm("RunInstances", d).await),
        "LimitExceeded.InstanceQuota"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepaid_instances_pass_through_the_recycle_bin() {
    let cloud = TestCloud::start("1*H100x8").await;
    let (c, _) = cloud.tenant("alice").await;
    let mut p = run_params("GT5.6XLARGE240");
    p["InstanceChargeType"] = json!("PREPAID");
    p["InstanceChargePrepaid"] = json!({"Period": 1});
    let r = c.cvm("RunInstances", p).await.unwrap();
    let prepaid = r["InstanceIdSet"][0].as_str().unwrap().to_string();
    let hourly = run_one(&c, "GT5.6XLARGE240").await;
    wait_state(&c, &prepaid, "RUNNING").await;
    wait_state(&c, &hourly, "RUNNING").await;
    // One call may not mix charge types; nothing changes.
    assert_eq!(
        code(
            c.cvm(
                "TerminateInstances",
                json!({"InstanceIds": [prepaid, hourly]})
            )
            .await
        ),
        "UnsupportedOperation.InstanceMixedPricingModel"
    );
    wait_state(&c, &hourly, "RUNNING").await;
    // First terminate: the recycle bin (SHUTDOWN, powered off, GPU kept).
    let claims = cloud.app.store.gpu_claims().await.unwrap().len();
    c.cvm("TerminateInstances", json!({"InstanceIds": [prepaid]}))
        .await
        .unwrap();
    let i = poll(
        "the first terminate to finish",
        Duration::from_secs(30),
        || async {
            let r = c
                .cvm("DescribeInstances", json!({"InstanceIds": [prepaid]}))
                .await
                .ok()?;
            let i = r["InstanceSet"][0].clone();
            (i["LatestOperationState"] == "SUCCESS").then_some(i)
        },
    )
    .await;
    assert_eq!(
        (i["InstanceState"].as_str(), i["LatestOperation"].as_str()),
        (Some("SHUTDOWN"), Some("TerminateInstances"))
    );
    assert_eq!(cloud.app.store.gpu_claims().await.unwrap().len(), claims);
    assert_eq!(
        code(
            c.cvm("StartInstances", json!({"InstanceIds": [prepaid]}))
                .await
        ),
        "UnsupportedOperation.InstanceStateShutdown"
    );
    // Second terminate: destroyed, its GPU free again.
    c.cvm("TerminateInstances", json!({"InstanceIds": [prepaid]}))
        .await
        .unwrap();
    poll("the instance to go", Duration::from_secs(30), || async {
        let r = c
            .cvm("DescribeInstances", json!({"InstanceIds": [prepaid]}))
            .await
            .ok()?;
        (r["TotalCount"] == 0).then_some(())
    })
    .await;
    poll(
        "its GPU to be released",
        Duration::from_secs(30),
        || async { (cloud.app.store.gpu_claims().await.ok()?.len() == claims - 1).then_some(()) },
    )
    .await;
}
