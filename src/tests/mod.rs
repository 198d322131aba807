//! Crate-internal tests that need the simulated disk or internal types.

mod fuzz_corpus;
mod model;
mod read_verification;
mod recovery_files;
