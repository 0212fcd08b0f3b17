//! TLS ClientHello parsing (JA4) and HTTP head fingerprints never panic on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rempart::fuzzing::client_hello(data);
});
