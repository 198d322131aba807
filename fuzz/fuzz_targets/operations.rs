//! Operations, crashes included, checked against a model of the log.
//! The harness is `durable_log::internals::fuzz_operations`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    durable_log::internals::fuzz_operations(data);
});
