//! The Tencent error codes gpucloud answers with (reference §5). Only codes
//! listed here are ever sent; each is a stable string clients match on.

#![allow(missing_docs)]

pub const AUTH_INVALID_AUTHORIZATION: &str = "AuthFailure.InvalidAuthorization";
pub const AUTH_SECRET_ID_NOT_FOUND: &str = "AuthFailure.SecretIdNotFound";
pub const AUTH_SIGNATURE_EXPIRE: &str = "AuthFailure.SignatureExpire";
pub const AUTH_SIGNATURE_FAILURE: &str = "AuthFailure.SignatureFailure";
pub const AUTH_TOKEN_FAILURE: &str = "AuthFailure.TokenFailure";
pub const AUTH_UNAUTHORIZED_OPERATION: &str = "AuthFailure.UnauthorizedOperation";
pub const DRY_RUN_OPERATION: &str = "DryRunOperation";
pub const FAILED_OPERATION: &str = "FailedOperation";
pub const INTERNAL_ERROR: &str = "InternalError";
pub const INVALID_ACTION: &str = "InvalidAction";
pub const INVALID_PARAMETER: &str = "InvalidParameter";
pub const INVALID_PARAMETER_VALUE: &str = "InvalidParameterValue";
pub const INVALID_PARAMETER_COMBINATION: &str = "InvalidParameterCombination";
pub const INVALID_REQUEST: &str = "InvalidRequest";
pub const MISSING_PARAMETER: &str = "MissingParameter";
pub const NO_SUCH_VERSION: &str = "NoSuchVersion";
pub const NO_SUCH_PRODUCT: &str = "NoSuchProduct";
pub const REQUEST_SIZE_LIMIT_EXCEEDED: &str = "RequestSizeLimitExceeded";
pub const UNKNOWN_PARAMETER: &str = "UnknownParameter";
pub const UNSUPPORTED_OPERATION: &str = "UnsupportedOperation";
pub const UNSUPPORTED_REGION: &str = "UnsupportedRegion";
pub const UNSUPPORTED_PROTOCOL: &str = "UnsupportedProtocol";
pub const RESOURCE_NOT_FOUND: &str = "ResourceNotFound";
pub const LIMIT_EXCEEDED: &str = "LimitExceeded";
pub const REQUEST_LIMIT_EXCEEDED: &str = "RequestLimitExceeded";
pub const SERVICE_UNAVAILABLE: &str = "InternalError.ServiceUnavailable";
