//! Application services behind the API actions.

pub mod catalog;
pub mod images;
pub mod instances;

use gpucloud_core::CloudError;
use gpucloud_store::instances::TxError;
use gpucloud_store::StoreError;

/// Logs a store failure once, with its chain, and hides it from the caller.
pub fn internal(e: StoreError) -> CloudError {
    tracing::error!(error = ?e, "store failure");
    CloudError::Internal
}

/// Maps a transactional failure that is not a capacity conflict.
pub fn tx_error(e: TxError) -> CloudError {
    match e {
        TxError::Cloud(c) => c,
        TxError::Store(s) => internal(s),
        TxError::HostConflict(h) => {
            tracing::warn!(host = %h, "capacity conflict surfaced to the caller");
            CloudError::InsufficientCapacity {
                instance_type: String::new(),
                zone: String::new(),
                detail: format!("capacity on host {h} changed during the request; retry"),
            }
        }
    }
}
