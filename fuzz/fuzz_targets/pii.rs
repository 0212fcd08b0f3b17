//! The personal-data scanner: items found whatever the chunk boundaries, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rempart::fuzzing::pii(data);
});
