//! TAT 2020-10-28 wire types (service `tat`): commands run inside instances
//! without logging in.

use crate::cvm::Tag;
use crate::params::lenient;
use crate::Filter;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Service name in the credential scope.
pub const SERVICE: &str = "tat";
/// API version.
pub const VERSION: &str = "2020-10-28";

/// `RunCommand`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct RunCommandRequest {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub content: Option<String>,
    #[serde(default)]
    pub instance_ids: Option<Vec<String>>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub command_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub description: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub command_type: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub working_directory: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub timeout: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub save_command: Option<bool>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub enable_parameter: Option<bool>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub default_parameters: Option<String>,
    #[serde(default)]
    pub default_parameter_confs: Option<Value>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub parameters: Option<String>,
    #[serde(default)]
    pub tags: Option<Vec<Tag>>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub username: Option<String>,
    #[serde(
        default,
        rename = "OutputCOSBucketUrl",
        deserialize_with = "lenient::opt_string"
    )]
    pub output_cos_bucket_url: Option<String>,
    #[serde(
        default,
        rename = "OutputCOSKeyPrefix",
        deserialize_with = "lenient::opt_string"
    )]
    pub output_cos_key_prefix: Option<String>,
}

/// Answer of `RunCommand`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunCommandResponse {
    pub command_id: String,
    pub invocation_id: String,
}

/// `DescribeInvocations`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct DescribeInvocationsRequest {
    #[serde(default)]
    pub invocation_ids: Option<Vec<String>>,
    #[serde(default)]
    pub filters: Option<Vec<Filter>>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub limit: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub offset: Option<i64>,
}

/// One task of an invocation, in brief.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InvocationTaskBasicInfo {
    pub invocation_task_id: String,
    pub task_status: String,
    pub instance_id: String,
}

/// An invocation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Invocation {
    pub invocation_id: String,
    pub command_id: String,
    pub command_name: String,
    pub invocation_status: String,
    pub invocation_task_basic_info_set: Vec<InvocationTaskBasicInfo>,
    pub description: String,
    pub start_time: String,
    pub end_time: String,
    pub created_time: String,
    pub updated_time: String,
    pub parameters: String,
    pub default_parameters: String,
    pub instance_kind: String,
    pub username: String,
    pub invocation_source: String,
    pub command_content: String,
    pub command_type: String,
    pub timeout: i64,
    pub working_directory: String,
    #[serde(rename = "OutputCOSBucketUrl")]
    pub output_cos_bucket_url: String,
    #[serde(rename = "OutputCOSKeyPrefix")]
    pub output_cos_key_prefix: String,
}

/// Answer of `DescribeInvocations`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeInvocationsResponse {
    pub total_count: i64,
    pub invocation_set: Vec<Invocation>,
}

/// `DescribeInvocationTasks`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct DescribeInvocationTasksRequest {
    #[serde(default)]
    pub invocation_task_ids: Option<Vec<String>>,
    #[serde(default)]
    pub filters: Option<Vec<Filter>>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub limit: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub offset: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub hide_output: Option<bool>,
}

/// Result of a task.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskResult {
    pub exit_code: i64,
    pub output: String,
    pub exec_start_time: String,
    pub exec_end_time: String,
    pub dropped: i64,
    pub output_url: String,
    #[serde(rename = "OutputUploadCOSErrorInfo")]
    pub output_upload_cos_error_info: String,
}

/// The command a task ran.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CommandDocument {
    pub content: String,
    pub command_type: String,
    pub timeout: i64,
    pub working_directory: String,
    pub username: String,
    #[serde(rename = "OutputCOSBucketUrl")]
    pub output_cos_bucket_url: String,
    #[serde(rename = "OutputCOSKeyPrefix")]
    pub output_cos_key_prefix: String,
}

/// A task: one instance of one invocation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InvocationTask {
    pub invocation_id: String,
    pub invocation_task_id: String,
    pub command_id: String,
    pub task_status: String,
    pub instance_id: String,
    pub task_result: TaskResult,
    pub start_time: String,
    pub end_time: String,
    pub created_time: String,
    pub updated_time: String,
    pub command_document: CommandDocument,
    pub error_info: String,
    pub invocation_source: String,
    pub command_name: String,
}

/// Answer of `DescribeInvocationTasks`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeInvocationTasksResponse {
    pub total_count: i64,
    pub invocation_task_set: Vec<InvocationTask>,
}

/// `CreateCommand`: a command saved in the tenant's library.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct CreateCommandRequest {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub command_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub content: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub description: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub command_type: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub working_directory: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub timeout: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub enable_parameter: Option<bool>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub default_parameters: Option<String>,
    #[serde(default)]
    pub default_parameter_confs: Option<Value>,
    #[serde(default)]
    pub tags: Option<Vec<Tag>>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub username: Option<String>,
    #[serde(
        default,
        rename = "OutputCOSBucketUrl",
        deserialize_with = "lenient::opt_string"
    )]
    pub output_cos_bucket_url: Option<String>,
    #[serde(
        default,
        rename = "OutputCOSKeyPrefix",
        deserialize_with = "lenient::opt_string"
    )]
    pub output_cos_key_prefix: Option<String>,
}

/// Answer of `CreateCommand`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateCommandResponse {
    pub command_id: String,
}

/// `DescribeCommands`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct DescribeCommandsRequest {
    #[serde(default)]
    pub command_ids: Option<Vec<String>>,
    #[serde(default)]
    pub filters: Option<Vec<Filter>>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub limit: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub offset: Option<i64>,
}

/// A saved command.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Command {
    pub command_id: String,
    pub command_name: String,
    pub description: String,
    pub content: String,
    pub command_type: String,
    pub working_directory: String,
    pub timeout: i64,
    pub created_time: String,
    pub updated_time: String,
    pub enable_parameter: bool,
    pub default_parameters: String,
    pub default_parameter_confs: Vec<Value>,
    pub scenes: Vec<String>,
    pub formatted_description: String,
    pub created_by: String,
    pub tags: Vec<Tag>,
    pub username: String,
    #[serde(rename = "OutputCOSBucketUrl")]
    pub output_cos_bucket_url: String,
    #[serde(rename = "OutputCOSKeyPrefix")]
    pub output_cos_key_prefix: String,
}

/// Answer of `DescribeCommands`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeCommandsResponse {
    pub total_count: i64,
    pub command_set: Vec<Command>,
}

/// `ModifyCommand`: only the fields given change.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ModifyCommandRequest {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub command_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub command_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub description: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub content: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub command_type: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub working_directory: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub timeout: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub default_parameters: Option<String>,
    #[serde(default)]
    pub default_parameter_confs: Option<Value>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub username: Option<String>,
    #[serde(
        default,
        rename = "OutputCOSBucketUrl",
        deserialize_with = "lenient::opt_string"
    )]
    pub output_cos_bucket_url: Option<String>,
    #[serde(
        default,
        rename = "OutputCOSKeyPrefix",
        deserialize_with = "lenient::opt_string"
    )]
    pub output_cos_key_prefix: Option<String>,
}

/// `DeleteCommand`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct DeleteCommandRequest {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub command_id: Option<String>,
}

/// `DeleteCommands`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct DeleteCommandsRequest {
    #[serde(default)]
    pub command_ids: Option<Vec<String>>,
}

/// `InvokeCommand`: runs a saved command; `Username`, `WorkingDirectory`
/// and `Timeout` override the command's for this run.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct InvokeCommandRequest {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub command_id: Option<String>,
    #[serde(default)]
    pub instance_ids: Option<Vec<String>>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub parameters: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub username: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub working_directory: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub timeout: Option<i64>,
    #[serde(
        default,
        rename = "OutputCOSBucketUrl",
        deserialize_with = "lenient::opt_string"
    )]
    pub output_cos_bucket_url: Option<String>,
    #[serde(
        default,
        rename = "OutputCOSKeyPrefix",
        deserialize_with = "lenient::opt_string"
    )]
    pub output_cos_key_prefix: Option<String>,
}

/// Answer of `InvokeCommand`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InvokeCommandResponse {
    pub invocation_id: String,
}

/// `DescribeAutomationAgentStatus`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct DescribeAutomationAgentStatusRequest {
    #[serde(default)]
    pub instance_ids: Option<Vec<String>>,
    #[serde(default)]
    pub filters: Option<Vec<Filter>>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub limit: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub offset: Option<i64>,
}

/// The command agent of one instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AutomationAgentInfo {
    pub instance_id: String,
    pub version: String,
    pub last_heartbeat_time: String,
    pub agent_status: String,
    pub environment: String,
    pub support_features: Vec<String>,
}

/// Answer of `DescribeAutomationAgentStatus`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeAutomationAgentStatusResponse {
    pub automation_agent_set: Vec<AutomationAgentInfo>,
    pub total_count: i64,
}
