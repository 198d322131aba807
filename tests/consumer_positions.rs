//! Where a consumer reads: reset policies, seeks, lag, and the errors for
//! partitions it does not have.

#![cfg(feature = "offsets")]

use std::path::Path;
use std::time::Duration;

use durable_log::offsets::{AutoOffsetReset, Consumer, ConsumerConfig, ConsumerRecord};
use durable_log::{Config, Error, Log, Record};

fn open(dir: &Path) -> Log {
    Log::open(dir, Config::default().partitions(2)).expect("open")
}

fn fill(log: &Log, p: u32, n: u64) {
    let partition = log.partition(p).expect("partition");
    let base = partition.end_offset();
    let records: Vec<Record> = (base..base + n)
        .map(|o| Record::new(format!("{p}-{o}")))
        .collect();
    partition.append(&records).expect("append");
}

fn config(reset: AutoOffsetReset) -> ConsumerConfig {
    ConsumerConfig::new("g")
        .auto_commit(false)
        .auto_offset_reset(reset)
        .max_poll_records(100)
}

fn consumer(log: &Log, reset: AutoOffsetReset) -> Consumer {
    let mut c = Consumer::new(log, config(reset)).expect("consumer");
    c.assign(&[0]).expect("assign");
    c
}

fn offsets(records: Vec<ConsumerRecord>) -> Vec<u64> {
    records.iter().map(|r| r.offset).collect()
}

fn poll(c: &mut Consumer) -> Vec<u64> {
    offsets(c.poll(Duration::ZERO).expect("poll"))
}

fn range(from: u64, to: u64) -> Vec<u64> {
    (from..to).collect()
}

#[test]
fn earliest_starts_at_the_first_stored_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    fill(&log, 0, 10);
    log.partition(0).unwrap().delete_records_before(4).unwrap();
    let mut c = consumer(&log, AutoOffsetReset::Earliest);
    assert_eq!(c.position(0).unwrap(), 4);
    assert_eq!(poll(&mut c), range(4, 10));
}

#[test]
fn latest_starts_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    fill(&log, 0, 10);
    let mut c = consumer(&log, AutoOffsetReset::Latest);
    assert_eq!(poll(&mut c), range(0, 0));
    assert_eq!(c.position(0).unwrap(), 10);
    fill(&log, 0, 2);
    assert_eq!(poll(&mut c), range(10, 12));
}

#[test]
fn none_refuses_until_the_application_seeks() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    fill(&log, 0, 10);
    let mut c = consumer(&log, AutoOffsetReset::None);
    let no_offset = |e: Error| matches!(e, Error::NoCommittedOffset { ref group, partition: 0 } if group == "g");
    assert!(no_offset(c.poll(Duration::ZERO).unwrap_err()));
    assert!(no_offset(c.position(0).unwrap_err()));
    assert!(no_offset(c.lag().unwrap_err()));
    c.seek(0, 7).unwrap();
    assert_eq!(poll(&mut c), range(7, 10));

    // With a commit, no reset is needed.
    c.commit(&[(0, 2)]).unwrap();
    let mut c = consumer(&log, AutoOffsetReset::None);
    assert_eq!(poll(&mut c), range(2, 10));
}

#[test]
fn a_committed_offset_out_of_range_is_reset() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    fill(&log, 0, 10);
    let setup = consumer(&log, AutoOffsetReset::None);
    setup.commit(&[(0, 100)]).unwrap();

    let mut c = consumer(&log, AutoOffsetReset::None);
    assert!(matches!(
        c.poll(Duration::ZERO),
        Err(Error::OffsetOutOfRange {
            requested: 100,
            start: 0,
            end: 10
        })
    ));
    let mut c = consumer(&log, AutoOffsetReset::Earliest);
    assert_eq!(poll(&mut c), range(0, 10));
    let mut c = consumer(&log, AutoOffsetReset::Latest);
    assert_eq!(c.position(0).unwrap(), 10);

    // Below the start too.
    log.partition(0).unwrap().delete_records_before(5).unwrap();
    setup.commit(&[(0, 3)]).unwrap();
    let mut c = consumer(&log, AutoOffsetReset::Earliest);
    assert_eq!(c.position(0).unwrap(), 5);
    let mut c = consumer(&log, AutoOffsetReset::None);
    assert!(matches!(
        c.position(0),
        Err(Error::OffsetOutOfRange {
            requested: 3,
            start: 5,
            end: 10
        })
    ));
}

#[test]
fn a_position_overtaken_by_deleted_records_is_reset() {
    for (reset, expected) in [
        (AutoOffsetReset::Earliest, Some(range(8, 10))),
        (AutoOffsetReset::Latest, Some(range(0, 0))),
        (AutoOffsetReset::None, None),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        fill(&log, 0, 10);
        let mut c = consumer(&log, reset);
        c.seek(0, 0).unwrap();
        assert_eq!(poll(&mut c), range(0, 10));
        c.seek(0, 2).unwrap();
        log.partition(0).unwrap().delete_records_before(8).unwrap();
        match expected {
            Some(expected) => {
                assert_eq!(poll(&mut c), expected, "{reset:?}");
                assert_eq!(c.position(0).unwrap(), 10);
            }
            None => {
                assert!(matches!(
                    c.poll(Duration::ZERO),
                    Err(Error::OffsetOutOfRange {
                        requested: 2,
                        start: 8,
                        end: 10
                    })
                ));
                assert_eq!(c.position(0).unwrap(), 2, "the position is kept");
            }
        }
    }
}

#[test]
fn seeks_move_the_next_poll() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    fill(&log, 0, 10);
    let mut c = consumer(&log, AutoOffsetReset::Latest);
    c.seek(0, 5).unwrap();
    assert_eq!(c.position(0).unwrap(), 5);
    assert_eq!(poll(&mut c), range(5, 10));
    // Back: delivered again.
    c.seek(0, 8).unwrap();
    assert_eq!(poll(&mut c), range(8, 10));
    c.seek_to_beginning(0).unwrap();
    assert_eq!(poll(&mut c), range(0, 10));
    c.seek(0, 3).unwrap();
    c.seek_to_end(0).unwrap();
    fill(&log, 0, 1);
    // Decided at the poll, not at the seek.
    assert_eq!(poll(&mut c), range(0, 0));
    assert_eq!(c.position(0).unwrap(), 11);
    // Past the end: the reset policy decides.
    c.seek(0, 50).unwrap();
    fill(&log, 0, 1);
    assert_eq!(poll(&mut c), range(0, 0));
    assert_eq!(c.position(0).unwrap(), 12);
    let mut c = consumer(&log, AutoOffsetReset::Earliest);
    c.seek(0, 50).unwrap();
    assert_eq!(poll(&mut c), range(0, 12));
}

#[test]
fn lag_is_the_distance_to_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    fill(&log, 0, 10);
    fill(&log, 1, 4);
    let mut c = Consumer::new(&log, config(AutoOffsetReset::Earliest).max_poll_records(3)).unwrap();
    c.assign(&[1, 0]).unwrap();
    assert_eq!(c.lag().unwrap(), [(1, 4), (0, 10)]);
    let records = c.poll(Duration::ZERO).unwrap();
    assert_eq!(records.len(), 3);
    let from_0 = records.iter().filter(|r| r.partition == 0).count() as u64;
    let from_1 = 3 - from_0;
    assert_eq!(c.lag().unwrap(), [(1, 4 - from_1), (0, 10 - from_0)]);
    fill(&log, 0, 5);
    assert_eq!(c.lag().unwrap(), [(1, 4 - from_1), (0, 15 - from_0)]);
    c.seek_to_end(1).unwrap();
    assert_eq!(c.lag().unwrap()[0], (1, 0));
}

#[test]
fn partitions_not_assigned_or_not_in_the_log_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let mut c = consumer(&log, AutoOffsetReset::Earliest);
    assert!(matches!(
        c.position(1),
        Err(Error::NotAssigned { partition: 1 })
    ));
    assert!(matches!(
        c.seek(1, 0),
        Err(Error::NotAssigned { partition: 1 })
    ));
    assert!(matches!(
        c.seek_to_end(1),
        Err(Error::NotAssigned { partition: 1 })
    ));
    assert!(matches!(
        c.assign(&[0, 2]),
        Err(Error::UnknownPartition {
            partition: 2,
            partitions: 2
        })
    ));
    assert_eq!(c.assignment(), [0], "a refused assignment changes nothing");
    assert!(matches!(
        c.committed(9),
        Err(Error::UnknownPartition { partition: 9, .. })
    ));
    c.assign(&[1, 1, 0]).unwrap();
    assert_eq!(c.assignment(), [1, 0]);
    c.assign(&[]).unwrap();
    assert_eq!(c.lag().unwrap(), []);
}

#[test]
fn invalid_settings_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    for (config, field) in [
        (ConsumerConfig::new(""), "group_id"),
        (ConsumerConfig::new("x".repeat(256)), "group_id"),
        (
            ConsumerConfig::new("g").max_poll_records(0),
            "max_poll_records",
        ),
    ] {
        match Consumer::new(&log, config) {
            Err(Error::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
            other => panic!("expected InvalidConfig for {field}, got {other:?}"),
        }
    }
    let c = Consumer::new(&log, ConsumerConfig::new("g")).unwrap();
    assert!(matches!(
        c.commit_with_metadata(&[(
            0,
            durable_log::offsets::OffsetAndMetadata::new(1).with_metadata("m".repeat(5000))
        )]),
        Err(Error::OffsetMetadataTooLarge {
            size: 5000,
            max: 4096
        })
    ));
    assert_eq!(c.committed(0).unwrap(), None);
}
