//! Bytes as a POST body and as a GET query: the decoders the API front runs
//! after authentication, down to every action's typed request.
#![no_main]

use gpucloud_api_types::cvm::*;
use gpucloud_server::api::decode;
use gpucloud_server::api::front::{parse_form, parse_json};
use libfuzzer_sys::fuzz_target;

fn all(v: serde_json::Value) {
    let _ = decode::<RunInstancesRequest>(v.clone());
    let _ = decode::<DescribeInstancesRequest>(v.clone());
    let _ = decode::<DescribeInstancesStatusRequest>(v.clone());
    let _ = decode::<StopInstancesRequest>(v.clone());
    let _ = decode::<RebootInstancesRequest>(v.clone());
    let _ = decode::<ResetInstancesTypeRequest>(v.clone());
    let _ = decode::<ModifyInstancesAttributeRequest>(v.clone());
    let _ = decode::<CreateKeyPairRequest>(v.clone());
    let _ = decode::<ImportKeyPairRequest>(v.clone());
    let _ = decode::<DescribeKeyPairsRequest>(v.clone());
    let _ = decode::<InstancesKeyPairsRequest>(v.clone());
    let _ = decode::<CreateDisasterRecoverGroupRequest>(v.clone());
    let _ = decode::<DescribeDisasterRecoverGroupsRequest>(v.clone());
    let _ = decode::<DescribeImagesRequest>(v.clone());
    let _ = decode::<DescribeZoneInstanceConfigInfosRequest>(v);
}

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = parse_json(data) {
        all(v);
    }
    if let Ok(q) = std::str::from_utf8(data) {
        if let Ok(v) = parse_form(q, &[]) {
            all(v);
        }
    }
});
