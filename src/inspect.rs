//! Offline inspection of a log directory: dump, verify, repair, stats.
