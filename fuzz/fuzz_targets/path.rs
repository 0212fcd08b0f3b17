//! Request paths: the canonical form is canonical, and normalising it again changes nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rempart::fuzzing::path(data);
});
