//! Pass cookies and challenge answers: arbitrary input is refused, never accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rempart::fuzzing::pass_cookie(data);
});
