//! Segment rolling: by size, by the age of the first batch, by a full index,
//! and a batch larger than a segment.

mod log_common;

use std::time::Duration;

use durable_log::{Config, Record};
use log_common::*;

/// A keyless record of exactly `len` value bytes with a fixed timestamp, so
/// every batch of one such record has the same size.
fn fixed(i: u64, len: usize) -> Record {
    Record::new(vec![(i % 251) as u8; len]).with_timestamp(base_ts())
}

/// The size of a one-record batch of `fixed(_, len)`.
fn fixed_batch_bytes(len: usize) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::default());
    let p = log.partition(0).unwrap();
    p.append(&[fixed(0, len)]).unwrap();
    p.size_bytes()
}

#[test]
fn segment_rolls_when_the_next_batch_would_exceed_segment_bytes() {
    let batch = fixed_batch_bytes(100);
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::default().segment_bytes(3 * batch));
    let p = log.partition(0).unwrap();
    for i in 0..10 {
        let before = p.segment_count();
        p.append(&[fixed(i, 100)]).unwrap();
        let rolled = i > 0 && i % 3 == 0;
        assert_eq!(
            p.segment_count(),
            before + usize::from(rolled),
            "append {i}"
        );
    }
    let files = log_files(dir.path(), 0);
    assert_eq!(
        files.iter().map(|f| base_of(f)).collect::<Vec<_>>(),
        vec![0, 3, 6, 9]
    );
    for f in &files {
        assert!(file_len(f) <= 3 * batch, "{} is too big", f.display());
    }
    assert_eq!(p.size_bytes(), 10 * batch);
    let all = read_all(&p);
    assert_eq!(offsets(&all), (0..10).collect::<Vec<_>>());
    for r in &all {
        assert_same(r, &fixed(r.offset, 100));
    }
}

#[test]
fn a_batch_is_never_split_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::default().segment_bytes(1000));
    let p = log.partition(0).unwrap();
    p.append(&[fixed(0, 300)]).unwrap();
    let batch: Vec<Record> = (1..=20).map(|i| fixed(i, 100)).collect();
    let a = p.append(&batch).unwrap();
    assert_eq!((a.base_offset, a.last_offset), (1, 20));
    let files = log_files(dir.path(), 0);
    assert_eq!(files.len(), 2);
    let second = batches_in(&files[1]);
    assert_eq!(second.len(), 1);
    assert_eq!((second[0].base_offset, second[0].last_offset), (1, 20));
    assert_eq!(offsets(&read_all(&p)), (0..=20).collect::<Vec<_>>());
}

#[test]
fn a_batch_larger_than_segment_bytes_gets_a_segment_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::default().segment_bytes(1000));
    let p = log.partition(0).unwrap();
    p.append(&[fixed(0, 50)]).unwrap();
    p.append(&[fixed(1, 5000)]).unwrap();
    p.append(&[fixed(2, 50)]).unwrap();
    let files = log_files(dir.path(), 0);
    assert_eq!(
        files.iter().map(|f| base_of(f)).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    let big = batches_in(&files[1]);
    assert_eq!(big.len(), 1);
    assert!(file_len(&files[1]) > 1000);
    let all = read_all(&p);
    assert_eq!(offsets(&all), vec![0, 1, 2]);
    assert_same(&all[1], &fixed(1, 5000));
}

#[test]
fn a_first_batch_larger_than_segment_bytes_stays_in_the_empty_segment() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::default().segment_bytes(1000));
    let p = log.partition(0).unwrap();
    p.append(&[fixed(0, 5000)]).unwrap();
    assert_eq!(p.segment_count(), 1, "an empty segment takes any batch");
    p.append(&[fixed(1, 10)]).unwrap();
    assert_eq!(p.segment_count(), 2);
    assert_eq!(offsets(&read_all(&p)), vec![0, 1]);
}

#[test]
fn segment_rolls_when_its_first_batch_is_older_than_segment_max_age() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default()
        .segment_max_age(Duration::from_secs(3600))
        .retention_age(None);
    let log = open(dir.path(), config);
    let p = log.partition(0).unwrap();
    let old = now_ms() - 2 * HOUR_MS;
    for i in 0..3 {
        p.append(&[Record::new(format!("old-{i}")).with_timestamp(old + i)])
            .unwrap();
        assert_eq!(p.segment_count(), i as usize + 1, "old batch {i}");
    }
    // The active segment's first batch is old: the next batch rolls, even
    // a recent one; after that, recent batches share the new segment.
    p.append(&[Record::new("recent-0")]).unwrap();
    assert_eq!(p.segment_count(), 4);
    p.append(&[Record::new("recent-1")]).unwrap();
    p.append(&[Record::new("recent-2")]).unwrap();
    assert_eq!(p.segment_count(), 4);
    let values: Vec<_> = read_all(&p).into_iter().map(|r| r.value.unwrap()).collect();
    assert_eq!(
        values,
        [
            "old-0", "old-1", "old-2", "recent-0", "recent-1", "recent-2"
        ]
    );
}

#[test]
fn recent_batches_do_not_roll_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default().segment_max_age(Duration::from_secs(3600));
    let log = open(dir.path(), config);
    let p = log.partition(0).unwrap();
    for i in 0..20 {
        p.append(&[Record::new(format!("v{i}"))]).unwrap();
    }
    assert_eq!(p.segment_count(), 1);
}

#[test]
fn age_of_the_active_segment_is_remembered_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default()
        .segment_max_age(Duration::from_secs(3600))
        .retention_age(None);
    {
        let log = open(dir.path(), config.clone());
        let p = log.partition(0).unwrap();
        p.append(&[Record::new("old").with_timestamp(now_ms() - 2 * HOUR_MS)])
            .unwrap();
        log.close().unwrap();
    }
    let log = open(dir.path(), config);
    let p = log.partition(0).unwrap();
    assert_eq!(p.segment_count(), 1);
    p.append(&[Record::new("new")]).unwrap();
    assert_eq!(p.segment_count(), 2);
    assert_eq!(offsets(&read_all(&p)), vec![0, 1]);
}

#[test]
fn a_full_offset_index_rolls_the_segment() {
    // 64 bytes hold eight offset entries; one entry per batch.
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default()
        .max_index_bytes(64)
        .index_interval_bytes(1);
    let log = open(dir.path(), config);
    let p = log.partition(0).unwrap();
    // Equal timestamps: only the offset index fills up.
    for i in 0..40 {
        p.append(&[fixed(i, 20)]).unwrap();
    }
    let files = log_files(dir.path(), 0);
    assert!(files.len() >= 5, "40 batches need at least 5 segments of 8");
    for f in &files {
        let n = batches_in(f).len();
        assert!((1..=8).contains(&n), "{} holds {n} batches", f.display());
    }
    for offset in 0..40 {
        assert_eq!(p.read(offset, 1).unwrap()[0].offset, offset);
    }
}

#[test]
fn a_full_time_index_rolls_the_segment() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default()
        .max_index_bytes(64)
        .index_interval_bytes(1);
    let log = open(dir.path(), config);
    let p = log.partition(0).unwrap();
    // Increasing timestamps: every batch adds a time-index entry too.
    for i in 0..40 {
        p.append(&[Record::new(format!("v{i}")).with_timestamp(base_ts() + i as i64)])
            .unwrap();
    }
    let files = log_files(dir.path(), 0);
    assert!(files.len() >= 5);
    for f in &files {
        assert!(batches_in(f).len() <= 8);
    }
    for i in 0..40 {
        assert_eq!(
            p.offset_for_timestamp(base_ts() + i).unwrap(),
            Some(i as u64),
            "timestamp {i}"
        );
    }
    assert_eq!(p.offset_for_timestamp(base_ts() + 40).unwrap(), None);
}

#[test]
fn rolled_segments_and_their_records_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default()
        .segment_bytes(700)
        .index_interval_bytes(150);
    let expected;
    let segments;
    {
        let log = open(dir.path(), config.clone());
        let p = log.partition(0).unwrap();
        append_each(&p, 50, record);
        segments = p.segment_count();
        assert!(segments > 5);
        expected = read_all(&p);
        log.close().unwrap();
    }
    let log = open(dir.path(), config);
    let p = log.partition(0).unwrap();
    assert_eq!(p.segment_count(), segments);
    assert_eq!(read_all(&p), expected);
    for offset in 0..50 {
        assert_same(&p.read(offset, 1).unwrap()[0], &record(offset));
    }
    append_each(&p, 5, record);
    let all = read_all(&p);
    assert_eq!(offsets(&all), (0..55).collect::<Vec<_>>());
}

#[test]
fn appends_after_a_clean_reopen_are_indexed_like_before() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default().index_interval_bytes(1);
    let stamp = |i: u64| Record::new(format!("v{i}")).with_timestamp(base_ts() + 2 * i as i64);
    {
        let log = open(dir.path(), config.clone());
        let p = log.partition(0).unwrap();
        for i in 0..10 {
            p.append(&[stamp(i)]).unwrap();
        }
        log.close().unwrap();
    }
    let log = open(dir.path(), config);
    assert!(log.recovery_reports()[0].clean);
    let p = log.partition(0).unwrap();
    for i in 10..20 {
        p.append(&[stamp(i)]).unwrap();
    }
    assert_eq!(p.segment_count(), 1);
    for i in 0..20u64 {
        assert_same(&p.read(i, 1).unwrap()[0], &stamp(i));
        assert_eq!(
            p.offset_for_timestamp(base_ts() + 2 * i as i64 - 1)
                .unwrap(),
            Some(i)
        );
    }
}
