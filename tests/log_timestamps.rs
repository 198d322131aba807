//! `Partition::offset_for_timestamp`: the first offset whose record has a
//! timestamp at or after the target, checked against a simple model.

mod log_common;

use durable_log::{Config, Partition, Record};
use log_common::*;

/// Model: the first offset at or after `start` whose timestamp is at least
/// `target`. `timestamps[i]` is the timestamp of offset `i`.
fn model(timestamps: &[i64], start: u64, target: i64) -> Option<u64> {
    (start..timestamps.len() as u64).find(|&o| timestamps[o as usize] >= target)
}

/// Appends records with these timestamps (relative to `base_ts()`) in
/// batches of the given sizes, cycling through `batch_sizes`.
fn append_with_timestamps(p: &Partition, deltas: &[i64], batch_sizes: &[usize]) -> Vec<i64> {
    let mut timestamps = Vec::new();
    let mut i = 0;
    let mut sizes = batch_sizes.iter().cycle();
    while i < deltas.len() {
        let n = (*sizes.next().unwrap()).min(deltas.len() - i);
        let batch: Vec<Record> = deltas[i..i + n]
            .iter()
            .enumerate()
            .map(|(j, d)| Record::new(format!("r{}", i + j)).with_timestamp(base_ts() + d))
            .collect();
        p.append(&batch).unwrap();
        timestamps.extend(deltas[i..i + n].iter().map(|d| base_ts() + d));
        i += n;
    }
    timestamps
}

/// Checks every target from below the smallest to above the largest
/// timestamp against the model.
fn check_all_targets(p: &Partition, timestamps: &[i64]) {
    let lo = *timestamps.iter().min().unwrap() - 2;
    let hi = *timestamps.iter().max().unwrap() + 2;
    let start = p.start_offset();
    for target in lo..=hi {
        assert_eq!(
            p.offset_for_timestamp(target).unwrap(),
            model(timestamps, start, target),
            "target {} (start offset {start})",
            target - base_ts()
        );
    }
}

/// Deterministic pseudo-random deltas in `0..range`.
fn scrambled(count: usize, range: i64, seed: u64) -> Vec<i64> {
    let mut state = seed;
    (0..count)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 33) % range as u64) as i64
        })
        .collect()
}

#[test]
fn increasing_timestamps_find_the_first_record_at_or_after_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::default());
    let p = log.partition(0).unwrap();
    let deltas: Vec<i64> = (0..20).map(|i| 10 * i).collect();
    let ts = append_with_timestamps(&p, &deltas, &[1, 3, 2]);
    assert_eq!(p.offset_for_timestamp(base_ts()).unwrap(), Some(0));
    assert_eq!(p.offset_for_timestamp(base_ts() + 10).unwrap(), Some(1));
    assert_eq!(p.offset_for_timestamp(base_ts() + 11).unwrap(), Some(2));
    assert_eq!(p.offset_for_timestamp(base_ts() + 190).unwrap(), Some(19));
    check_all_targets(&p, &ts);
}

#[test]
fn equal_timestamps_find_the_first_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::default());
    let p = log.partition(0).unwrap();
    let deltas = [5, 7, 7, 7, 7, 7, 9, 9, 9];
    let ts = append_with_timestamps(&p, &deltas, &[2]);
    assert_eq!(p.offset_for_timestamp(base_ts() + 7).unwrap(), Some(1));
    assert_eq!(p.offset_for_timestamp(base_ts() + 8).unwrap(), Some(6));
    assert_eq!(p.offset_for_timestamp(base_ts() + 9).unwrap(), Some(6));
    check_all_targets(&p, &ts);
}

#[test]
fn out_of_order_timestamps_find_the_first_offset_not_the_closest_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::default());
    let p = log.partition(0).unwrap();
    let deltas = [100, 300, 200, 400, 150, 50, 350];
    let ts = append_with_timestamps(&p, &deltas, &[2, 1]);
    assert_eq!(p.offset_for_timestamp(base_ts() + 150).unwrap(), Some(1));
    assert_eq!(p.offset_for_timestamp(base_ts() + 250).unwrap(), Some(1));
    assert_eq!(p.offset_for_timestamp(base_ts() + 301).unwrap(), Some(3));
    assert_eq!(p.offset_for_timestamp(base_ts() + 401).unwrap(), None);
    check_all_targets(&p, &ts);
}

#[test]
fn out_of_order_timestamps_across_segments_match_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default()
        .segment_bytes(800)
        .index_interval_bytes(100);
    let log = open(dir.path(), config);
    let p = log.partition(0).unwrap();
    let deltas = scrambled(120, 400, 7);
    let ts = append_with_timestamps(&p, &deltas, &[1, 4, 2, 3]);
    assert!(p.segment_count() > 3);
    check_all_targets(&p, &ts);
}

#[test]
fn a_target_before_every_record_finds_the_start_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::default().segment_bytes(500));
    let p = log.partition(0).unwrap();
    let deltas: Vec<i64> = (0..30).collect();
    append_with_timestamps(&p, &deltas, &[2]);
    assert_eq!(p.offset_for_timestamp(i64::MIN).unwrap(), Some(0));
    assert_eq!(p.offset_for_timestamp(0).unwrap(), Some(0));
    assert_eq!(p.offset_for_timestamp(base_ts() - 1).unwrap(), Some(0));
}

#[test]
fn a_target_after_every_record_finds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::default().segment_bytes(500));
    let p = log.partition(0).unwrap();
    assert_eq!(p.offset_for_timestamp(0).unwrap(), None, "empty partition");
    let deltas: Vec<i64> = (0..30).collect();
    append_with_timestamps(&p, &deltas, &[3]);
    assert_eq!(p.offset_for_timestamp(base_ts() + 30).unwrap(), None);
    assert_eq!(p.offset_for_timestamp(i64::MAX).unwrap(), None);
}

#[test]
fn offsets_below_the_start_offset_are_never_returned() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default()
        .segment_bytes(600)
        .index_interval_bytes(100);
    let log = open(dir.path(), config);
    let p = log.partition(0).unwrap();
    let deltas = scrambled(60, 200, 11);
    let ts = append_with_timestamps(&p, &deltas, &[3, 1]);
    for cut in [1, 7, 20, 33, 59, 60] {
        p.delete_records_before(cut).unwrap();
        assert_eq!(p.start_offset(), cut);
        check_all_targets(&p, &ts);
        let first = p.offset_for_timestamp(i64::MIN).unwrap();
        assert_eq!(first, (cut < 60).then_some(cut));
    }
}

#[test]
fn offsets_in_segments_deleted_by_retention_are_never_returned() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default()
        .segment_bytes(600)
        .retention_bytes(Some(1200));
    let log = open(dir.path(), config);
    let p = log.partition(0).unwrap();
    let deltas: Vec<i64> = (0..50).rev().collect();
    let ts = append_with_timestamps(&p, &deltas, &[2]);
    assert!(log.enforce_retention().unwrap() > 0);
    let start = p.start_offset();
    assert!(start > 0);
    check_all_targets(&p, &ts);
    // Decreasing timestamps: the newest record was the first one, now
    // deleted, so a target above every remaining timestamp finds nothing.
    assert_eq!(p.offset_for_timestamp(base_ts() + 49).unwrap(), None);
    assert_eq!(
        p.offset_for_timestamp(base_ts() + 49 - start as i64)
            .unwrap(),
        Some(start)
    );
    assert_eq!(
        p.offset_for_timestamp(i64::MIN).unwrap(),
        Some(start),
        "the first remaining record"
    );
}

#[test]
fn lookups_are_the_same_after_reopen_and_after_rebuilding_the_time_index() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default()
        .segment_bytes(700)
        .index_interval_bytes(120);
    let ts;
    {
        let log = open(dir.path(), config.clone());
        let p = log.partition(0).unwrap();
        ts = append_with_timestamps(&p, &scrambled(80, 300, 3), &[2, 1, 3]);
        check_all_targets(&p, &ts);
        log.close().unwrap();
    }
    {
        let log = open(dir.path(), config.clone());
        check_all_targets(&log.partition(0).unwrap(), &ts);
        log.close().unwrap();
    }
    for f in files_with_suffix(dir.path(), 0, ".timeindex") {
        std::fs::remove_file(f).unwrap();
    }
    let log = open(dir.path(), config);
    assert!(log.recovery_reports()[0].indexes_rebuilt > 0);
    check_all_targets(&log.partition(0).unwrap(), &ts);
}

#[test]
fn a_record_without_a_timestamp_gets_the_append_time() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::default());
    let p = log.partition(0).unwrap();
    let before = now_ms();
    let a = p.append(&[Record::new("now")]).unwrap();
    let after = now_ms();
    let stored = &p.read(0, 1).unwrap()[0];
    assert!(
        (before..=after).contains(&stored.timestamp),
        "{} not in [{before}, {after}]",
        stored.timestamp
    );
    assert_eq!(a.max_timestamp, stored.timestamp);
    assert_eq!(p.offset_for_timestamp(before).unwrap(), Some(0));
    assert_eq!(p.offset_for_timestamp(after + 1).unwrap(), None);
}

#[test]
fn extreme_and_negative_timestamps_round_trip_and_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default().retention_age(None);
    let timestamps = [i64::MIN, -1, 0, i64::MAX];
    {
        let log = open(dir.path(), config.clone());
        let p = log.partition(0).unwrap();
        for (i, ts) in timestamps.iter().enumerate() {
            p.append(&[Record::new(format!("r{i}")).with_timestamp(*ts)])
                .unwrap();
        }
        let stored: Vec<i64> = read_all(&p).iter().map(|r| r.timestamp).collect();
        assert_eq!(stored, timestamps);
        assert_eq!(p.offset_for_timestamp(i64::MIN).unwrap(), Some(0));
        assert_eq!(p.offset_for_timestamp(-1).unwrap(), Some(1));
        assert_eq!(p.offset_for_timestamp(1).unwrap(), Some(3));
        assert_eq!(p.offset_for_timestamp(i64::MAX).unwrap(), Some(3));
        log.close().unwrap();
    }
    let log = open(dir.path(), config);
    let p = log.partition(0).unwrap();
    let stored: Vec<i64> = read_all(&p).iter().map(|r| r.timestamp).collect();
    assert_eq!(stored, timestamps);
    assert_eq!(p.offset_for_timestamp(i64::MIN).unwrap(), Some(0));
    assert_eq!(p.offset_for_timestamp(-1).unwrap(), Some(1));
}

#[test]
fn one_batch_may_mix_extreme_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::default().retention_age(None));
    let p = log.partition(0).unwrap();
    let timestamps = [i64::MAX, i64::MIN, 0, i64::MAX - 1, i64::MIN + 1];
    let batch: Vec<Record> = timestamps
        .iter()
        .map(|ts| Record::new("x").with_timestamp(*ts))
        .collect();
    let a = p.append(&batch).unwrap();
    assert_eq!(a.max_timestamp, i64::MAX);
    let stored: Vec<i64> = read_all(&p).iter().map(|r| r.timestamp).collect();
    assert_eq!(stored, timestamps);
    assert_eq!(p.offset_for_timestamp(1).unwrap(), Some(0));
    assert_eq!(p.offset_for_timestamp(i64::MIN).unwrap(), Some(0));
}
