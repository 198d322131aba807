//! `Debug` output of the public handles.

mod log_common;

use durable_log::Config;
use log_common::*;

#[test]
fn debug_formatting_a_log_and_a_partition_stays_small_and_safe() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::default().segment_bytes(1 << 20));
    let p = log.partition(0).unwrap();
    append_each(&p, 3, record);
    let partition = format!("{p:?}");
    let whole = format!("{log:?}");
    let reader = format!("{:?}", p.reader(0));
    for text in [&partition, &whole, &reader] {
        assert!(
            text.len() < 64 * 1024,
            "{} bytes of Debug output",
            text.len()
        );
    }
    assert!(partition.contains("Partition"));
    assert!(whole.contains("Log"));
}
