//! The one domain error type, and the one place it becomes a Tencent error:
//! [`CloudError::code`] gives the stable code, [`CloudError::message`] a
//! message in the caller's language that says what to do next.
//!
//! Another tenant's resource is always reported as not found — never as
//! forbidden — so its existence does not leak.

use crate::lifecycle::InstanceState;
use gpucloud_api_types::Language;

/// Everything that can go wrong in a request, as the caller should see it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CloudError {
    // --- protocol and authentication -------------------------------------
    /// The `Authorization` header is malformed.
    #[error("the Authorization header is malformed: {0}")]
    InvalidAuthorization(String),
    /// No such SecretId (or it is disabled).
    #[error("SecretId {0} does not exist or is disabled")]
    SecretIdNotFound(String),
    /// The request timestamp is outside the ±300 s window.
    #[error(
        "request timestamp {timestamp} is more than 300 s away from the server time {server_time}"
    )]
    SignatureExpire {
        /// Request timestamp (Unix seconds).
        timestamp: i64,
        /// Server time.
        server_time: i64,
    },
    /// The signature does not match.
    #[error("the request signature does not match")]
    SignatureFailure,
    /// A temporary-credential token was sent but gpucloud issued none.
    #[error("the security token is invalid")]
    TokenFailure,
    /// Unknown action.
    #[error("action {action} does not exist in service {service} version {version}")]
    InvalidAction {
        /// Service.
        service: String,
        /// Version.
        version: String,
        /// Action.
        action: String,
    },
    /// Unknown version of a known service.
    #[error("version {version} of service {service} does not exist")]
    NoSuchVersion {
        /// Service.
        service: String,
        /// Version.
        version: String,
    },
    /// Unknown service.
    #[error("service {0} does not exist")]
    NoSuchProduct(String),
    /// A region this cloud does not serve.
    #[error("region {region} is not served here; this cloud serves {served}")]
    UnsupportedRegion {
        /// Requested.
        region: String,
        /// Served.
        served: String,
    },
    /// Body too large.
    #[error("the request body exceeds {limit} bytes")]
    RequestSizeLimitExceeded {
        /// Limit in bytes.
        limit: usize,
    },
    /// The request cannot be read at all (content type, body).
    #[error("the request cannot be read: {0}")]
    InvalidRequest(String),
    /// A parameter the action does not have.
    #[error("the parameter {0} is not recognized")]
    UnknownParameter(String),
    /// A required parameter is missing.
    #[error("the parameter {0} is required")]
    MissingParameter(String),
    /// A parameter has the wrong type or shape.
    #[error("the parameter {name} is invalid: {detail}")]
    InvalidParameter {
        /// Parameter path.
        name: String,
        /// What is wrong.
        detail: String,
    },
    /// A parameter value is not acceptable.
    #[error("the value of {name} is invalid: {detail}")]
    InvalidParameterValue {
        /// Parameter path.
        name: String,
        /// What is wrong.
        detail: String,
    },
    /// A value outside its range.
    #[error("{name} must be between {min} and {max}, got {value}")]
    Range {
        /// Parameter.
        name: String,
        /// Minimum.
        min: i64,
        /// Maximum.
        max: i64,
        /// Given.
        value: i64,
    },
    /// Parameters that cannot be used together.
    #[error("{0}")]
    ParameterCombination(String),
    /// Too many items in a list parameter.
    #[error("{name} accepts at most {max} items, got {given}")]
    TooManyValues {
        /// Parameter.
        name: String,
        /// Maximum.
        max: usize,
        /// Given.
        given: usize,
    },
    /// Too many values in one filter.
    #[error("{name} accepts at most {max} values, got {given}")]
    FilterValuesLimit {
        /// The filter's `Values` parameter.
        name: String,
        /// Maximum.
        max: usize,
        /// Given.
        given: usize,
    },
    /// Unknown filter name.
    #[error("filter {name} is not supported; supported filters: {supported}")]
    InvalidFilter {
        /// Filter name.
        name: String,
        /// Supported names.
        supported: String,
    },

    // --- instances ---------------------------------------------------------
    /// An instance ID with the wrong shape.
    #[error("instance ID {0} is malformed; instance IDs look like ins-xxxxxxxx")]
    InstanceIdMalformed(String),
    /// Instances that do not exist (or belong to another tenant).
    #[error("instances not found: {}", .0.join(", "))]
    InstanceNotFound(Vec<String>),
    /// The instance's state does not allow the action.
    #[error("instance {id} is {state:?}; {action} is not possible in that state")]
    InstanceState {
        /// Instance.
        id: String,
        /// Its state.
        state: InstanceState,
        /// The refused action.
        action: String,
    },
    /// The instance is not in a state the action accepts, where the action
    /// has no state-specific code (`DescribeInstanceVncUrl` while starting …).
    #[error("instance {id} is {state:?}; {action} needs it RUNNING")]
    InstanceNotRunning {
        /// Instance.
        id: String,
        /// Its state.
        state: InstanceState,
        /// The refused action.
        action: String,
    },
    /// The serial console (`DescribeInstanceVncUrl`) exists for VM instances only.
    #[error("instance {id} runs on the {runtime} runtime; the serial console exists for VM instances only")]
    ConsoleVmOnly {
        /// Instance.
        id: String,
        /// Its runtime (`container`, `sim`).
        runtime: String,
    },
    /// Another operation is still running on the instance.
    #[error("instance {id} is busy with {operation}")]
    OperationInProgress {
        /// Instance.
        id: String,
        /// The running operation.
        operation: String,
    },
    /// Termination protection.
    #[error("instance {0} has termination protection enabled")]
    InstancesProtected(String),
    /// One TerminateInstances call mixed prepaid and pay-as-you-go instances.
    #[error("mixed pricing models")]
    InstanceMixedPricingModel,
    /// `InstanceType` has the wrong shape.
    #[error("instance type {0} is malformed")]
    InstanceTypeMalformed(String),
    /// Unknown instance type.
    #[error("instance type {0} does not exist")]
    InstanceTypeNotFound(String),
    /// The zone does not offer the type.
    #[error("zone {zone} does not offer instance type {instance_type}")]
    InstanceTypeUnavailable {
        /// Type.
        instance_type: String,
        /// Zone.
        zone: String,
    },
    /// Not enough free capacity.
    #[error("not enough capacity for {instance_type} in {zone}: {detail}")]
    InsufficientCapacity {
        /// Type.
        instance_type: String,
        /// Zone.
        zone: String,
        /// What is missing, for a human.
        detail: String,
    },
    /// Changing between GPU families or to/from a GPU type is not allowed.
    #[error("cannot change instance {id} from {from} to {to}: {reason:?}")]
    InvalidTypeChange {
        /// Instance.
        id: String,
        /// Current type.
        from: String,
        /// Requested type.
        to: String,
        /// Why.
        reason: TypeChangeRefusal,
    },
    /// Unknown zone.
    #[error("zone {zone} does not exist in region {region}")]
    ZoneNotFound {
        /// Zone.
        zone: String,
        /// Region.
        region: String,
    },
    /// Instance name too long.
    #[error("instance name is longer than {0} characters")]
    InstanceNameTooLong(usize),
    /// Illegal host name.
    #[error("host name {0} is illegal")]
    IllegalHostName(String),
    /// Client token too long.
    #[error("ClientToken is longer than 64 ASCII characters")]
    ClientTokenTooLong,
    /// Password does not meet the rules.
    #[error("the password does not meet the rules: {0}")]
    InvalidPassword(String),
    /// UserData is not base64.
    #[error("UserData is not valid base64: {0}")]
    InvalidUserData(String),
    /// UserData is too large.
    #[error("UserData decodes to {size} bytes; at most {limit} bytes are allowed")]
    UserDataTooLarge {
        /// Decoded size.
        size: usize,
        /// Limit.
        limit: usize,
    },
    /// Prepaid period not sold.
    #[error("period {0} months is not offered")]
    InvalidPeriod(i64),
    /// `STOP_CHARGING` on an instance that is not pay-as-you-go.
    #[error("instance {0} is not pay-as-you-go; STOP_CHARGING does not apply")]
    StopChargingNotSupported(String),
    /// The tenant's instance quota is exhausted.
    #[error("instance quota exceeded: {used} of {quota} used, {requested} requested")]
    InstanceQuota {
        /// Quota.
        quota: i64,
        /// In use.
        used: i64,
        /// Requested.
        requested: i64,
    },

    // --- images --------------------------------------------------------------
    /// Image ID with the wrong shape.
    #[error("image ID {0} is malformed")]
    ImageIdMalformed(String),
    /// Unknown image.
    #[error("image {0} does not exist")]
    ImageNotFound(String),
    /// No host in the zone can run the image's runtime.
    #[error("image {image} needs the {runtime} runtime, which no host in {zone} offers")]
    ImageRuntimeUnavailable {
        /// Image.
        image: String,
        /// Runtime it needs.
        runtime: String,
        /// Zone.
        zone: String,
    },

    // --- key pairs -------------------------------------------------------------
    /// Key pair ID with the wrong shape.
    #[error("key pair ID {0} is malformed")]
    KeyPairIdMalformed(String),
    /// Key pairs that do not exist.
    #[error("key pairs not found: {}", .0.join(", "))]
    KeyPairNotFound(Vec<String>),
    /// `LoginSettings.KeyIds` names a key pair that does not exist.
    #[error("key pair {0} given in LoginSettings.KeyIds does not exist")]
    LoginKeyPairNotFound(String),
    /// Name taken.
    #[error("a key pair named {0} already exists")]
    KeyPairNameDuplicate(String),
    /// Empty name.
    #[error("KeyName must not be empty")]
    KeyPairNameEmpty,
    /// Illegal characters.
    #[error("KeyName {0} may only contain letters, digits and underscores")]
    KeyPairNameIllegal(String),
    /// Too long.
    #[error("KeyName {0} is longer than 25 characters")]
    KeyPairNameTooLong(String),
    /// Too many key pairs.
    #[error("at most {0} key pairs per account")]
    KeyPairLimit(i64),
    /// Public key unreadable.
    #[error("the public key is not a valid OpenSSH public key: {0}")]
    PublicKeyMalformed(String),
    /// Public key already imported.
    #[error("this public key is already imported as {0}")]
    PublicKeyDuplicate(String),
    /// Key pair still associated.
    #[error("key pair {key} is associated with instances {}", .instances.join(", "))]
    KeyPairInUse {
        /// Key pair.
        key: String,
        /// Instances.
        instances: Vec<String>,
    },
    /// Unknown project.
    #[error("project {0} does not exist")]
    ProjectNotFound(i64),

    // --- placement groups --------------------------------------------------
    /// Unknown spread group.
    #[error("disaster recover group {0} does not exist")]
    PlacementGroupNotFound(String),
    /// Spread group ID with the wrong shape.
    #[error("disaster recover group ID {0} is malformed")]
    PlacementGroupIdMalformed(String),
    /// The group is full.
    #[error("disaster recover group {id} holds at most {quota} instances")]
    PlacementGroupQuota {
        /// Group.
        id: String,
        /// Quota.
        quota: i64,
    },
    /// The group still holds instances.
    #[error("disaster recover group {0} still holds instances")]
    PlacementGroupNotEmpty(String),

    // --- networking ----------------------------------------------------------
    /// Unknown VPC.
    #[error("VPC {0} does not exist")]
    VpcNotFound(String),
    /// Unknown subnet.
    #[error("subnet {0} does not exist")]
    SubnetNotFound(String),
    /// A value longer than its parameter allows.
    #[error("{name} is longer than {max} characters")]
    ValueTooLong { name: String, max: usize },
    /// A time that is not `YYYY-MM-DD hh:mm:ss`.
    #[error("{name}: `{value}` is not a time")]
    InvalidTimeFormat { name: String, value: String },
    /// A VPC ID that is not shaped like one.
    #[error("malformed VPC ID {0}")]
    VpcIdMalformed(String),
    /// A subnet ID that is not shaped like one.
    #[error("malformed subnet ID {0}")]
    SubnetIdMalformed(String),
    /// The subnet is in another VPC.
    #[error("subnet {subnet} is not in {vpc}")]
    VpcSubnetMismatch { subnet: String, vpc: String },
    /// The subnet is in another zone.
    #[error("subnet {subnet} is in {subnet_zone}, not {zone}")]
    SubnetZoneMismatch {
        subnet: String,
        subnet_zone: String,
        zone: String,
    },
    /// Unknown security group.
    #[error("security group {0} does not exist")]
    SecurityGroupNotFound(String),
    /// No free IP in the subnet.
    #[error("subnet {0} has no free IP address")]
    SubnetFull(String),

    // --- commands (TAT) ----------------------------------------------------
    /// An instance ID with the wrong shape (TAT spelling).
    #[error("instance ID {0} is invalid")]
    TatInvalidInstanceId(String),
    /// Instances not found (TAT spelling).
    #[error("instances not found: {}", .0.join(", "))]
    TatInstanceNotFound(Vec<String>),
    /// The command content is not usable.
    #[error("the command content is invalid: {0}")]
    TatInvalidContent(String),
    /// The instance is not running.
    #[error("instance {0} is not running")]
    TatInstanceNotRunning(String),
    /// The instance's host has no command agent.
    #[error("instance {id} has no command agent: {reason}")]
    TatAgentNotInstalled {
        /// Instance.
        id: String,
        /// Why.
        reason: String,
    },
    /// The instance's host agent is not reachable.
    #[error("the agent of instance {0} is offline")]
    TatAgentOffline(String),
    /// Command type not supported.
    #[error("command type {0} is not supported")]
    TatUnsupportedCommandType(String),
    /// Working directory not acceptable.
    #[error("working directory {0} is invalid")]
    TatInvalidWorkingDirectory(String),
    /// User name not acceptable.
    #[error("user name {0} is invalid")]
    TatInvalidUsername(String),
    /// Command name not acceptable.
    #[error("command name {0} is invalid")]
    TatInvalidCommandName(String),
    /// Invocation ID with the wrong shape.
    #[error("invocation ID {0} is invalid")]
    TatInvalidInvocationId(String),
    /// Invocation task ID with the wrong shape.
    #[error("invocation task ID {0} is invalid")]
    TatInvalidInvocationTaskId(String),
    /// Two TAT parameters that exclude each other (`…Ids` and `Filters`).
    #[error("{0} and {1} cannot be used together")]
    TatConflictParameter(&'static str, &'static str),
    /// Command ID with the wrong shape.
    #[error("command ID {0} is invalid")]
    TatInvalidCommandId(String),
    /// No such saved command (or another tenant's).
    #[error("command {0} not found")]
    TatCommandNotFound(String),
    /// A saved command of this tenant has the name already.
    #[error("a command named {0} exists")]
    TatCommandNameDuplicated(String),
    /// The tenant's command library is full.
    #[error("at most {0} saved commands")]
    TatCommandQuota(i64),
    /// Too many values in one TAT filter.
    #[error("{name} accepts at most {max} values, got {given}")]
    TatFilterValuesLimit {
        /// The filter's `Values` parameter.
        name: String,
        /// Maximum.
        max: usize,
        /// Given.
        given: usize,
    },

    // --- generic --------------------------------------------------------------
    /// A feature gpucloud does not offer.
    #[error("{0} is not supported")]
    Unsupported(String),
    /// An internal failure; details are logged, never sent.
    #[error("internal error")]
    Internal,
}

/// Why an instance type change is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeChangeRefusal {
    /// A CPU-only instance cannot become a GPU instance.
    CpuToGpu,
    /// A GPU instance can only change within GPU families of the same GPU model.
    GpuFamilyChange,
}

impl CloudError {
    /// Shorthand for an [`CloudError::InvalidParameterValue`].
    pub fn value(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::InvalidParameterValue {
            name: name.into(),
            detail: detail.into(),
        }
    }

    /// The Tencent error code.
    pub fn code(&self) -> &'static str {
        use CloudError::*;
        match self {
            InvalidAuthorization(_) => "AuthFailure.InvalidAuthorization",
            SecretIdNotFound(_) => "AuthFailure.SecretIdNotFound",
            SignatureExpire { .. } => "AuthFailure.SignatureExpire",
            SignatureFailure => "AuthFailure.SignatureFailure",
            TokenFailure => "AuthFailure.TokenFailure",
            InvalidAction { .. } => "InvalidAction",
            NoSuchVersion { .. } => "NoSuchVersion",
            NoSuchProduct(_) => "NoSuchProduct",
            UnsupportedRegion { .. } => "UnsupportedRegion",
            RequestSizeLimitExceeded { .. } => "RequestSizeLimitExceeded",
            InvalidRequest(_) => "InvalidRequest",
            UnknownParameter(_) => "UnknownParameter",
            MissingParameter(_) => "MissingParameter",
            InvalidParameter { .. } => "InvalidParameter",
            InvalidParameterValue { .. } => "InvalidParameterValue",
            Range { .. } => "InvalidParameterValue.Range",
            ParameterCombination(_) => "InvalidParameterCombination",
            TooManyValues { .. } => "InvalidParameterValue.LimitExceeded",
            InvalidFilter { .. } => "InvalidFilter",
            FilterValuesLimit { .. } => "InvalidFilterValue.LimitExceeded",
            InstanceIdMalformed(_) => "InvalidInstanceId.Malformed",
            InstanceNotFound(_) => "InvalidInstanceId.NotFound",
            InstanceState { state, .. } => state.refusal_code(),
            InstanceNotRunning { .. } => "InvalidInstanceState",
            ConsoleVmOnly { .. } => "UnsupportedOperation",
            OperationInProgress { .. } => "OperationDenied.InstanceOperationInProgress",
            InstancesProtected(_) => "UnsupportedOperation.InstancesProtected",
            InstanceMixedPricingModel => "UnsupportedOperation.InstanceMixedPricingModel",
            InstanceTypeMalformed(_) => "InvalidInstanceType.Malformed",
            InstanceTypeNotFound(_) => "InvalidParameterValue.InstanceTypeNotFound",
            InstanceTypeUnavailable { .. } => "ResourceUnavailable.InstanceType",
            InsufficientCapacity { .. } => "ResourceInsufficient.SpecifiedInstanceType",
            InvalidTypeChange { reason, .. } => match reason {
                TypeChangeRefusal::CpuToGpu => "InvalidParameterValue.GPUInstanceFamily",
                TypeChangeRefusal::GpuFamilyChange => {
                    "InvalidParameterValue.InvalidGPUFamilyChange"
                }
            },
            ZoneNotFound { .. } => "InvalidZone.MismatchRegion",
            InstanceNameTooLong(_) => "InvalidInstanceName.TooLong",
            IllegalHostName(_) => "InvalidParameterValue.IllegalHostName",
            ClientTokenTooLong => "InvalidClientToken.TooLong",
            InvalidPassword(_) => "InvalidPassword",
            InvalidUserData(_) => "InvalidParameterValue.InvalidUserDataFormat",
            UserDataTooLarge { .. } => "InvalidParameterValue.TooLarge",
            InvalidPeriod(_) => "InvalidPeriod",
            InstanceQuota { .. } => "LimitExceeded.InstanceQuota",
            StopChargingNotSupported(_) => "UnsupportedOperation.StoppedModeStopCharging",
            ImageIdMalformed(_) => "InvalidImageId.Malformed",
            ImageNotFound(_) => "InvalidImageId.NotFound",
            ImageRuntimeUnavailable { .. } => {
                "InvalidParameterValue.InvalidImageForGivenInstanceType"
            }
            KeyPairIdMalformed(_) => "InvalidKeyPairId.Malformed",
            KeyPairNotFound(_) => "InvalidKeyPairId.NotFound",
            LoginKeyPairNotFound(_) => "InvalidParameterValue.KeyPairNotFound",
            KeyPairNameDuplicate(_) => "InvalidKeyPairName.Duplicate",
            KeyPairNameEmpty => "InvalidKeyPairNameEmpty",
            KeyPairNameIllegal(_) => "InvalidKeyPairNameIncludeIllegalChar",
            KeyPairNameTooLong(_) => "InvalidKeyPairNameTooLong",
            KeyPairLimit(_) => "InvalidKeyPair.LimitExceeded",
            PublicKeyMalformed(_) => "InvalidPublicKey.Malformed",
            PublicKeyDuplicate(_) => "InvalidPublicKey.Duplicate",
            KeyPairInUse { .. } => "InvalidParameterValue.KeyPairNotSupported",
            ProjectNotFound(_) => "InvalidProjectId.NotFound",
            PlacementGroupNotFound(_) => "FailedOperation.DisasterRecoverGroupNotFound",
            PlacementGroupIdMalformed(_) => "InvalidParameterValue",
            PlacementGroupQuota { .. } => "ResourceInsufficient.DisasterRecoverGroupCvmQuota",
            PlacementGroupNotEmpty(_) => "FailedOperation.PlacementSetNotEmpty",
            VpcNotFound(_) => "InvalidParameterValue.VpcIdNotExist",
            SubnetNotFound(_) => "InvalidParameterValue.SubnetNotExist",
            VpcIdMalformed(_) => "InvalidParameterValue.VpcIdMalformed",
            InvalidTimeFormat { .. } => "InvalidParameterValue.InvalidTimeFormat",
            ValueTooLong { .. } => "InvalidParameterValue.TooLong",
            SubnetIdMalformed(_) => "InvalidParameterValue.SubnetIdMalformed",
            VpcSubnetMismatch { .. } => "InvalidParameterValue.VpcIdSubnetIdNotMatch",
            SubnetZoneMismatch { .. } => "InvalidParameterValue.SubnetIdZoneIdNotMatch",
            SecurityGroupNotFound(_) => "InvalidSecurityGroupId.NotFound",
            SubnetFull(_) => "FailedOperation.NoAvailableIpAddressCountInSubnet",
            TatInvalidInstanceId(_) => "InvalidParameterValue.InvalidInstanceId",
            TatInstanceNotFound(_) => "ResourceNotFound.InstanceNotFound",
            TatInvalidContent(_) => "InvalidParameterValue.InvalidContent",
            TatInstanceNotRunning(_) => "ResourceUnavailable.InstanceStateNotRunning",
            TatAgentNotInstalled { .. } => "ResourceUnavailable.AgentNotInstalled",
            TatAgentOffline(_) => "ResourceUnavailable.AgentStatusNotOnline",
            TatUnsupportedCommandType(_) => "InvalidParameterValue.AgentUnsupportedCommandType",
            TatInvalidWorkingDirectory(_) => "InvalidParameterValue.InvalidWorkingDirectory",
            TatInvalidUsername(_) => "InvalidParameterValue.InvalidUsername",
            TatInvalidCommandName(_) => "InvalidParameterValue.InvalidCommandName",
            TatInvalidInvocationId(_) => "InvalidParameterValue.InvalidInvocationId",
            TatInvalidInvocationTaskId(_) => "InvalidParameterValue.InvalidInvocationTaskId",
            TatConflictParameter(..) => "InvalidParameter.ConflictParameter",
            TatInvalidCommandId(_) => "InvalidParameterValue.InvalidCommandId",
            TatCommandNotFound(_) => "ResourceNotFound.CommandNotFound",
            TatCommandNameDuplicated(_) => "InvalidParameterValue.CommandNameDuplicated",
            TatCommandQuota(_) => "LimitExceeded",
            TatFilterValuesLimit { .. } => "LimitExceeded.FilterValueExceeded",
            Unsupported(_) => "UnsupportedOperation",
            Internal => "InternalError",
        }
    }

    /// A message for a person, in their language, saying what to do next.
    pub fn message(&self, lang: Language) -> String {
        let (en, zh) = self.messages();
        match lang {
            Language::EnUs => en,
            Language::ZhCn => zh,
        }
    }

    fn messages(&self) -> (String, String) {
        use CloudError::*;
        match self {
            InvalidAuthorization(d) => (
                format!("The Authorization header is malformed ({d}). Sign requests with TC3-HMAC-SHA256 as the Tencent Cloud SDKs do."),
                format!("Authorization 请求头格式错误（{d}）。请按腾讯云 SDK 的方式使用 TC3-HMAC-SHA256 签名。"),
            ),
            SecretIdNotFound(id) => (
                format!("The SecretId `{id}` does not exist or has been disabled. Check the credentials (gpucloud admin tenant create prints new ones)."),
                format!("SecretId `{id}` 不存在或已被禁用。请检查密钥（可用 gpucloud admin tenant create 创建新密钥）。"),
            ),
            SignatureExpire { timestamp, server_time } => (
                format!("The request timestamp {timestamp} differs from the server time {server_time} by more than 5 minutes. Synchronise the client clock and retry."),
                format!("请求时间戳 {timestamp} 与服务器时间 {server_time} 相差超过5分钟。请校准客户端时间后重试。"),
            ),
            SignatureFailure => (
                "The signature does not match. Check that the SecretKey belongs to this SecretId.".to_string(),
                "签名验证失败。请检查 SecretKey 是否与 SecretId 匹配。".to_string(),
            ),
            TokenFailure => (
                "The security token (X-TC-Token) is invalid; this cloud issues no temporary credentials. Remove the token.".to_string(),
                "临时凭证令牌（X-TC-Token）无效；本云不签发临时凭证，请去掉该令牌。".to_string(),
            ),
            InvalidAction { service, version, action } => (
                format!("The action `{action}` does not exist in {service} {version}. Check the action name."),
                format!("接口 `{action}` 在 {service} {version} 中不存在，请检查接口名称。"),
            ),
            NoSuchVersion { service, version } => (
                format!("Version `{version}` of {service} does not exist. Use the version your SDK ships with."),
                format!("{service} 不存在版本 `{version}`，请使用 SDK 自带的版本。"),
            ),
            NoSuchProduct(s) => (
                format!("The service `{s}` is not offered by this cloud (offered: cvm, tat)."),
                format!("本云不提供服务 `{s}`（已提供：cvm、tat）。"),
            ),
            UnsupportedRegion { region, served } => (
                format!("The region `{region}` is not served by this cloud. Use {served}."),
                format!("本云不提供地域 `{region}`，请使用 {served}。"),
            ),
            RequestSizeLimitExceeded { limit } => (
                format!("The request body is larger than {limit} bytes."),
                format!("请求包体超过 {limit} 字节。"),
            ),
            InvalidRequest(d) => (
                format!("The request cannot be read: {d}."),
                format!("无法解析请求：{d}。"),
            ),
            UnknownParameter(p) => (
                format!("The parameter `{p}` is not recognized. Check its spelling against the API documentation."),
                format!("参数 `{p}` 无法识别，请对照接口文档检查拼写。"),
            ),
            MissingParameter(p) => (
                format!("The required parameter `{p}` is missing."),
                format!("缺少必选参数 `{p}`。"),
            ),
            InvalidParameter { name, detail } => (
                format!("The parameter `{name}` is invalid: {detail}."),
                format!("参数 `{name}` 格式错误：{detail}。"),
            ),
            InvalidParameterValue { name, detail } => (
                format!("The value of `{name}` is invalid: {detail}."),
                format!("参数 `{name}` 的取值无效：{detail}。"),
            ),
            Range { name, min, max, value } => (
                format!("`{name}` must be between {min} and {max}; got {value}."),
                format!("`{name}` 的取值范围为 {min} 到 {max}，当前为 {value}。"),
            ),
            ParameterCombination(d) => (
                format!("Invalid parameter combination: {d}."),
                format!("参数组合错误：{d}。"),
            ),
            TooManyValues { name, max, given } => (
                format!("`{name}` accepts at most {max} items; got {given}. Split the request."),
                format!("`{name}` 最多支持 {max} 个元素，当前为 {given} 个，请分批请求。"),
            ),
            FilterValuesLimit { name, max, given } => (
                format!("`{name}` accepts at most {max} values; got {given}. Split the filter over several requests."),
                format!("`{name}` 最多支持 {max} 个值，当前为 {given} 个，请拆分为多次请求。"),
            ),
            InvalidFilter { name, supported } => (
                format!("The filter `{name}` is not supported. Supported filters: {supported}."),
                format!("不支持过滤条件 `{name}`。支持的过滤条件：{supported}。"),
            ),
            InstanceIdMalformed(id) => (
                format!("The instance ID `{id}` is malformed; instance IDs look like ins-xxxxxxxx."),
                format!("实例ID `{id}` 格式错误，实例ID形如 ins-xxxxxxxx。"),
            ),
            InstanceNotFound(ids) => (
                format!("The instance `{}` is not found. Check the ID with DescribeInstances.", ids.join("`, `")),
                format!("实例 `{}` 不存在，请用 DescribeInstances 确认实例ID。", ids.join("`, `")),
            ),
            InstanceState { id, state, action } => (
                format!("The instance `{id}` is {}; {action} is not possible in that state.{}", state.as_str(), state_hint_en(*state)),
                format!("实例 `{id}` 当前状态为 {}，该状态下不支持 {action}。{}", state.as_str(), state_hint_zh(*state)),
            ),
            InstanceNotRunning { id, state, action } => (
                format!("The instance `{id}` is {}; {action} needs it RUNNING.{}", state.as_str(), state_hint_en(*state)),
                format!("实例 `{id}` 当前状态为 {}，{action} 需要实例处于运行中（RUNNING）。{}", state.as_str(), state_hint_zh(*state)),
            ),
            ConsoleVmOnly { id, runtime } => (
                format!("The instance `{id}` is a {runtime} instance; the serial console (DescribeInstanceVncUrl) exists for VM instances only. Run commands in containers with TAT RunCommand."),
                format!("实例 `{id}` 是 {runtime} 实例；串口控制台（DescribeInstanceVncUrl）仅适用于虚拟机实例。容器实例请使用 TAT RunCommand 执行命令。"),
            ),
            OperationInProgress { id, operation } => (
                format!("The instance `{id}` is still busy with {operation}. Wait until its LatestOperationState is no longer OPERATING."),
                format!("实例 `{id}` 正在执行 {operation}，请等待其 LatestOperationState 不再为 OPERATING 后重试。"),
            ),
            InstanceMixedPricingModel => (
                "The instances mix PREPAID and POSTPAID_BY_HOUR; terminate each charge type in its own call (prepaid instances go to the recycle bin, SHUTDOWN, first).".to_string(),
                "实例的计费模式不同（包年包月与按量计费混合），请按计费模式分别调用销毁（包年包月实例首次销毁进入回收站，状态为 SHUTDOWN）。".to_string(),
            ),
            InstancesProtected(id) => (
                format!("The instance `{id}` has termination protection. Disable it with ModifyInstancesAttribute DisableApiTermination=false first."),
                format!("实例 `{id}` 开启了实例销毁保护，请先通过 ModifyInstancesAttribute 设置 DisableApiTermination=false。"),
            ),
            InstanceTypeMalformed(t) => (
                format!("The instance type `{t}` is malformed; types look like GN7.2XLARGE32. DescribeInstanceTypeConfigs lists them."),
                format!("实例机型 `{t}` 格式错误，机型形如 GN7.2XLARGE32，可用 DescribeInstanceTypeConfigs 查询。"),
            ),
            InstanceTypeNotFound(t) => (
                format!("The instance type `{t}` does not exist. DescribeInstanceTypeConfigs lists the types offered."),
                format!("实例机型 `{t}` 不存在，可用 DescribeInstanceTypeConfigs 查询可售机型。"),
            ),
            InstanceTypeUnavailable { instance_type, zone } => (
                format!("The zone {zone} does not offer {instance_type}: none of its hosts has that hardware. DescribeZoneInstanceConfigInfos shows what each zone sells."),
                format!("可用区 {zone} 不售卖机型 {instance_type}（没有相应硬件的宿主机），可用 DescribeZoneInstanceConfigInfos 查询各可用区售卖的机型。"),
            ),
            InsufficientCapacity { instance_type, zone, detail } => (
                format!("Insufficient stock of {instance_type} in {zone}: {detail}. Try a smaller type, another zone, or later."),
                format!("可用区 {zone} 的机型 {instance_type} 库存不足：{detail}。请尝试更小的机型、其他可用区或稍后重试。"),
            ),
            InvalidTypeChange { id, from, to, reason } => match reason {
                TypeChangeRefusal::CpuToGpu => (
                    format!("The instance `{id}` ({from}) has no GPU and cannot be changed to the GPU type {to}. Launch a new GPU instance instead."),
                    format!("实例 `{id}`（{from}）不是GPU实例，不能变更为GPU机型 {to}，请新购GPU实例。"),
                ),
                TypeChangeRefusal::GpuFamilyChange => (
                    format!("The instance `{id}` ({from}) can only change to types with the same GPU model; {to} has a different GPU or none."),
                    format!("实例 `{id}`（{from}）只能变更为相同GPU型号的机型，{to} 的GPU型号不同或没有GPU。"),
                ),
            },
            ZoneNotFound { zone, region } => (
                format!("The zone `{zone}` does not exist in region {region}. DescribeZones lists the zones."),
                format!("地域 {region} 中不存在可用区 `{zone}`，可用 DescribeZones 查询。"),
            ),
            InstanceNameTooLong(n) => (
                format!("The instance name is longer than {n} characters."),
                format!("实例名称超过 {n} 个字符。"),
            ),
            IllegalHostName(h) => (
                format!("The host name `{h}` is illegal: use 2-60 characters of letters, digits, `.` and `-`, not starting or ending with `.` or `-` and without consecutive `.` or `-`."),
                format!("主机名 `{h}` 不合法：应为2-60个字符，可包含字母、数字、`.` 和 `-`，不能以 `.` 或 `-` 开头或结尾，不能连续使用 `.` 或 `-`。"),
            ),
            ClientTokenTooLong => (
                "ClientToken must be at most 64 ASCII characters.".to_string(),
                "ClientToken 最多64个ASCII字符。".to_string(),
            ),
            InvalidPassword(d) => (
                format!("The password does not meet the rules: {d}. A Linux password has 8-30 characters from at least two of: lowercase letters, uppercase letters, digits and ()`~!@#$%^&*-+=|{{}}[]:;'<>,.?/ and does not start with `/`."),
                format!("密码不符合规则：{d}。Linux 实例密码为8-30个字符，至少包含小写字母、大写字母、数字和特殊符号 ()`~!@#$%^&*-+=|{{}}[]:;'<>,.?/ 中的两类，且不能以 `/` 开头。"),
            ),
            InvalidUserData(d) => (
                format!("UserData must be base64-encoded: {d}."),
                format!("UserData 必须经过 base64 编码：{d}。"),
            ),
            UserDataTooLarge { size, limit } => (
                format!("UserData decodes to {size} bytes; at most {limit} bytes are allowed."),
                format!("UserData 解码后为 {size} 字节，最多允许 {limit} 字节。"),
            ),
            InvalidPeriod(p) => (
                format!("A prepaid period of {p} months is not offered; use 1-12, 24, 36, 48 or 60."),
                format!("不支持 {p} 个月的包年包月时长，可选 1-12、24、36、48、60。"),
            ),
            StopChargingNotSupported(id) => (
                format!("The instance `{id}` is not pay-as-you-go (POSTPAID_BY_HOUR), so StoppedMode STOP_CHARGING does not apply. Stop it with KEEP_CHARGING."),
                format!("实例 `{id}` 不是按量计费实例，不支持关机不收费（STOP_CHARGING），请使用 KEEP_CHARGING 关机。"),
            ),
            InstanceQuota { quota, used, requested } => (
                format!("The instance quota is {quota}; {used} are in use and {requested} more were requested. Terminate instances or ask the operator to raise the quota."),
                format!("实例配额为 {quota}，已使用 {used}，本次申请 {requested}。请销毁实例或联系运维提高配额。"),
            ),
            ImageIdMalformed(i) => (
                format!("The image ID `{i}` is malformed; image IDs look like img-xxxxxxxx."),
                format!("镜像ID `{i}` 格式错误，镜像ID形如 img-xxxxxxxx。"),
            ),
            ImageNotFound(i) => (
                format!("The image `{i}` does not exist. DescribeImages lists the images."),
                format!("镜像 `{i}` 不存在，可用 DescribeImages 查询。"),
            ),
            ImageRuntimeUnavailable { image, runtime, zone } => (
                format!("The image `{image}` runs on the `{runtime}` runtime, which no host in {zone} offers. Pick an image whose tag runtime matches a host (DescribeImages with filter tag:runtime), or run `gpucloud doctor` on a host to see why the runtime is missing."),
                format!("镜像 `{image}` 需要 `{runtime}` 运行时，可用区 {zone} 中没有宿主机提供该运行时。请选择 runtime 标签与宿主机匹配的镜像（DescribeImages 过滤 tag:runtime），或在宿主机上运行 `gpucloud doctor` 查看原因。"),
            ),
            KeyPairIdMalformed(k) => (
                format!("The key pair ID `{k}` is malformed; key pair IDs look like skey-xxxxxxxx."),
                format!("密钥对ID `{k}` 格式错误，密钥对ID形如 skey-xxxxxxxx。"),
            ),
            KeyPairNotFound(ks) => (
                format!("The key pair `{}` does not exist. DescribeKeyPairs lists yours.", ks.join("`, `")),
                format!("密钥对 `{}` 不存在，可用 DescribeKeyPairs 查询。", ks.join("`, `")),
            ),
            LoginKeyPairNotFound(k) => (
                format!("The key pair `{k}` in LoginSettings.KeyIds does not exist. Create one with CreateKeyPair or ImportKeyPair."),
                format!("LoginSettings.KeyIds 中的密钥对 `{k}` 不存在，请先通过 CreateKeyPair 或 ImportKeyPair 创建。"),
            ),
            KeyPairNameDuplicate(n) => (
                format!("A key pair named `{n}` already exists. Choose another name."),
                format!("名为 `{n}` 的密钥对已存在，请更换名称。"),
            ),
            KeyPairNameEmpty => (
                "KeyName must not be empty.".to_string(),
                "密钥对名称不能为空。".to_string(),
            ),
            KeyPairNameIllegal(n) => (
                format!("The key pair name `{n}` may only contain letters, digits and underscores."),
                format!("密钥对名称 `{n}` 只能包含字母、数字和下划线。"),
            ),
            KeyPairNameTooLong(n) => (
                format!("The key pair name `{n}` is longer than 25 characters."),
                format!("密钥对名称 `{n}` 超过25个字符。"),
            ),
            KeyPairLimit(n) => (
                format!("An account holds at most {n} key pairs. Delete unused ones with DeleteKeyPairs."),
                format!("每个账号最多 {n} 个密钥对，请用 DeleteKeyPairs 删除不用的密钥对。"),
            ),
            PublicKeyMalformed(d) => (
                format!("The public key is not a valid OpenSSH public key ({d}). Pass one line like `ssh-rsa AAAA… comment`."),
                format!("公钥不是合法的 OpenSSH 公钥（{d}），请传入形如 `ssh-rsa AAAA… comment` 的一行内容。"),
            ),
            PublicKeyDuplicate(k) => (
                format!("This public key is already imported as `{k}`."),
                format!("该公钥已作为 `{k}` 导入。"),
            ),
            KeyPairInUse { key, instances } => (
                format!("The key pair `{key}` is still associated with {}. Disassociate it first (DisassociateInstancesKeyPairs).", instances.join(", ")),
                format!("密钥对 `{key}` 仍绑定在实例 {} 上，请先通过 DisassociateInstancesKeyPairs 解绑。", instances.join(", ")),
            ),
            ProjectNotFound(p) => (
                format!("The project {p} does not exist; use 0 for the default project."),
                format!("项目 {p} 不存在，默认项目请使用 0。"),
            ),
            PlacementGroupNotFound(g) => (
                format!("The disaster recover group `{g}` does not exist. DescribeDisasterRecoverGroups lists yours."),
                format!("分散置放群组 `{g}` 不存在，可用 DescribeDisasterRecoverGroups 查询。"),
            ),
            PlacementGroupIdMalformed(g) => (
                format!("The disaster recover group ID `{g}` is malformed; IDs look like ps-xxxxxxxx."),
                format!("分散置放群组ID `{g}` 格式错误，ID形如 ps-xxxxxxxx。"),
            ),
            PlacementGroupQuota { id, quota } => (
                format!("The disaster recover group `{id}` holds at most {quota} instances. Use another group."),
                format!("分散置放群组 `{id}` 最多容纳 {quota} 台实例，请使用其他群组。"),
            ),
            PlacementGroupNotEmpty(g) => (
                format!("The disaster recover group `{g}` still holds instances. Terminate them first."),
                format!("分散置放群组 `{g}` 中仍有实例，请先销毁这些实例。"),
            ),
            VpcNotFound(v) => (
                format!("The VPC `{v}` does not exist."),
                format!("私有网络 `{v}` 不存在。"),
            ),
            SubnetNotFound(s) => (
                format!("The subnet `{s}` does not exist."),
                format!("子网 `{s}` 不存在。"),
            ),
            ValueTooLong { name, max } => (
                format!("{name} is too long: at most {max} characters."),
                format!("{name} 过长，最多 {max} 个字符。"),
            ),
            InvalidTimeFormat { name, value } => (
                format!("`{value}` in {name} is not a time: write it like 2024-06-01 00:00:00 (UTC)."),
                format!("{name} 中的 `{value}` 不是合法的时间，格式应为 2024-06-01 00:00:00（UTC）。"),
            ),
            VpcIdMalformed(v) => (
                format!("`{v}` is not a VPC ID: VPC IDs look like vpc-xxxxxxxx. Your instances' VPC is in DescribeInstances (VirtualPrivateCloud.VpcId)."),
                format!("`{v}` 不是合法的私有网络 ID，格式应为 vpc-xxxxxxxx，可在 DescribeInstances 的 VirtualPrivateCloud.VpcId 中查看。"),
            ),
            SubnetIdMalformed(s) => (
                format!("`{s}` is not a subnet ID: subnet IDs look like subnet-xxxxxxxx. Your instances' subnet is in DescribeInstances (VirtualPrivateCloud.SubnetId)."),
                format!("`{s}` 不是合法的子网 ID，格式应为 subnet-xxxxxxxx，可在 DescribeInstances 的 VirtualPrivateCloud.SubnetId 中查看。"),
            ),
            VpcSubnetMismatch { subnet, vpc } => (
                format!("The subnet `{subnet}` is not in the VPC `{vpc}`. Pick a subnet of that VPC, or leave VirtualPrivateCloud out for the zone's default."),
                format!("子网 `{subnet}` 不属于私有网络 `{vpc}`，请选择该私有网络中的子网，或不填 VirtualPrivateCloud 以使用可用区的默认网络。"),
            ),
            SubnetZoneMismatch { subnet, subnet_zone, zone } => (
                format!("The subnet `{subnet}` is in the zone `{subnet_zone}`, not `{zone}`. Launch in `{subnet_zone}` or pick a subnet in `{zone}`."),
                format!("子网 `{subnet}` 位于可用区 `{subnet_zone}`，而不是 `{zone}`。请在 `{subnet_zone}` 中创建实例，或选择位于 `{zone}` 的子网。"),
            ),
            SecurityGroupNotFound(s) => (
                format!("The security group `{s}` does not exist."),
                format!("安全组 `{s}` 不存在。"),
            ),
            SubnetFull(s) => (
                format!("The subnet `{s}` has no free IP address. Terminate instances or use another zone."),
                format!("子网 `{s}` 没有可用IP，请销毁实例或使用其他可用区。"),
            ),
            TatInvalidInstanceId(id) => (
                format!("The instance ID `{id}` is invalid; instance IDs look like ins-xxxxxxxx."),
                format!("实例ID `{id}` 无效，实例ID形如 ins-xxxxxxxx。"),
            ),
            TatInstanceNotFound(ids) => (
                format!("The instance `{}` does not exist. Check the ID with DescribeInstances.", ids.join("`, `")),
                format!("实例 `{}` 不存在，请用 DescribeInstances 确认实例ID。", ids.join("`, `")),
            ),
            TatInvalidContent(d) => (
                format!("The command content is invalid: {d}. Content is the base64 of the script, at most 64 KB."),
                format!("命令内容无效：{d}。Content 为脚本的 base64 编码，不超过64KB。"),
            ),
            TatInstanceNotRunning(id) => (
                format!("The instance `{id}` is not RUNNING; commands run only in running instances. Start it first."),
                format!("实例 `{id}` 不在运行中，命令只能在运行中的实例上执行，请先开机。"),
            ),
            TatAgentNotInstalled { id, reason } => (
                format!("The instance `{id}` cannot run commands: {reason}."),
                format!("实例 `{id}` 无法执行命令：{reason}。"),
            ),
            TatAgentOffline(id) => (
                format!("The host agent of instance `{id}` is offline. Retry when its host is reachable again (gpucloud admin hosts shows host states)."),
                format!("实例 `{id}` 所在宿主机的 agent 离线，请在宿主机恢复后重试（gpucloud admin hosts 可查看宿主机状态）。"),
            ),
            TatUnsupportedCommandType(t) => (
                format!("The command type `{t}` is not supported on Linux instances; use SHELL."),
                format!("Linux 实例不支持命令类型 `{t}`，请使用 SHELL。"),
            ),
            TatInvalidWorkingDirectory(d) => (
                format!("The working directory `{d}` is invalid; give an absolute path of at most 200 characters."),
                format!("执行路径 `{d}` 无效，请填写不超过200个字符的绝对路径。"),
            ),
            TatInvalidUsername(u) => (
                format!("The user name `{u}` is invalid; use a Linux user name like root."),
                format!("用户名 `{u}` 无效，请使用 root 等 Linux 用户名。"),
            ),
            TatInvalidCommandName(n) => (
                format!("The command name `{n}` is invalid: at most 60 bytes of letters, digits, `_`, `-` and `.`."),
                format!("命令名称 `{n}` 无效：最多60字节，只能包含中文、字母、数字、`_`、`-` 和 `.`。"),
            ),
            TatInvalidInvocationId(i) => (
                format!("The invocation ID `{i}` is invalid; invocation IDs look like inv-xxxxxxxx."),
                format!("执行活动ID `{i}` 无效，ID形如 inv-xxxxxxxx。"),
            ),
            TatInvalidInvocationTaskId(i) => (
                format!("The invocation task ID `{i}` is invalid; task IDs look like invt-xxxxxxxx."),
                format!("执行任务ID `{i}` 无效，ID形如 invt-xxxxxxxx。"),
            ),
            TatConflictParameter(a, b) => (
                format!("`{a}` and `{b}` cannot be used together; give one of them."),
                format!("`{a}` 与 `{b}` 不能同时指定，请只填写其中一个。"),
            ),
            TatInvalidCommandId(i) => (
                format!("The command ID `{i}` is invalid; command IDs look like cmd-xxxxxxxx."),
                format!("命令ID `{i}` 无效，ID形如 cmd-xxxxxxxx。"),
            ),
            TatCommandNotFound(i) => (
                format!("The command `{i}` does not exist. Check the ID with DescribeCommands."),
                format!("命令 `{i}` 不存在，请用 DescribeCommands 确认命令ID。"),
            ),
            TatCommandNameDuplicated(n) => (
                format!("A command named `{n}` exists already; pick another name or modify that command with ModifyCommand."),
                format!("已存在名为 `{n}` 的命令，请换一个名称，或用 ModifyCommand 修改该命令。"),
            ),
            TatCommandQuota(max) => (
                format!("The command library holds at most {max} commands; delete unused ones with DeleteCommand first."),
                format!("命令库最多保存 {max} 个命令，请先用 DeleteCommand 删除不再使用的命令。"),
            ),
            TatFilterValuesLimit { name, max, given } => (
                format!("`{name}` accepts at most {max} values; got {given}. Split the filter over several requests."),
                format!("`{name}` 最多支持 {max} 个值，当前为 {given} 个，请拆分为多次请求。"),
            ),
            Unsupported(what) => (
                format!("{what} is not supported by this cloud."),
                format!("本云暂不支持 {what}。"),
            ),
            Internal => (
                "An internal error occurred. Retry; if it persists, give the operator the RequestId.".to_string(),
                "内部错误，请重试；如持续出现，请将 RequestId 提供给运维人员。".to_string(),
            ),
        }
    }
}

fn state_hint_en(state: InstanceState) -> &'static str {
    match state {
        InstanceState::Running => " Stop it first (StopInstances).",
        InstanceState::Stopped => " Start it first (StartInstances).",
        InstanceState::Pending
        | InstanceState::Starting
        | InstanceState::Stopping
        | InstanceState::Rebooting
        | InstanceState::Terminating => " Wait until the current operation finishes.",
        InstanceState::LaunchFailed => " The launch failed; terminate it and launch again.",
        InstanceState::Shutdown | InstanceState::Terminated => "",
    }
}

fn state_hint_zh(state: InstanceState) -> &'static str {
    match state {
        InstanceState::Running => "请先关机（StopInstances）。",
        InstanceState::Stopped => "请先开机（StartInstances）。",
        InstanceState::Pending
        | InstanceState::Starting
        | InstanceState::Stopping
        | InstanceState::Rebooting
        | InstanceState::Terminating => "请等待当前操作完成。",
        InstanceState::LaunchFailed => "实例创建失败，请销毁后重新创建。",
        InstanceState::Shutdown | InstanceState::Terminated => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_messages() {
        let e = CloudError::InstanceNotFound(vec!["ins-zzzzzzzz".into()]);
        assert_eq!(e.code(), "InvalidInstanceId.NotFound");
        assert!(e.message(Language::EnUs).contains("ins-zzzzzzzz"));
        assert!(e.message(Language::ZhCn).contains("不存在"));
        let e = CloudError::InstanceState {
            id: "ins-a".into(),
            state: InstanceState::Running,
            action: "StartInstances".into(),
        };
        assert_eq!(e.code(), "UnsupportedOperation.InstanceStateRunning");
        assert!(e.message(Language::EnUs).contains("RUNNING"));
    }

    #[test]
    fn console_refusals() {
        let e = CloudError::ConsoleVmOnly {
            id: "ins-a".into(),
            runtime: "container".into(),
        };
        assert_eq!(e.code(), "UnsupportedOperation");
        assert!(e.message(Language::EnUs).contains("VM instances only"));
        assert!(e.message(Language::EnUs).contains("RunCommand"));
        let e = CloudError::InstanceNotRunning {
            id: "ins-a".into(),
            state: InstanceState::Starting,
            action: "DescribeInstanceVncUrl".into(),
        };
        assert_eq!(e.code(), "InvalidInstanceState");
        assert!(e.message(Language::ZhCn).contains("RUNNING"));
    }

    #[test]
    fn every_code_is_dotted_or_common() {
        let samples = [
            CloudError::SignatureFailure,
            CloudError::Internal,
            CloudError::ClientTokenTooLong,
            CloudError::KeyPairNameEmpty,
        ];
        for s in samples {
            assert!(!s.code().is_empty());
            assert!(!s.message(Language::EnUs).is_empty());
            assert!(!s.message(Language::ZhCn).is_empty());
        }
    }
}
