//! The errors a caller can act on, and that the log stays usable after
//! each of them.

mod log_common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use durable_log::{Cleanup, Compression, Config, Durability, Error, Log, Partition, Record};
use log_common::*;

/// Appends one record and reads it back: the partition still works.
fn assert_usable(p: &Partition) {
    let next = p.end_offset();
    let appended = p.append(&[record(next)]).expect("append after an error");
    assert_eq!(appended.base_offset, next);
    assert_same(&p.read(next, 1).unwrap()[0], &record(next));
}

#[test]
fn a_second_open_of_the_same_directory_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::default());
    let p = log.partition(0).unwrap();
    append_each(&p, 3, record);
    match Log::open(dir.path(), Config::default()) {
        Err(Error::Locked) => {}
        other => panic!("expected Error::Locked, got {other:?}"),
    }
    assert_usable(&p);
    log.close().unwrap();
    let log = open(dir.path(), Config::default());
    assert_eq!(log.partition(0).unwrap().end_offset(), 4);
}

#[test]
fn an_unknown_partition_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::default().partitions(3));
    assert_eq!(log.partition_count(), 3);
    for id in [3, 4, u32::MAX] {
        match log.partition(id) {
            Err(Error::UnknownPartition {
                partition,
                partitions: 3,
            }) => assert_eq!(partition, id),
            other => panic!("expected UnknownPartition for {id}, got {other:?}"),
        }
    }
    for id in 0..3 {
        assert_eq!(log.partition(id).unwrap().id(), id);
        assert_usable(&log.partition(id).unwrap());
    }
}

#[test]
fn an_empty_append_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::default());
    let p = log.partition(0).unwrap();
    assert!(matches!(p.append(&[]), Err(Error::EmptyBatch)));
    assert_eq!(p.end_offset(), 0);
    assert_eq!(p.size_bytes(), 0);
    assert_usable(&p);
}

#[test]
fn an_oversized_batch_is_refused_with_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::default().max_batch_bytes(1024));
    let p = log.partition(0).unwrap();
    let value = |len: usize| Record::new(vec![7u8; len]).with_timestamp(base_ts());
    let overhead = match p.append(&[value(2000)]) {
        Err(Error::RecordTooLarge { size, max: 1024 }) => {
            assert!(size > 2000);
            size - 2000
        }
        other => panic!("expected RecordTooLarge, got {other:?}"),
    };
    assert_eq!(p.end_offset(), 0);
    // The limit is inclusive: a batch of exactly max_batch_bytes is stored.
    let fits = (1024 - overhead) as usize;
    match p.append(&[value(fits + 1)]) {
        Err(Error::RecordTooLarge { size, max }) => assert_eq!((size, max), (1025, 1024)),
        other => panic!("expected RecordTooLarge one byte over, got {other:?}"),
    }
    let a = p.append(&[value(fits)]).unwrap();
    assert_eq!(a.base_offset, 0);
    assert_eq!(p.size_bytes(), 1024);
    // Many small records that together exceed the limit.
    let many: Vec<Record> = (0..100).map(|_| value(20)).collect();
    assert!(matches!(
        p.append(&many),
        Err(Error::RecordTooLarge { max: 1024, .. })
    ));
    assert_eq!(p.end_offset(), 1);
    assert_usable(&p);
}

#[test]
fn each_invalid_config_field_is_named() {
    let cases: Vec<(&str, Config)> = vec![
        ("partitions", Config::default().partitions(0)),
        ("partitions", Config::default().partitions(u32::MAX)),
        ("segment_bytes", Config::default().segment_bytes(0)),
        ("segment_bytes", Config::default().segment_bytes(1 << 32)),
        (
            "segment_max_age",
            Config::default().segment_max_age(Duration::ZERO),
        ),
        (
            "index_interval_bytes",
            Config::default().index_interval_bytes(0),
        ),
        ("max_index_bytes", Config::default().max_index_bytes(0)),
        ("max_index_bytes", Config::default().max_index_bytes(63)),
        ("max_batch_bytes", Config::default().max_batch_bytes(0)),
        ("max_batch_bytes", Config::default().max_batch_bytes(64)),
        (
            "retention_bytes",
            Config::default().retention_bytes(Some(0)),
        ),
        (
            "retention_age",
            Config::default().retention_age(Some(Duration::ZERO)),
        ),
        (
            "retention_check_interval",
            Config::default().retention_check_interval(Duration::ZERO),
        ),
        (
            "durability",
            Config::default().durability(Durability::Interval(Duration::ZERO)),
        ),
        (
            "compression",
            Config::default().compression(Compression::Zstd { level: 0 }),
        ),
        (
            "compression",
            Config::default().compression(Compression::Zstd { level: 1000 }),
        ),
        (
            "delete_retention",
            Config::default()
                .cleanup(Cleanup::Compact)
                .delete_retention(Duration::MAX),
        ),
    ];
    for (field, config) in cases {
        let dir = tempfile::tempdir().unwrap();
        match Log::open(dir.path(), config.clone()) {
            Err(Error::InvalidConfig {
                field: named,
                reason,
            }) => {
                assert_eq!(named, field, "{config:?}");
                assert!(!reason.is_empty());
            }
            other => panic!("expected InvalidConfig({field}), got {:?}", other.map(drop)),
        }
        assert!(
            names_in(dir.path()).is_empty(),
            "a refused config writes nothing"
        );
    }
    // The limits themselves are accepted.
    let dir = tempfile::tempdir().unwrap();
    let edge = Config::default()
        .segment_bytes(u64::from(u32::MAX))
        .max_index_bytes(64)
        .max_batch_bytes(65)
        .index_interval_bytes(1)
        .retention_bytes(Some(1));
    let log = open(dir.path(), edge);
    assert_eq!(log.config().max_batch_bytes, 65);
}

#[test]
fn a_directory_holding_foreign_files_is_not_a_log() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("report.csv"), b"a,b\n").unwrap();
    match Log::open(dir.path(), Config::default()) {
        Err(Error::NotALog { path, reason }) => {
            assert_eq!(path, dir.path());
            assert!(reason.contains("report.csv"), "{reason}");
        }
        other => panic!("expected NotALog, got {other:?}"),
    }
    assert_eq!(fs::read(dir.path().join("report.csv")).unwrap(), b"a,b\n");
    assert!(!dir.path().join("meta").exists(), "nothing written");
}

#[test]
fn a_leftover_temporary_metadata_file_is_not_foreign() {
    // A creation interrupted after writing `meta.tmp` but before renaming it.
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("meta.tmp"), b"partial").unwrap();
    let log = open(dir.path(), Config::default().partitions(2));
    assert_eq!(log.partition_count(), 2);
    assert_usable(&log.partition(1).unwrap());
    drop(log);
    assert_eq!(
        open(dir.path(), Config::default().partitions(2)).partition_count(),
        2
    );
}

#[test]
fn a_regular_file_is_not_a_log() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain");
    fs::write(&file, b"data").unwrap();
    assert!(matches!(
        Log::open(&file, Config::default()),
        Err(Error::NotALog { .. })
    ));
    assert_eq!(fs::read(&file).unwrap(), b"data");
}

#[test]
fn a_missing_directory_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a").join("b");
    let log = open(&nested, Config::default());
    assert_eq!(log.dir(), nested);
    assert_usable(&log.partition(0).unwrap());
}

/// Rewrites byte `at` of `<dir>/meta` and fixes its checksum (CRC-32 of
/// bytes 0..16, stored little-endian at 16..20).
fn patch_meta(dir: &Path, at: usize, value: u8) {
    let path = dir.join("meta");
    let mut meta = fs::read(&path).unwrap();
    assert_eq!(meta.len(), 20);
    meta[at] = value;
    let crc = crc32fast::hash(&meta[..16]);
    meta[16..20].copy_from_slice(&crc.to_le_bytes());
    fs::write(&path, meta).unwrap();
}

#[test]
fn metadata_of_a_newer_version_is_not_a_log() {
    let dir = tempfile::tempdir().unwrap();
    open(dir.path(), Config::default()).close().unwrap();
    let original = fs::read(dir.path().join("meta")).unwrap();
    patch_meta(dir.path(), 8, original[8] + 1);
    match Log::open(dir.path(), Config::default()) {
        Err(Error::NotALog { path, reason }) => {
            assert_eq!(path, dir.path().join("meta"));
            assert!(reason.contains("version"), "{reason}");
        }
        other => panic!("expected NotALog, got {other:?}"),
    }
    // Putting the version back makes it a log again.
    patch_meta(dir.path(), 8, original[8]);
    assert_eq!(fs::read(dir.path().join("meta")).unwrap(), original);
    assert_usable(&open(dir.path(), Config::default()).partition(0).unwrap());
}

#[test]
fn damaged_metadata_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    open(dir.path(), Config::default()).close().unwrap();
    let meta = dir.path().join("meta");
    let original = fs::read(&meta).unwrap();

    // A flipped bit without a matching checksum.
    let mut flipped = original.clone();
    flipped[12] ^= 1;
    fs::write(&meta, &flipped).unwrap();
    assert!(matches!(
        Log::open(dir.path(), Config::default()),
        Err(Error::Corrupt { .. })
    ));

    // The wrong magic.
    fs::write(&meta, &original).unwrap();
    patch_meta(dir.path(), 0, b'X');
    assert!(matches!(
        Log::open(dir.path(), Config::default()),
        Err(Error::NotALog { .. })
    ));

    // The wrong length.
    fs::write(&meta, &original[..19]).unwrap();
    assert!(matches!(
        Log::open(dir.path(), Config::default()),
        Err(Error::NotALog { .. })
    ));

    fs::write(&meta, &original).unwrap();
    open(dir.path(), Config::default()).close().unwrap();
}

#[test]
fn reducing_the_number_of_partitions_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path(), Config::default().partitions(3));
        append_each(&log.partition(2).unwrap(), 2, record);
        log.close().unwrap();
    }
    for fewer in [1, 2] {
        match Log::open(dir.path(), Config::default().partitions(fewer)) {
            Err(Error::InvalidConfig { field, .. }) => assert_eq!(field, "partitions"),
            other => panic!("expected InvalidConfig(partitions), got {other:?}"),
        }
    }
    let log = open(dir.path(), Config::default().partitions(3));
    assert_eq!(log.partition_count(), 3);
    let p = log.partition(2).unwrap();
    assert_eq!(p.end_offset(), 2);
    assert_usable(&p);
}

#[test]
fn the_partition_stays_usable_after_each_refused_operation() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::default().max_batch_bytes(512));
    let p = log.partition(0).unwrap();
    append_each(&p, 5, record);
    p.delete_records_before(2).unwrap();
    let attempts: Vec<(&str, durable_log::Result<()>)> = vec![
        ("empty append", p.append(&[]).map(drop)),
        (
            "oversized append",
            p.append(&[Record::new(vec![0u8; 600])]).map(drop),
        ),
        ("read below start", p.read(0, 10).map(drop)),
        ("read past end", p.read(6, 10).map(drop)),
        ("delete past end", p.delete_records_before(7)),
        ("unknown partition", log.partition(1).map(drop)),
    ];
    for (what, result) in attempts {
        assert!(result.is_err(), "{what} should fail");
        assert_eq!(
            (p.start_offset(), p.end_offset()),
            (2, 5),
            "{what} changed nothing"
        );
    }
    assert_usable(&p);
    assert_eq!(offsets(&read_all(&p)), vec![2, 3, 4, 5]);
    log.close().unwrap();
    let log = open(dir.path(), Config::default());
    assert!(log.recovery_reports()[0].clean);
    assert_eq!(
        offsets(&read_all(&log.partition(0).unwrap())),
        vec![2, 3, 4, 5]
    );
}

#[test]
fn handles_of_a_closed_log_answer_closed() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::default());
    let p = log.partition(0).unwrap();
    append_each(&p, 2, record);
    let mut reader = p.reader(0);
    assert_eq!(reader.next().unwrap().unwrap().offset, 0);
    log.close().unwrap();
    assert!(matches!(p.append(&[record(2)]), Err(Error::Closed)));
    assert!(matches!(p.read(0, 10), Err(Error::Closed)));
    assert!(matches!(p.sync(), Err(Error::Closed)));
    assert!(matches!(p.offset_for_timestamp(0), Err(Error::Closed)));
    assert!(matches!(
        p.wait_for(5, Duration::from_millis(1)),
        Err(Error::Closed)
    ));
    assert!(matches!(reader.next(), Some(Err(Error::Closed))));
    assert!(reader.next().is_none());
    // The data is intact for the next open.
    let log = open(dir.path(), Config::default());
    assert_eq!(log.partition(0).unwrap().end_offset(), 2);
}

#[test]
fn closing_the_log_wakes_a_waiting_reader() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::default());
    let p = log.partition(0).unwrap();
    let waiter = std::thread::spawn(move || p.wait_for(0, Duration::from_secs(3600)));
    // Closing wakes the waiter whether it is already waiting or not.
    log.close().unwrap();
    assert!(matches!(waiter.join().unwrap(), Err(Error::Closed)));
}

#[test]
fn a_newer_format_of_another_size_is_refused_by_its_version() {
    let dir = tempfile::tempdir().unwrap();
    Log::open(dir.path(), Config::default())
        .unwrap()
        .close()
        .unwrap();
    let meta = dir.path().join("meta");
    let mut bytes = std::fs::read(&meta).unwrap();
    bytes[8] = 2;
    bytes.extend_from_slice(&[0u8; 12]);
    std::fs::write(&meta, &bytes).unwrap();
    match Log::open(dir.path(), Config::default()) {
        Err(Error::NotALog { reason, .. }) => assert!(reason.contains("version 2"), "{reason}"),
        other => panic!("expected NotALog naming the version, got {other:?}"),
    }
}

#[test]
fn a_refused_foreign_directory_is_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
    assert!(matches!(
        Log::open(dir.path(), Config::default()),
        Err(Error::NotALog { .. })
    ));
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["notes.txt"]);
}
