//! Committed offsets and what a crash of the consumer does to delivery:
//! process-then-commit (at least once), commit-then-process (at most once),
//! auto-commit (duplicates bounded by the polls since the last auto-commit).
//!
//! A "crash" here drops the consumer without closing it, so it commits
//! nothing more, and reopens the log; `consumer_sigkill.rs` kills a real
//! process.

#![cfg(feature = "offsets")]

use std::path::Path;
use std::time::Duration;

use durable_log::offsets::{
    AutoOffsetReset, Consumer, ConsumerConfig, ConsumerRecord, OffsetAndMetadata, OffsetStore,
};
use durable_log::{Config, Error, Log, Record};

fn open(dir: &Path) -> Log {
    Log::open(dir, Config::default().partitions(2)).expect("open")
}

/// `n` records in partition `p`, valued `p-<offset>`.
fn fill(log: &Log, p: u32, n: u64) {
    let partition = log.partition(p).expect("partition");
    let base = partition.end_offset();
    let records: Vec<Record> = (base..base + n)
        .map(|o| Record::new(format!("{p}-{o}")))
        .collect();
    partition.append(&records).expect("append");
}

fn manual() -> ConsumerConfig {
    ConsumerConfig::new("g")
        .auto_commit(false)
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .max_poll_records(10)
}

fn consumer(log: &Log, config: ConsumerConfig) -> Consumer {
    let mut c = Consumer::new(log, config).expect("consumer");
    c.assign(&[0]).expect("assign");
    c
}

fn offsets(records: &[ConsumerRecord]) -> Vec<u64> {
    for r in records {
        let expected = format!("{}-{}", r.partition, r.offset);
        assert_eq!(r.value.as_deref(), Some(expected.as_bytes()));
    }
    records.iter().map(|r| r.offset).collect()
}

fn poll(c: &mut Consumer) -> Vec<u64> {
    offsets(&c.poll(Duration::ZERO).expect("poll"))
}

fn range(from: u64, to: u64) -> Vec<u64> {
    (from..to).collect()
}

#[test]
fn process_then_commit_delivers_the_uncommitted_records_again_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    fill(&log, 0, 30);
    let mut c = consumer(&log, manual());
    assert_eq!(poll(&mut c), range(0, 10));
    // Processed; then committed.
    c.commit_sync().expect("commit");
    assert_eq!(poll(&mut c), range(10, 20));
    // Processed, and the process dies before the commit.
    drop(c);
    drop(log);

    let log = open(dir.path());
    let mut c = consumer(&log, manual());
    assert_eq!(c.committed(0).unwrap(), Some(10));
    assert_eq!(poll(&mut c), range(10, 20), "at least once: 10..20 again");
    assert_eq!(poll(&mut c), range(20, 30));
    assert_eq!(poll(&mut c), range(0, 0));
}

#[test]
fn commit_then_process_never_delivers_the_committed_records_again() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    fill(&log, 0, 30);
    let mut c = consumer(&log, manual());
    assert_eq!(poll(&mut c), range(0, 10));
    c.commit_sync().expect("commit");
    // Processed 0..10.
    assert_eq!(poll(&mut c), range(10, 20));
    c.commit_sync().expect("commit");
    // The process dies before processing 10..20.
    drop(c);
    drop(log);

    let log = open(dir.path());
    let mut c = consumer(&log, manual());
    assert_eq!(c.position(0).unwrap(), 20);
    assert_eq!(poll(&mut c), range(20, 30), "at most once: 10..20 are gone");
    assert_eq!(poll(&mut c), range(0, 0));
}

#[test]
fn auto_commit_at_every_poll_redelivers_only_the_last_poll() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    fill(&log, 0, 30);
    let config = manual()
        .auto_commit(true)
        .auto_commit_interval(Duration::ZERO);
    let mut c = consumer(&log, config.clone());
    assert_eq!(poll(&mut c), range(0, 10));
    assert_eq!(c.committed(0).unwrap(), None, "nothing was returned before");
    // This poll commits what the previous one returned.
    assert_eq!(poll(&mut c), range(10, 20));
    assert_eq!(c.committed(0).unwrap(), Some(10));
    drop(c);
    drop(log);

    let log = open(dir.path());
    let mut c = consumer(&log, config);
    assert_eq!(poll(&mut c), range(10, 20), "exactly the last poll again");
}

#[test]
fn auto_commit_crash_inside_the_interval_redelivers_the_polls_since_the_last_auto_commit() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    fill(&log, 0, 40);
    let interval = Duration::from_millis(100);
    let config = manual().auto_commit(true).auto_commit_interval(interval);
    let mut c = consumer(&log, config.clone());
    let mut polled: Vec<(u64, Option<u64>)> = Vec::new();
    let mut record = |c: &mut Consumer| {
        for offset in poll(c) {
            polled.push((offset, None));
        }
        let committed = c.committed(0).unwrap();
        if let Some(last) = polled.last_mut() {
            last.1 = committed;
        }
        committed
    };
    record(&mut c);
    std::thread::sleep(interval + interval / 2);
    // The interval has passed: this poll commits the first poll's records.
    assert_eq!(record(&mut c), Some(10));
    // Within the interval (unless the machine stalled), no commit.
    let committed = record(&mut c);
    assert!(committed == Some(10) || committed == Some(20));
    drop(c);
    drop(log);

    let log = open(dir.path());
    let mut c = consumer(&log, config);
    let restart = c.position(0).unwrap();
    assert_eq!(Some(restart), committed);
    let mut again = Vec::new();
    loop {
        let next = poll(&mut c);
        if next.is_empty() {
            break;
        }
        again.extend(next);
    }
    assert_eq!(again, range(restart, 40));
    // Exactly what was polled since the last auto-commit comes again.
    let since: Vec<u64> = polled
        .iter()
        .map(|&(o, _)| o)
        .filter(|&o| o >= restart)
        .collect();
    assert_eq!(again[..since.len()], since[..]);
    assert_eq!(since.len(), if restart == 10 { 20 } else { 10 });
}

#[test]
fn without_an_auto_commit_a_crash_redelivers_everything_and_close_commits() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    fill(&log, 0, 30);
    let config = manual()
        .auto_commit(true)
        .auto_commit_interval(Duration::from_secs(3600));
    let mut c = consumer(&log, config.clone());
    assert_eq!(poll(&mut c), range(0, 10));
    assert_eq!(poll(&mut c), range(10, 20));
    drop(c);

    let mut c = consumer(&log, config.clone());
    assert_eq!(c.committed(0).unwrap(), None);
    assert_eq!(poll(&mut c), range(0, 10));
    c.close().expect("close commits");

    let mut c = consumer(&log, config);
    assert_eq!(c.committed(0).unwrap(), Some(10));
    assert_eq!(poll(&mut c), range(10, 20));
}

#[test]
fn committed_offsets_survive_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    fill(&log, 0, 5);
    fill(&log, 1, 5);
    let c = Consumer::new(&log, manual()).expect("consumer");
    c.commit_with_metadata(&[
        (0, OffsetAndMetadata::new(3).with_metadata("checkpoint a")),
        (1, OffsetAndMetadata::new(4)),
    ])
    .expect("commit");
    c.close().expect("close");
    log.close().expect("close");

    let log = open(dir.path());
    let mut c = Consumer::new(&log, manual()).expect("consumer");
    assert_eq!(
        c.committed_metadata(0).unwrap(),
        Some(OffsetAndMetadata::new(3).with_metadata("checkpoint a"))
    );
    assert_eq!(c.committed(1).unwrap(), Some(4));
    c.assign(&[0, 1]).unwrap();
    assert_eq!((c.position(0).unwrap(), c.position(1).unwrap()), (3, 4));
    assert!(dir.path().join("__consumer_offsets").is_dir());
}

#[test]
fn a_fresh_log_with_an_offset_store_reopens_and_grows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new");
    let log = Log::open(&path, Config::default()).expect("create");
    let c = Consumer::new(&log, manual()).expect("consumer");
    c.commit(&[(0, 0)]).expect("commit");
    drop(c);
    drop(log);
    // The store's directory is not taken for a foreign file, also when the
    // log grows.
    let log = Log::open(&path, Config::default().partitions(3)).expect("reopen");
    let c = Consumer::new(&log, manual()).expect("consumer");
    assert_eq!(c.committed(0).unwrap(), Some(0));
    c.commit(&[(2, 0)]).expect("a new partition");
    assert!(matches!(
        c.commit(&[(3, 0)]),
        Err(Error::UnknownPartition {
            partition: 3,
            partitions: 3
        })
    ));
}

#[test]
fn commit_changes_no_position_and_groups_are_independent() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    fill(&log, 0, 10);
    let mut a = consumer(&log, manual());
    let mut b = consumer(&log, ConsumerConfig::new("other").auto_commit(false));
    assert_eq!(poll(&mut a), range(0, 10));
    a.commit(&[(0, 4)]).expect("commit");
    assert_eq!(a.position(0).unwrap(), 10);
    assert_eq!(a.committed(0).unwrap(), Some(4));
    assert_eq!(b.committed(0).unwrap(), None);
    // The other group has no commit and resets to the end (Latest).
    assert_eq!(b.position(0).unwrap(), 10);
    // Both consumers share the process's one store of this log.
    let store = OffsetStore::open(&log).expect("store");
    assert_eq!(store.groups(), ["g"]);
    assert_eq!(store.dir(), a.store().dir());
    b.commit_sync().expect("commit");
    assert_eq!(store.groups(), ["g", "other"]);
}

#[test]
fn taking_a_partition_away_commits_it_with_auto_commit() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    fill(&log, 0, 10);
    fill(&log, 1, 10);
    let config = manual()
        .auto_commit(true)
        .auto_commit_interval(Duration::from_secs(3600));
    let mut c = Consumer::new(&log, config).expect("consumer");
    c.assign(&[0, 1]).unwrap();
    let records = c.poll(Duration::ZERO).unwrap();
    assert_eq!(records.len(), 10);
    let (p0, p1) = (c.position(0).unwrap(), c.position(1).unwrap());
    assert_eq!(p0 + p1, 10);
    c.assign(&[1]).unwrap();
    assert_eq!(c.committed(0).unwrap(), Some(p0), "the revoked partition");
    assert_eq!(c.committed(1).unwrap(), None, "the kept partition");
    // The kept partition keeps its position.
    assert_eq!(c.position(1).unwrap(), p1);
    assert_eq!(c.assignment(), [1]);
}

#[test]
fn manual_commit_with_auto_commit_off_commits_nothing_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    fill(&log, 0, 10);
    let mut c = consumer(&log, manual());
    assert_eq!(poll(&mut c), range(0, 10));
    c.assign(&[1]).unwrap();
    c.close().unwrap();
    let c = Consumer::new(&log, manual()).unwrap();
    assert_eq!(c.committed(0).unwrap(), None);
}
