//! Crate-internal tests that need the simulated disk.
