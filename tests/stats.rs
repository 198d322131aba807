//! The `stats()` snapshot counts what happened.

use std::sync::Arc;

use durable_log::{Compression, Config, Durability, Log, Record};

#[test]
fn counters_follow_appends_reads_and_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default()
        .segment_bytes(1024)
        .compression(Compression::Lz4);
    let log = Log::open(dir.path(), config).unwrap();
    let p = log.partition(0).unwrap();
    let line = "{\"level\":\"INFO\",\"msg\":\"the same words again and again\"}";
    for _ in 0..50 {
        p.append(&vec![Record::new(line); 20]).unwrap();
    }
    let s = p.stats();
    assert_eq!(s.batches_appended, 50);
    assert_eq!(s.records_appended, 1000);
    assert!(s.compression_ratio() > 2.0, "{}", s.compression_ratio());
    assert!(s.bytes_appended < s.bytes_appended_uncompressed);
    assert_eq!(s.end_offset, 1000);
    assert_eq!(s.durable_offset, 1000);
    assert!(s.rolls > 0 && s.segments == s.rolls + 1);
    // Every Sync append was covered by a group commit or a roll's fsync.
    assert!(s.group_commits >= 1 && s.group_commits <= 50);
    assert!(s.fsyncs >= s.group_commits);
    assert_eq!(s.batches_read, 0);
    assert_eq!(p.reader(0).count(), 1000);
    let s = p.stats();
    assert_eq!(s.batches_read, 50);
    assert_eq!(s.bytes_read, s.bytes_appended);
    assert!(!s.recovery.clean);
    log.close().unwrap();
    let log = Log::open(dir.path(), Config::default()).unwrap();
    let s = log.partition(0).unwrap().stats();
    assert!(s.recovery.clean);
    assert_eq!(s.batches_appended, 0);
    assert_eq!(s.size_bytes, log.partition(0).unwrap().size_bytes());
}

#[test]
fn concurrent_sync_appenders_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let log =
        Arc::new(Log::open(dir.path(), Config::default().durability(Durability::Sync)).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let p = log.partition(0).unwrap();
            std::thread::spawn(move || {
                for i in 0..50 {
                    p.append(&[Record::new(format!("{i}"))]).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let s = log.partition(0).unwrap().stats();
    assert_eq!(s.batches_appended, 400);
    assert_eq!(s.group_commit_batches, 400);
    // Each fsync covers at least one batch; with eight writers most cover more.
    assert!(s.group_commits <= 400);
    assert!(s.average_group_commit() >= 1.0);
}

#[test]
fn space_written_ahead_is_not_reported_as_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), Config::default().durability(Durability::Sync)).unwrap();
    let p = log.partition(0).unwrap();
    for i in 0..10 {
        p.append(&[Record::new(format!("{i}"))]).unwrap();
    }
    let path = dir.path().join("0").join(format!("{:020}.log", 0));
    // Appends with Durability::Sync overwrite zeros written ahead.
    assert!(std::fs::metadata(&path).unwrap().len() > p.size_bytes());
    // Simulate an unclean shutdown: copy the files as they are while open.
    let copy = tempfile::tempdir().unwrap();
    let to = copy.path().join("0");
    std::fs::create_dir_all(&to).unwrap();
    std::fs::copy(dir.path().join("meta"), copy.path().join("meta")).unwrap();
    for entry in std::fs::read_dir(dir.path().join("0")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
    let reopened = Log::open(copy.path(), Config::default()).unwrap();
    let report = &reopened.recovery_reports()[0];
    assert!(!report.clean);
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(reopened.partition(0).unwrap().end_offset(), 10);
    drop(reopened);
    log.close().unwrap();
    // A clean close cuts the zeros.
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        log_size(dir.path())
    );
}

fn log_size(dir: &std::path::Path) -> u64 {
    let log = Log::open(dir, Config::default()).unwrap();
    log.partition(0).unwrap().size_bytes()
}
