//! gpucloud's domain rules, free of I/O: the catalog of instance types and GPU
//! models, regions and zones, prices, the instance state machine, input
//! validation and the one error type every request failure becomes.

pub mod catalog;
pub mod error;
pub mod gpu;
pub mod lifecycle;
pub mod pricing;
pub mod region;
pub mod simspec;
pub mod validate;

pub use error::CloudError;
