//! Compaction (`Cleanup::Compact`) through the public API: `Log::compact`
//! over partitions fed by a producer, the background thread, retention on a
//! compacted log, `delete_records_before`, and the offline verifier.

mod log_common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use durable_log::{
    Cleanup, CompactionReport, Config, Durability, Error, Producer, ProducerConfig, Record,
    StoredRecord, inspect,
};
use log_common::*;

/// A compacted log with small segments, so that there are closed ones.
fn compacted() -> Config {
    Config::default()
        .cleanup(Cleanup::Compact)
        .segment_bytes(1_024)
        .durability(Durability::None)
}

fn value(key: u64, version: u64) -> String {
    format!("key {key} version {version}")
}

/// Writes `versions` values for each of `keys` keys through a producer and
/// returns, per key, the offset and partition of its latest value.
fn write_versions(log: &durable_log::Log, keys: u64, versions: u64) -> HashMap<u64, (u32, u64)> {
    let producer = Producer::new(log, ProducerConfig::default().batch_bytes(512)).unwrap();
    let mut handles = Vec::new();
    for version in 0..versions {
        for key in 0..keys {
            let record = Record::new(value(key, version))
                .with_key(format!("key-{key}"))
                .with_timestamp(base_ts() + (version * keys + key) as i64);
            handles.push((key, producer.send(record).unwrap()));
        }
    }
    producer.close().unwrap();
    let mut latest = HashMap::new();
    for (key, handle) in handles {
        let a = handle.wait().unwrap();
        latest.insert(key, (a.partition, a.base_offset));
    }
    latest
}

fn everything(log: &durable_log::Log, partition: u32) -> Vec<StoredRecord> {
    let p = log.partition(partition).unwrap();
    read_all(&p)
}

#[test]
fn log_compact_keeps_the_latest_value_of_each_key_in_every_partition() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), compacted().partitions(3));
    let latest = write_versions(&log, 12, 30);
    let before: Vec<usize> = (0..3).map(|p| everything(&log, p).len()).collect();
    let ends: Vec<u64> = (0..3)
        .map(|p| log.partition(p).unwrap().end_offset())
        .collect();
    // Roll every partition so that the last values are in closed segments.
    for p in 0..3 {
        log.partition(p)
            .unwrap()
            .append(&[Record::new("filler".repeat(200)).with_key("filler")])
            .unwrap();
    }
    let report = log.compact().unwrap();
    assert!(report.records_removed > 0, "{report:?}");
    assert!(report.bytes_after < report.bytes_before, "{report:?}");
    let after: Vec<usize> = (0..3).map(|p| everything(&log, p).len()).collect();
    assert_eq!(
        before.iter().sum::<usize>() + 3 - after.iter().sum::<usize>(),
        report.records_removed as usize
    );
    for p in 0..3 {
        let partition = log.partition(p).unwrap();
        assert_eq!(partition.start_offset(), 0);
        assert_eq!(partition.end_offset(), ends[p as usize] + 1);
        let values: HashMap<String, StoredRecord> = everything(&log, p)
            .into_iter()
            .filter(|r| r.key.as_deref() != Some(&b"filler"[..]))
            .map(|r| {
                (
                    String::from_utf8(r.key.clone().unwrap().to_vec()).unwrap(),
                    r,
                )
            })
            .collect();
        for (key, &(partition_id, offset)) in &latest {
            if partition_id != p {
                continue;
            }
            let r = &values[&format!("key-{key}")];
            assert_eq!(r.offset, offset);
            assert_eq!(r.value.as_deref(), Some(value(*key, 29).as_bytes()));
        }
        assert_eq!(
            values.len(),
            latest.values().filter(|(id, _)| *id == p).count()
        );
    }
    // A second clean has nothing left to do.
    assert_eq!(log.compact().unwrap(), CompactionReport::default());
    log.close().unwrap();
    let verified = inspect::verify(dir.path(), |_| {}).unwrap();
    assert!(verified.is_ok(), "{:?}", verified.problems);
    let log = open(dir.path(), compacted().partitions(3));
    assert_eq!(
        (0..3)
            .map(|p| everything(&log, p).len())
            .collect::<Vec<_>>(),
        after
    );
}

/// The background thread cleans on its own, every
/// `retention_check_interval`.
#[test]
fn the_background_thread_compacts() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(
        dir.path(),
        compacted().retention_check_interval(Duration::from_millis(10)),
    );
    let p = log.partition(0).unwrap();
    for i in 0..200u64 {
        p.append(&[Record::new(value(i % 3, i))
            .with_key(format!("key-{}", i % 3))
            .with_timestamp(base_ts() + i as i64)])
            .unwrap();
    }
    let appended = p.end_offset() as usize;
    // A generous bound, so that a thread that never cleans fails the test
    // instead of hanging it.
    let started = Instant::now();
    loop {
        let kept = read_all(&p).len();
        if kept < appended / 2 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no clean in two minutes: {kept} of {appended} records"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(p.end_offset() as usize, appended);
}

/// A compacted log applies no retention limit: its records leave only by
/// compaction and `delete_records_before`, which compaction never undoes.
#[test]
fn retention_limits_do_not_apply_and_delete_records_before_does() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(
        dir.path(),
        compacted()
            .retention_bytes(Some(1))
            .retention_age(Some(Duration::from_millis(1))),
    );
    let p = log.partition(0).unwrap();
    let old = base_ts() - 1_000 * HOUR_MS;
    for i in 0..60u64 {
        p.append(&[Record::new(value(i, 0))
            .with_key(format!("key-{i}"))
            .with_timestamp(old + i as i64)])
            .unwrap();
    }
    let segments = p.segment_count();
    assert!(segments > 2);
    assert_eq!(log.enforce_retention().unwrap(), 0);
    assert_eq!(p.segment_count(), segments);

    p.delete_records_before(30).unwrap();
    assert_eq!(p.start_offset(), 30);
    for i in 0..60u64 {
        p.append(&[Record::new(value(i, 1))
            .with_key(format!("key-{i}"))
            .with_timestamp(base_ts() + i as i64)])
            .unwrap();
    }
    p.append(&[Record::new("x".repeat(1_000)).with_key("filler")])
        .unwrap();
    let report = p.compact().unwrap();
    assert!(report.records_removed >= 30, "{report:?}");
    assert_eq!(p.start_offset(), 30, "compaction moved the start offset");
    let kept = read_all(&p);
    assert!(kept.iter().all(|r| r.offset >= 60));
    assert_eq!(kept.len(), 61);
}

#[test]
fn unkeyed_records_are_refused_by_a_compacted_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), compacted());
    match log.append(Record::new("no key")) {
        Err(Error::MissingKey { partition: 0 }) => {}
        other => panic!("expected MissingKey, got {other:?}"),
    }
    let p = log.partition(0).unwrap();
    assert!(matches!(
        p.append(&[Record::new("no key")]),
        Err(Error::MissingKey { .. })
    ));
    assert_eq!(p.end_offset(), 0);
    // The same records are fine in a log that deletes.
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::default());
    log.append(Record::new("no key")).unwrap();
    assert!(matches!(
        log.compact(),
        Err(Error::InvalidConfig {
            field: "cleanup",
            ..
        })
    ));
}
