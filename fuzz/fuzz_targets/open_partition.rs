//! A log directory built from the input, opened, read, appended to, reopened.
//! The harness is `durable_log::internals::fuzz_open_partition`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    durable_log::internals::fuzz_open_partition(data);
});
