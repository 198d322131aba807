//! Consumer offsets and consumers (in progress).
