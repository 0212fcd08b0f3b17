//! `Host` values: the host the tenant is chosen by is well formed, whatever the client sent.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rempart::fuzzing::host(data);
});
