//! One batch's bytes: verify, decode, re-encode, compare.
//! The harness is `durable_log::internals::fuzz_batch`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    durable_log::internals::fuzz_batch(data);
});
