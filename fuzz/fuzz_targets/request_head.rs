//! Downstream HTTP/1.1 request heads on the fast path: whole heads and heads split at any
//! point never panic, and what is served here is what the fast path may serve.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rempart::fuzzing::request_head(data);
});
