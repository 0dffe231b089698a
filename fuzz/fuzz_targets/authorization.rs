//! Bytes as an `Authorization` header value.
#![no_main]

use gpucloud_api_types::sign::Tc3Authorization;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = Tc3Authorization::parse(s);
    }
});
