//! Upstream response heads and bodies (length, chunked, trailers) never panic the client.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rempart::fuzzing::response(data);
});
