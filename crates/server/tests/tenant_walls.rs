//! Tenants are walls: for every action the API serves, another tenant's
//! resources are "not found" and never show up. The test enumerates
//! `dispatch::ACTIONS`, so a new action without a wall check fails it.

mod common;

use common::*;
use gpucloud_store::images::ImageRow;
use serde_json::{json, Value};
use std::collections::BTreeSet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_action_hides_other_tenants() {
    let cloud = TestCloud::start("2*H100x8").await;
    let (alice, alice_app) = cloud.tenant("alice").await;
    let (bob, _) = cloud.tenant("bob").await;

    // Alice's resources.
    cloud
        .app
        .store
        .image_upsert(&ImageRow {
            image_id: "img-alice001".into(),
            app_id: Some(alice_app),
            name: "alice private".into(),
            os_name: "Ubuntu".into(),
            platform: "Ubuntu".into(),
            description: String::new(),
            size_gib: 20,
            architecture: "x86_64".into(),
            image_type: "PRIVATE_IMAGE".into(),
            source: "CREATE_IMAGE".into(),
            state: "NORMAL".into(),
            runtime: "sim".into(),
            location: String::new(),
            gpu_driver: false,
            guest_agent: true,
            tags: vec![],
            created_at: 0,
        })
        .await
        .unwrap();
    let key = alice
        .cvm(
            "CreateKeyPair",
            json!({"KeyName": "alicekey", "ProjectId": 0}),
        )
        .await
        .unwrap()["KeyPair"]
        .clone();
    let akey = key["KeyId"].as_str().unwrap().to_string();
    let apub = key["PublicKey"].as_str().unwrap().to_string();
    let grp = alice
        .cvm(
            "CreateDisasterRecoverGroup",
            json!({"Name": "g", "Type": "HOST", "ClientToken": "shared-token"}),
        )
        .await
        .unwrap();
    let agrp = grp["DisasterRecoverGroupId"].as_str().unwrap().to_string();
    let mut p = run_params("GT5.6XLARGE240");
    p["ClientToken"] = json!("same-token");
    p["LoginSettings"] = json!({"KeyIds": [akey]});
    let ains = alice.cvm("RunInstances", p).await.unwrap()["InstanceIdSet"][0]
        .as_str()
        .unwrap()
        .to_string();
    wait_state(&alice, &ains, "RUNNING").await;
    // Bob's own instance and key, for mixed calls.
    let bkey = bob
        .cvm(
            "CreateKeyPair",
            json!({"KeyName": "bobkey", "ProjectId": 0}),
        )
        .await
        .unwrap()["KeyPair"]["KeyId"]
        .as_str()
        .unwrap()
        .to_string();
    let bins = run_one(&bob, "GT5.6XLARGE240").await;
    wait_state(&bob, &bins, "RUNNING").await;

    let nf = "InvalidInstanceId.NotFound";
    let mut checked: BTreeSet<&str> = BTreeSet::new();
    let expect_code =
        |action: &'static str, params: Value, want: &'static str| (action, params, Some(want));
    let expect_ok = |action: &'static str, params: Value| (action, params, None);
    let calls: Vec<(&str, Value, Option<&str>)> = vec![
        expect_ok("DescribeRegions", json!({})),
        expect_ok("DescribeZones", json!({})),
        expect_ok("DescribeInstanceTypeConfigs", json!({})),
        expect_ok("DescribeZoneInstanceConfigInfos", json!({})),
        expect_ok("DescribeImages", json!({})),
        expect_code(
            "DescribeImages",
            json!({"ImageIds": ["img-alice001"]}),
            "OK-EMPTY",
        ),
        expect_code(
            "RunInstances",
            {
                let mut p = run_params("GT5.6XLARGE240");
                p["ImageId"] = json!("img-alice001");
                p
            },
            "InvalidImageId.NotFound",
        ),
        expect_code(
            "RunInstances",
            {
                let mut p = run_params("GT5.6XLARGE240");
                p["LoginSettings"] = json!({"KeyIds": [akey]});
                p
            },
            "InvalidParameterValue.KeyPairNotFound",
        ),
        expect_code(
            "RunInstances",
            {
                let mut p = run_params("GT5.6XLARGE240");
                p["DisasterRecoverGroupIds"] = json!([agrp]);
                p
            },
            "FailedOperation.DisasterRecoverGroupNotFound",
        ),
        expect_ok("RunInstances", {
            let mut p = run_params("GT5.6XLARGE240");
            p["ClientToken"] = json!("same-token");
            p
        }),
        expect_code(
            "DescribeInstances",
            json!({"InstanceIds": [ains]}),
            "OK-EMPTY",
        ),
        expect_code(
            "DescribeInstances",
            json!({"Filters": [{"Name": "instance-id", "Values": [ains]}]}),
            "OK-EMPTY",
        ),
        expect_code(
            "DescribeInstancesStatus",
            json!({"InstanceIds": [ains]}),
            "OK-EMPTY",
        ),
        expect_code("StartInstances", json!({"InstanceIds": [ains]}), nf),
        expect_code("StopInstances", json!({"InstanceIds": [ains]}), nf),
        expect_code("RebootInstances", json!({"InstanceIds": [ains]}), nf),
        expect_code("TerminateInstances", json!({"InstanceIds": [ains]}), nf),
        expect_code(
            "ResetInstancesType",
            json!({"InstanceIds": [ains], "InstanceType": "GT5.12XLARGE480"}),
            nf,
        ),
        expect_code(
            "ModifyInstancesAttribute",
            json!({"InstanceIds": [ains], "InstanceName": "pwned"}),
            nf,
        ),
        expect_ok(
            "CreateKeyPair",
            json!({"KeyName": "alicekey", "ProjectId": 0}),
        ),
        expect_ok(
            "ImportKeyPair",
            json!({"KeyName": "copy", "ProjectId": 0, "PublicKey": apub}),
        ),
        expect_code("DescribeKeyPairs", json!({"KeyIds": [akey]}), "OK-EMPTY"),
        expect_code(
            "DeleteKeyPairs",
            json!({"KeyIds": [akey]}),
            "InvalidKeyPairId.NotFound",
        ),
        expect_code(
            "ModifyKeyPairAttribute",
            json!({"KeyId": akey, "KeyName": "mine"}),
            "InvalidKeyPairId.NotFound",
        ),
        expect_code(
            "AssociateInstancesKeyPairs",
            json!({"InstanceIds": [ains], "KeyIds": [bkey]}),
            nf,
        ),
        expect_code(
            "AssociateInstancesKeyPairs",
            json!({"InstanceIds": [bins], "KeyIds": [akey], "ForceStop": true}),
            "InvalidKeyPairId.NotFound",
        ),
        expect_code(
            "DisassociateInstancesKeyPairs",
            json!({"InstanceIds": [ains], "KeyIds": [bkey]}),
            nf,
        ),
        expect_code("ResetInstance", json!({"InstanceId": ains}), nf),
        expect_code(
            "ResetInstancesPassword",
            json!({"InstanceIds": [ains], "Password": "Gpu-Cloud-2026x", "ForceStop": true}),
            nf,
        ),
        expect_code(
            "DisassociateInstancesKeyPairs",
            json!({"InstanceIds": [bins], "KeyIds": [akey], "ForceStop": true}),
            "InvalidKeyPairId.NotFound",
        ),
        expect_ok(
            "CreateDisasterRecoverGroup",
            json!({"Name": "g", "Type": "HOST", "ClientToken": "shared-token"}),
        ),
        expect_code(
            "DescribeDisasterRecoverGroups",
            json!({"DisasterRecoverGroupIds": [agrp]}),
            "OK-EMPTY",
        ),
        expect_code(
            "DeleteDisasterRecoverGroups",
            json!({"DisasterRecoverGroupIds": [agrp]}),
            "FailedOperation.DisasterRecoverGroupNotFound",
        ),
        expect_code(
            "InquiryPriceRunInstances",
            {
                let mut p = run_params("GT5.6XLARGE240");
                p["ImageId"] = json!("img-alice001");
                p
            },
            "InvalidImageId.NotFound",
        ),
        expect_code(
            "InquiryPriceResetInstancesType",
            json!({"InstanceIds": [ains], "InstanceType": "GT5.12XLARGE480"}),
            nf,
        ),
        expect_code("DescribeInstanceVncUrl", json!({"InstanceId": ains}), nf),
    ];
    // Alice's command invocation on her instance.
    let host = cloud
        .app
        .store
        .instance_get(&gpucloud_store::TenantScope::new(alice_app), &ains)
        .await
        .unwrap()
        .unwrap()
        .host_id
        .unwrap();
    cloud
        .app
        .store
        .invocation_create(
            &gpucloud_store::TenantScope::new(alice_app),
            &gpucloud_store::commands::NewInvocation {
                new_command: true,
                library_max: 500,
                command_id: "cmd-alice001".into(),
                invocation_id: "inv-alice001".into(),
                name: "alice".into(),
                description: String::new(),
                content: "aG9zdG5hbWU=".into(),
                command_type: "SHELL".into(),
                working_directory: "/root".into(),
                timeout_s: 60,
                username: "root".into(),
                saved: true,
                tasks: vec![("invt-alice001".into(), ains.clone(), host)],
            },
        )
        .await
        .unwrap();
    let tat =
        |action: &'static str, params: Value, want: Option<&'static str>| (action, params, want);
    let tat_calls = vec![
        tat(
            "RunCommand",
            json!({"Content": "aG9zdG5hbWU=", "InstanceIds": [ains]}),
            Some("ResourceNotFound.InstanceNotFound"),
        ),
        tat(
            "RunCommand",
            json!({"Content": "aG9zdG5hbWU=", "InstanceIds": [bins, ains]}),
            Some("ResourceNotFound.InstanceNotFound"),
        ),
        tat("DescribeInvocations", json!({}), Some("OK-EMPTY")),
        tat(
            "DescribeInvocations",
            json!({"InvocationIds": ["inv-alice001"]}),
            Some("OK-EMPTY"),
        ),
        tat("DescribeInvocationTasks", json!({}), Some("OK-EMPTY")),
        tat(
            "DescribeInvocationTasks",
            json!({"InvocationTaskIds": ["invt-alice001"]}),
            Some("OK-EMPTY"),
        ),
        tat(
            "DescribeInvocationTasks",
            json!({"Filters": [{"Name": "invocation-id", "Values": ["inv-alice001"]}]}),
            Some("OK-EMPTY"),
        ),
        tat("DescribeCommands", json!({}), Some("OK-EMPTY")),
        tat("DescribeAutomationAgentStatus", json!({}), Some("OK-EMPTY")),
        tat(
            "DescribeAutomationAgentStatus",
            json!({"InstanceIds": [ains]}),
            Some("OK-EMPTY"),
        ),
        tat(
            "DescribeCommands",
            json!({"CommandIds": ["cmd-alice001"]}),
            Some("OK-EMPTY"),
        ),
        tat(
            "DescribeCommands",
            json!({"Filters": [{"Name": "command-name", "Values": ["alice"]}]}),
            Some("OK-EMPTY"),
        ),
        tat(
            "ModifyCommand",
            json!({"CommandId": "cmd-alice001", "Description": "mine now"}),
            Some("ResourceNotFound.CommandNotFound"),
        ),
        tat(
            "InvokeCommand",
            json!({"CommandId": "cmd-alice001", "InstanceIds": [ains]}),
            Some("ResourceNotFound.CommandNotFound"),
        ),
        tat(
            "DeleteCommand",
            json!({"CommandId": "cmd-alice001"}),
            Some("ResourceNotFound.CommandNotFound"),
        ),
        tat(
            "DeleteCommands",
            json!({"CommandIds": ["cmd-alice001"]}),
            Some("ResourceNotFound.CommandNotFound"),
        ),
        // Names are per tenant: Bob may use Alice's.
        tat(
            "CreateCommand",
            json!({"CommandName": "alice", "Content": "aG9zdG5hbWU="}),
            None,
        ),
    ];
    let alice_ids = [
        ains.as_str(),
        akey.as_str(),
        agrp.as_str(),
        "img-alice001",
        "inv-alice001",
        "invt-alice001",
        "cmd-alice001",
    ];
    let tagged = calls
        .into_iter()
        .map(|c| ("cvm", c))
        .chain(tat_calls.into_iter().map(|c| ("tat", c)));
    for (service, (action, params, want)) in tagged {
        checked.insert(action);
        let r = if service == "cvm" {
            bob.cvm(action, params.clone()).await
        } else {
            bob.call("tat", "2020-10-28", action, &params).await
        };
        match (want, r) {
            (Some("OK-EMPTY"), Ok(v)) => {
                let total = v.get("TotalCount").cloned().unwrap_or(json!(0));
                assert_eq!(total, 0, "{action} {params} showed {v}");
                let text = v.to_string();
                for id in alice_ids {
                    assert!(!text.contains(id), "{action} leaked {id}: {text}");
                }
            }
            (Some(code), Err(e)) => assert_eq!(e.code(), Some(code), "{action} {params}: {e}"),
            (None, Ok(v)) => {
                let text = v.to_string();
                for id in alice_ids {
                    assert!(!text.contains(id), "{action} leaked {id}: {text}");
                }
            }
            (want, got) => panic!("{action} {params}: wanted {want:?}, got {got:?}"),
        }
    }
    let all: BTreeSet<&str> = gpucloud_server::api::dispatch::ACTIONS
        .iter()
        .map(|(_, _, a)| *a)
        .collect();
    let missing: Vec<&&str> = all.difference(&checked).collect();
    assert!(
        missing.is_empty(),
        "actions without a tenant-wall check: {missing:?}"
    );
    // Alice's things are untouched.
    let i = alice
        .cvm("DescribeInstances", json!({"InstanceIds": [ains]}))
        .await
        .unwrap();
    assert_eq!(i["InstanceSet"][0]["InstanceState"], "RUNNING");
    assert_ne!(i["InstanceSet"][0]["InstanceName"], "pwned");
    let k = alice
        .cvm("DescribeKeyPairs", json!({"KeyIds": [akey]}))
        .await
        .unwrap();
    assert_eq!(k["KeyPairSet"][0]["KeyName"], "alicekey");
    let g = alice
        .cvm(
            "DescribeDisasterRecoverGroups",
            json!({"DisasterRecoverGroupIds": [agrp]}),
        )
        .await
        .unwrap();
    assert_eq!(g["TotalCount"], 1);
}
