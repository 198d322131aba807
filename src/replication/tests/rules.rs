//! The replica's rules one at a time.
