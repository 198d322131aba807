//! Retention by size and by age, `delete_records_before`, and what they
//! leave after a reopen.

mod log_common;

use std::time::{Duration, Instant};

use durable_log::{Config, Error, Partition, Record};
use log_common::*;

/// A keyless record of fixed size stamped `timestamp`.
fn stamped(i: u64, timestamp: i64) -> Record {
    Record::new(format!("value-{i:06}")).with_timestamp(timestamp)
}

/// Size of one batch of one `stamped` record.
fn batch_bytes() -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::default());
    let p = log.partition(0).unwrap();
    p.append(&[stamped(0, base_ts())]).unwrap();
    p.size_bytes()
}

/// Appends `count` one-record batches stamped `timestamp`.
fn fill(p: &Partition, count: u64, timestamp: i64) {
    for _ in 0..count {
        let i = p.end_offset();
        p.append(&[stamped(i, timestamp)]).unwrap();
    }
}

fn assert_reads_exactly(p: &Partition, start: u64, end: u64) {
    assert_eq!((p.start_offset(), p.end_offset()), (start, end));
    if start > 0 {
        match p.read(start - 1, 1 << 20) {
            Err(Error::OffsetOutOfRange {
                requested,
                start: s,
                end: e,
            }) => assert_eq!((requested, s, e), (start - 1, start, end)),
            other => panic!("expected OffsetOutOfRange below {start}, got {other:?}"),
        }
    }
    let all = read_from(p, start);
    assert_eq!(offsets(&all), (start..end).collect::<Vec<_>>());
    for r in &all {
        assert_eq!(
            r.value.as_deref(),
            Some(format!("value-{:06}", r.offset).as_bytes())
        );
    }
}

#[test]
fn retention_by_size_deletes_the_oldest_segments_beyond_the_limit() {
    let b = batch_bytes();
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default()
        .segment_bytes(3 * b)
        .retention_bytes(Some(10 * b));
    let log = open(dir.path(), config);
    let p = log.partition(0).unwrap();
    fill(&p, 30, base_ts());
    assert_eq!(p.segment_count(), 10);
    assert_eq!(p.size_bytes(), 30 * b);
    // 20 batches too many: six whole segments of three go; a seventh would
    // leave less than the limit.
    assert_eq!(log.enforce_retention().unwrap(), 6);
    assert_eq!(p.segment_count(), 4);
    assert_eq!(p.size_bytes(), 12 * b);
    assert_eq!(base_of(&log_files(dir.path(), 0)[0]), 18);
    assert_reads_exactly(&p, 18, 30);
    assert_eq!(
        log.enforce_retention().unwrap(),
        0,
        "nothing more to delete"
    );
}

#[test]
fn retention_by_size_never_deletes_the_active_segment() {
    let b = batch_bytes();
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default().retention_bytes(Some(b));
    let log = open(dir.path(), config);
    let p = log.partition(0).unwrap();
    fill(&p, 10, base_ts());
    assert_eq!(p.segment_count(), 1);
    assert_eq!(log.enforce_retention().unwrap(), 0);
    assert_reads_exactly(&p, 0, 10);
}

#[test]
fn retention_by_size_smaller_than_a_segment_keeps_only_the_active_one() {
    let b = batch_bytes();
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default()
        .segment_bytes(4 * b)
        .retention_bytes(Some(1));
    let log = open(dir.path(), config);
    let p = log.partition(0).unwrap();
    fill(&p, 18, base_ts());
    assert_eq!(p.segment_count(), 5);
    assert_eq!(log.enforce_retention().unwrap(), 4);
    assert_eq!(p.segment_count(), 1);
    assert_reads_exactly(&p, 16, 18);
    fill(&p, 1, base_ts());
    assert_reads_exactly(&p, 16, 19);
}

#[test]
fn retention_by_age_deletes_segments_whose_newest_record_is_too_old() {
    let b = batch_bytes();
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default()
        .segment_bytes(3 * b)
        .retention_age(Some(Duration::from_secs(3600)));
    let log = open(dir.path(), config);
    let p = log.partition(0).unwrap();
    let old = now_ms() - 2 * HOUR_MS;
    fill(&p, 9, old);
    fill(&p, 4, now_ms());
    assert_eq!(p.segment_count(), 5);
    assert_eq!(log.enforce_retention().unwrap(), 3);
    assert_eq!(p.segment_count(), 2);
    assert_reads_exactly(&p, 9, 13);
}

#[test]
fn retention_by_age_deletes_only_a_prefix_of_the_log() {
    let b = batch_bytes();
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default()
        .segment_bytes(3 * b)
        .retention_age(Some(Duration::from_secs(3600)));
    let log = open(dir.path(), config);
    let p = log.partition(0).unwrap();
    let old = now_ms() - 2 * HOUR_MS;
    fill(&p, 3, old); // segment 0: expired
    fill(&p, 1, old);
    fill(&p, 1, now_ms());
    fill(&p, 1, old); // segment 3: not expired (newest record is recent)
    fill(&p, 3, old); // segment 6: expired, but after a live one
    fill(&p, 1, now_ms()); // active
    assert_eq!(p.segment_count(), 4);
    assert_eq!(log.enforce_retention().unwrap(), 1);
    assert_reads_exactly(&p, 3, 10);
}

#[test]
fn retention_by_age_never_deletes_the_active_segment() {
    let b = batch_bytes();
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default()
        .segment_bytes(3 * b)
        .retention_age(Some(Duration::from_secs(3600)));
    let log = open(dir.path(), config);
    let p = log.partition(0).unwrap();
    let old = now_ms() - 2 * HOUR_MS;
    fill(&p, 2, old);
    assert_eq!(
        log.enforce_retention().unwrap(),
        0,
        "only the active segment"
    );
    fill(&p, 6, old);
    assert_eq!(p.segment_count(), 3);
    assert_eq!(log.enforce_retention().unwrap(), 2);
    assert_eq!(p.segment_count(), 1);
    assert_reads_exactly(&p, 6, 8);
    fill(&p, 1, now_ms());
    assert_reads_exactly(&p, 6, 9);
}

#[test]
fn without_limits_retention_deletes_nothing() {
    let b = batch_bytes();
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default()
        .segment_bytes(2 * b)
        .retention_age(None)
        .retention_bytes(None);
    let log = open(dir.path(), config);
    let p = log.partition(0).unwrap();
    fill(&p, 10, 0);
    assert_eq!(log.enforce_retention().unwrap(), 0);
    assert_reads_exactly(&p, 0, 10);
}

#[test]
fn retention_runs_over_every_partition() {
    let b = batch_bytes();
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default()
        .partitions(3)
        .segment_bytes(2 * b)
        .retention_bytes(Some(2 * b));
    let log = open(dir.path(), config);
    for id in 0..3 {
        fill(
            &log.partition(id).unwrap(),
            2 * (u64::from(id) + 2),
            base_ts(),
        );
    }
    // Partitions hold 2, 3 and 4 full segments, one of them active; all but
    // the last full one beyond the limit go.
    assert_eq!(log.enforce_retention().unwrap(), 1 + 2 + 3);
    for id in 0..3 {
        let p = log.partition(id).unwrap();
        let end = 2 * (u64::from(id) + 2);
        assert_reads_exactly(&p, end - 2, end);
    }
}

#[test]
fn retention_survives_reopen() {
    let b = batch_bytes();
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default()
        .segment_bytes(3 * b)
        .retention_bytes(Some(6 * b));
    {
        let log = open(dir.path(), config.clone());
        let p = log.partition(0).unwrap();
        fill(&p, 15, base_ts());
        assert_eq!(log.enforce_retention().unwrap(), 3);
        log.close().unwrap();
    }
    let log = open(dir.path(), config);
    let p = log.partition(0).unwrap();
    assert_eq!(p.segment_count(), 2);
    assert_reads_exactly(&p, 9, 15);
}

#[test]
fn background_retention_runs_on_its_own() {
    let b = batch_bytes();
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default()
        .segment_bytes(2 * b)
        .retention_bytes(Some(2 * b))
        .retention_check_interval(Duration::from_millis(20));
    let log = open(dir.path(), config);
    let p = log.partition(0).unwrap();
    fill(&p, 8, base_ts());
    // A liveness bound, not a speed requirement.
    let give_up = Instant::now() + Duration::from_secs(60);
    while p.start_offset() != 6 && Instant::now() < give_up {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        p.start_offset(),
        6,
        "the background thread enforced retention"
    );
    assert_reads_exactly(&p, 6, 8);
}

#[test]
fn delete_records_before_advances_the_start_offset_and_deletes_whole_segments() {
    let b = batch_bytes();
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::default().segment_bytes(3 * b));
    let p = log.partition(0).unwrap();
    fill(&p, 12, base_ts());
    let files = log_files(dir.path(), 0);
    assert_eq!(files.len(), 4);
    p.delete_records_before(7).unwrap();
    assert_reads_exactly(&p, 7, 12);
    // Segments at 0 and 3 held only offsets below 7; the one at 6 stays.
    assert!(!files[0].exists() && !files[1].exists());
    assert_eq!(log_files(dir.path(), 0), files[2..].to_vec());
    assert_eq!(p.segment_count(), 2);
}

#[test]
fn delete_records_before_never_moves_the_start_offset_back() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::default());
    let p = log.partition(0).unwrap();
    fill(&p, 10, base_ts());
    p.delete_records_before(5).unwrap();
    p.delete_records_before(3).unwrap();
    p.delete_records_before(5).unwrap();
    assert_reads_exactly(&p, 5, 10);
}

#[test]
fn delete_records_before_the_end_offset_empties_the_partition() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default();
    {
        let log = open(dir.path(), config.clone());
        let p = log.partition(0).unwrap();
        fill(&p, 4, base_ts());
        p.delete_records_before(4).unwrap();
        assert_reads_exactly(&p, 4, 4);
        assert!(p.read(4, 100).unwrap().is_empty());
        assert_eq!(p.offset_for_timestamp(i64::MIN).unwrap(), None);
        log.close().unwrap();
    }
    let log = open(dir.path(), config);
    let p = log.partition(0).unwrap();
    assert_reads_exactly(&p, 4, 4);
    fill(&p, 2, base_ts());
    assert_reads_exactly(&p, 4, 6);
}

#[test]
fn delete_records_before_past_the_end_is_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::default());
    let p = log.partition(0).unwrap();
    fill(&p, 3, base_ts());
    match p.delete_records_before(4) {
        Err(Error::OffsetOutOfRange {
            requested: 4,
            start: 0,
            end: 3,
        }) => {}
        other => panic!("expected OffsetOutOfRange, got {other:?}"),
    }
    assert_reads_exactly(&p, 0, 3);
    fill(&p, 1, base_ts());
    assert_reads_exactly(&p, 0, 4);
}

#[test]
fn delete_records_before_persists_across_reopen() {
    let b = batch_bytes();
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default().segment_bytes(3 * b);
    {
        let log = open(dir.path(), config.clone());
        let p = log.partition(0).unwrap();
        fill(&p, 10, base_ts());
        p.delete_records_before(4).unwrap();
        log.close().unwrap();
    }
    {
        let log = open(dir.path(), config.clone());
        assert!(log.recovery_reports()[0].clean);
        let p = log.partition(0).unwrap();
        assert_reads_exactly(&p, 4, 10);
        // Inside the active segment this time.
        p.delete_records_before(9).unwrap();
        log.close().unwrap();
    }
    let log = open(dir.path(), config);
    let p = log.partition(0).unwrap();
    assert_reads_exactly(&p, 9, 10);
    assert_eq!(p.offset_for_timestamp(i64::MIN).unwrap(), Some(9));
}
