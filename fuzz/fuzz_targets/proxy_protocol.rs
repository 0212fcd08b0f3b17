//! PROXY protocol v1/v2 parsing never panics, and the reader never reads past the header.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rempart::fuzzing::proxy_protocol(data);
});
