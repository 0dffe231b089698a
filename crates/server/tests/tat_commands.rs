//! The TAT command library in process: every refusal has TAT's own error
//! code, and the library's rules (unique names, all-or-none deletes,
//! invocations only where an agent can run them) hold.

mod common;

use common::*;
use serde_json::{json, Value};

async fn tat(
    c: &gpucloud_client::Client,
    action: &str,
    p: Value,
) -> Result<Value, gpucloud_client::ClientError> {
    c.call("tat", "2020-10-28", action, &p).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_library_refuses_bad_input_with_tat_codes() {
    let cloud = TestCloud::start("1*CPU").await;
    let (a, _) = cloud.tenant("a").await;
    let ok = "ZWNobyBoaQ==";
    let create = |p: Value| {
        let a = a.clone();
        async move { tat(&a, "CreateCommand", p).await }
    };

    // CreateCommand.
    let refusals = [
        (json!({"Content": ok}), "MissingParameter"),
        (json!({"CommandName": "x"}), "MissingParameter"),
        (
            json!({"CommandName": "no spaces", "Content": ok}),
            "InvalidParameterValue.InvalidCommandName",
        ),
        (
            json!({"CommandName": "x".repeat(61), "Content": ok}),
            "InvalidParameterValue.InvalidCommandName",
        ),
        (
            json!({"CommandName": "x", "Content": "not base64!"}),
            "InvalidParameterValue.InvalidContent",
        ),
        (
            json!({"CommandName": "x", "Content": "ICAK"}),
            "InvalidParameterValue.InvalidContent",
        ),
        (
            json!({"CommandName": "x", "Content": ok, "Description": "d".repeat(121)}),
            "InvalidParameterValue",
        ),
        (
            json!({"CommandName": "x", "Content": ok, "Timeout": 0}),
            "InvalidParameterValue.Range",
        ),
        (
            json!({"CommandName": "x", "Content": ok, "Timeout": 86401}),
            "InvalidParameterValue.Range",
        ),
        (
            json!({"CommandName": "x", "Content": ok, "CommandType": "POWERSHELL"}),
            "InvalidParameterValue.AgentUnsupportedCommandType",
        ),
        (
            json!({"CommandName": "x", "Content": ok, "Username": "Root!"}),
            "InvalidParameterValue.InvalidUsername",
        ),
        (
            json!({"CommandName": "x", "Content": ok, "WorkingDirectory": "tmp"}),
            "InvalidParameterValue.InvalidWorkingDirectory",
        ),
        (
            json!({"CommandName": "x", "Content": ok, "WorkingDirectory": "/proc/self/fd/7"}),
            "InvalidParameterValue.InvalidWorkingDirectory",
        ),
        (
            json!({"CommandName": "x", "Content": ok, "WorkingDirectory": "/root/../../etc"}),
            "InvalidParameterValue.InvalidWorkingDirectory",
        ),
        (
            json!({"CommandName": "x", "Content": ok, "EnableParameter": true}),
            "UnsupportedOperation",
        ),
        (
            json!({"CommandName": "x", "Content": ok, "Bogus": 1}),
            "UnknownParameter",
        ),
    ];
    for (p, want) in refusals {
        assert_eq!(code(create(p.clone()).await), want, "{p}");
    }
    // Nothing was saved by the refusals.
    let all = tat(&a, "DescribeCommands", json!({})).await.unwrap();
    assert_eq!(all["TotalCount"], 0, "{all}");

    let id = create(json!({"CommandName": "probe", "Content": ok, "Timeout": "30"}))
        .await
        .unwrap()["CommandId"]
        .as_str()
        .unwrap()
        .to_string();
    let other = create(json!({"CommandName": "other", "Content": ok}))
        .await
        .unwrap()["CommandId"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        code(create(json!({"CommandName": "probe", "Content": ok})).await),
        "InvalidParameterValue.CommandNameDuplicated"
    );

    // DescribeCommands.
    let d = tat(&a, "DescribeCommands", json!({"CommandIds": [id]}))
        .await
        .unwrap();
    let c = &d["CommandSet"][0];
    assert_eq!(
        (
            c["CommandName"].as_str(),
            c["Timeout"].as_i64(),
            c["CreatedBy"].as_str(),
            c["WorkingDirectory"].as_str()
        ),
        (Some("probe"), Some(30), Some("USER"), Some("/root"))
    );
    let describe = |p: Value| {
        let a = a.clone();
        async move { tat(&a, "DescribeCommands", p).await }
    };
    for (p, want) in [
        (
            json!({"CommandIds": ["cmd-"]}),
            "InvalidParameterValue.InvalidCommandId",
        ),
        (
            json!({"CommandIds": [id], "Filters": [{"Name": "command-name", "Values": ["probe"]}]}),
            "InvalidParameter.ConflictParameter",
        ),
        (
            json!({"Filters": [{"Name": "owner", "Values": ["me"]}]}),
            "InvalidFilter",
        ),
        (
            json!({"Filters": [{"Name": "command-name", "Values": ["a", "b", "c", "d", "e", "f"]}]}),
            "LimitExceeded.FilterValueExceeded",
        ),
        (json!({"Limit": 101}), "InvalidParameterValue.Range"),
    ] {
        assert_eq!(code(describe(p.clone()).await), want, "{p}");
    }
    let by = |v: &str| json!({"Filters": [{"Name": "created-by", "Values": [v]}]});
    assert_eq!(describe(by("TAT")).await.unwrap()["TotalCount"], 0);
    assert_eq!(describe(by("USER")).await.unwrap()["TotalCount"], 2);
    let page = describe(json!({"Limit": 1, "Offset": 1})).await.unwrap();
    assert_eq!(
        (
            page["TotalCount"].as_i64(),
            page["CommandSet"].as_array().map(Vec::len)
        ),
        (Some(2), Some(1))
    );
    let typed = json!({"Filters": [{"Name": "command-type", "Values": ["POWERSHELL"]}]});
    assert_eq!(describe(typed).await.unwrap()["TotalCount"], 0);

    // ModifyCommand.
    let modify = |p: Value| {
        let a = a.clone();
        async move { tat(&a, "ModifyCommand", p).await }
    };
    assert_eq!(
        code(modify(json!({"Description": "x"})).await),
        "MissingParameter"
    );
    assert_eq!(
        code(modify(json!({"CommandId": "cmd-nothere1", "Description": "x"})).await),
        "ResourceNotFound.CommandNotFound"
    );
    assert_eq!(
        code(modify(json!({"CommandId": id, "CommandName": "other"})).await),
        "InvalidParameterValue.CommandNameDuplicated"
    );
    assert_eq!(
        code(modify(json!({"CommandId": id, "Timeout": -1})).await),
        "InvalidParameterValue.Range"
    );
    modify(json!({"CommandId": id, "CommandName": "probe2", "Description": "renamed"}))
        .await
        .unwrap();
    let d = tat(&a, "DescribeCommands", json!({"CommandIds": [id]}))
        .await
        .unwrap();
    assert_eq!(
        (
            d["CommandSet"][0]["CommandName"].as_str(),
            d["CommandSet"][0]["Description"].as_str(),
            d["CommandSet"][0]["Timeout"].as_i64()
        ),
        (Some("probe2"), Some("renamed"), Some(30))
    );

    // InvokeCommand: the instance must exist and have an agent.
    let ins = run_one(&a, "S5.SMALL2").await;
    wait_state(&a, &ins, "RUNNING").await;
    let invoke = |p: Value| {
        let a = a.clone();
        async move { tat(&a, "InvokeCommand", p).await }
    };
    assert_eq!(
        code(invoke(json!({"InstanceIds": [ins]})).await),
        "MissingParameter"
    );
    assert_eq!(
        code(invoke(json!({"CommandId": id})).await),
        "MissingParameter"
    );
    assert_eq!(
        code(invoke(json!({"CommandId": "cmd-nothere1", "InstanceIds": [ins]})).await),
        "ResourceNotFound.CommandNotFound"
    );
    assert_eq!(
        code(invoke(json!({"CommandId": id, "InstanceIds": ["ins-nothere1"]})).await),
        "ResourceNotFound.InstanceNotFound"
    );
    assert_eq!(
        code(invoke(json!({"CommandId": id, "InstanceIds": [ins], "Parameters": "{}"})).await),
        "UnsupportedOperation"
    );
    assert_eq!(
        code(invoke(json!({"CommandId": id, "InstanceIds": [ins], "Timeout": 0})).await),
        "InvalidParameterValue.Range"
    );
    // A simulated host runs no commands: no agent to list.
    let agents = tat(
        &a,
        "DescribeAutomationAgentStatus",
        json!({"InstanceIds": [ins]}),
    )
    .await
    .unwrap();
    assert_eq!(agents["TotalCount"], 0, "{agents}");
    assert_eq!(
        code(
            tat(
                &a,
                "DescribeAutomationAgentStatus",
                json!({"InstanceIds": [ins], "Filters": [{"Name": "agent-status", "Values": ["Online"]}]})
            )
            .await
        ),
        "InvalidParameter.ConflictParameter"
    );
    assert_eq!(
        code(
            tat(
                &a,
                "DescribeAutomationAgentStatus",
                json!({"Filters": [{"Name": "agent-version", "Values": ["1"]}]})
            )
            .await
        ),
        "InvalidFilter"
    );
    assert_eq!(
        code(invoke(json!({"CommandId": id, "InstanceIds": [ins]})).await),
        "ResourceUnavailable.AgentNotInstalled"
    );
    // RunCommand's SaveCommand follows the library's rules.
    assert_eq!(
        code(
            tat(
                &a,
                "RunCommand",
                json!({"Content": ok, "InstanceIds": [ins], "SaveCommand": true})
            )
            .await
        ),
        "MissingParameter"
    );
    assert_eq!(
        code(tat(&a, "RunCommand", json!({"Content": ok, "InstanceIds": [ins], "SaveCommand": true, "CommandName": "other"})).await),
        "ResourceUnavailable.AgentNotInstalled"
    );

    // DeleteCommands is all or none; DeleteCommand takes one.
    assert_eq!(
        code(
            tat(
                &a,
                "DeleteCommands",
                json!({"CommandIds": [id, "cmd-nothere1"]})
            )
            .await
        ),
        "ResourceNotFound.CommandNotFound"
    );
    assert_eq!(
        tat(&a, "DescribeCommands", json!({})).await.unwrap()["TotalCount"],
        2
    );
    assert_eq!(
        code(tat(&a, "DeleteCommands", json!({})).await),
        "MissingParameter"
    );
    tat(&a, "DeleteCommands", json!({"CommandIds": [id, other]}))
        .await
        .unwrap();
    assert_eq!(
        tat(&a, "DescribeCommands", json!({})).await.unwrap()["TotalCount"],
        0
    );
    assert_eq!(
        code(tat(&a, "DeleteCommand", json!({"CommandId": id})).await),
        "ResourceNotFound.CommandNotFound"
    );
    // The name is free again.
    create(json!({"CommandName": "probe2", "Content": ok}))
        .await
        .unwrap();
}
