//! Reading a partition: `read` and `reader` at, below, inside and past the
//! stored range, batch granularity of `max_bytes`, and tailing.

mod log_common;

use std::time::Duration;

use durable_log::{Config, Error, Record};
use log_common::*;

fn batch_of(first: u64, count: u64) -> Vec<Record> {
    (first..first + count).map(record).collect()
}

#[test]
fn records_read_back_exactly_as_appended() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::default());
    let p = log.partition(0).unwrap();
    let written = vec![
        record(0),
        Record::tombstone("gone").with_timestamp(42),
        Record::new("").with_timestamp(-5),
        Record {
            key: None,
            value: None,
            timestamp: Some(7),
            headers: vec![durable_log::Header {
                key: "null-valued".into(),
                value: None,
            }],
        },
        Record::new(vec![0u8, 255, 1, 254])
            .with_key(vec![0u8; 300])
            .with_timestamp(i64::MAX / 2)
            .with_header("a", "1")
            .with_header("a", "2")
            .with_header("", ""),
    ];
    let appended = p.append(&written).unwrap();
    assert_eq!((appended.base_offset, appended.last_offset), (0, 4));
    assert_eq!(appended.record_count(), 5);
    assert_eq!(appended.partition, 0);
    assert_eq!(appended.max_timestamp, i64::MAX / 2);
    let read = read_all(&p);
    assert_eq!(offsets(&read), vec![0, 1, 2, 3, 4]);
    for (stored, record) in read.iter().zip(&written) {
        assert_same(stored, record);
    }
    assert_eq!(read, p.read(0, usize::MAX).unwrap());
}

#[test]
fn read_at_the_end_offset_returns_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::default());
    let p = log.partition(0).unwrap();
    assert!(p.read(0, 1 << 20).unwrap().is_empty(), "empty partition");
    p.append(&batch_of(0, 3)).unwrap();
    assert_eq!(p.end_offset(), 3);
    assert!(p.read(3, 1 << 20).unwrap().is_empty());
    assert_eq!(p.reader(3).count(), 0);
}

#[test]
fn read_past_the_end_offset_is_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::default());
    let p = log.partition(0).unwrap();
    match p.read(1, 100) {
        Err(Error::OffsetOutOfRange {
            requested: 1,
            start: 0,
            end: 0,
        }) => {}
        other => panic!("expected OffsetOutOfRange on an empty log, got {other:?}"),
    }
    p.append(&batch_of(0, 4)).unwrap();
    match p.read(5, 100) {
        Err(Error::OffsetOutOfRange {
            requested: 5,
            start: 0,
            end: 4,
        }) => {}
        other => panic!("expected OffsetOutOfRange, got {other:?}"),
    }
    match p.read(u64::MAX, 100) {
        Err(Error::OffsetOutOfRange {
            requested: u64::MAX,
            ..
        }) => {}
        other => panic!("expected OffsetOutOfRange, got {other:?}"),
    }
}

#[test]
fn read_below_the_start_offset_is_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::default());
    let p = log.partition(0).unwrap();
    p.append(&batch_of(0, 10)).unwrap();
    p.delete_records_before(6).unwrap();
    assert_eq!(p.start_offset(), 6);
    for below in [0, 5] {
        match p.read(below, 1 << 20) {
            Err(Error::OffsetOutOfRange {
                requested,
                start: 6,
                end: 10,
            }) => assert_eq!(requested, below),
            other => panic!("expected OffsetOutOfRange for {below}, got {other:?}"),
        }
    }
    // The first record still stored is the one at the start offset, even
    // though its batch begins below it.
    assert_eq!(offsets(&p.read(6, 1 << 20).unwrap()), vec![6, 7, 8, 9]);
}

#[test]
fn reads_inside_the_gap_left_by_delete_records_before_are_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::default().segment_bytes(600));
    let p = log.partition(0).unwrap();
    append_each(&p, 30, record);
    assert!(p.segment_count() > 3, "the test needs several segments");
    let second_base = base_of(&log_files(dir.path(), 0)[1]);
    let cut = second_base + 1;
    p.delete_records_before(cut).unwrap();
    assert_eq!(p.start_offset(), cut);
    for gone in [0, second_base - 1, second_base] {
        assert!(
            matches!(p.read(gone, 1 << 20), Err(Error::OffsetOutOfRange { start, end: 30, .. }) if start == cut),
            "offset {gone} is below the start offset"
        );
        let mut reader = p.reader(gone);
        assert!(matches!(
            reader.next(),
            Some(Err(Error::OffsetOutOfRange { .. }))
        ));
        assert!(reader.next().is_none(), "a reader ends after an error");
    }
    let rest = read_from(&p, cut);
    assert_eq!(offsets(&rest), (cut..30).collect::<Vec<_>>());
    for r in &rest {
        assert_same(r, &record(r.offset));
    }
}

#[test]
fn reads_inside_the_gap_left_by_retention_are_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default()
        .segment_bytes(600)
        .retention_bytes(Some(1500));
    let log = open(dir.path(), config);
    let p = log.partition(0).unwrap();
    append_each(&p, 40, record);
    let deleted = log.enforce_retention().unwrap();
    assert!(deleted > 0, "retention deleted nothing");
    let first_base = base_of(&log_files(dir.path(), 0)[0]);
    assert_eq!(p.start_offset(), first_base);
    assert!(first_base > 0);
    match p.read(first_base - 1, 1 << 20) {
        Err(Error::OffsetOutOfRange {
            requested,
            start,
            end: 40,
        }) => {
            assert_eq!(requested, first_base - 1);
            assert_eq!(start, first_base);
        }
        other => panic!("expected OffsetOutOfRange, got {other:?}"),
    }
    assert_eq!(
        offsets(&read_from(&p, first_base)),
        (first_base..40).collect::<Vec<_>>()
    );
}

#[test]
fn read_returns_a_whole_batch_even_when_it_exceeds_max_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::default());
    let p = log.partition(0).unwrap();
    let big: Vec<Record> = (0..10).map(|i| sized_record(i, 1000)).collect();
    p.append(&big).unwrap();
    p.append(&batch_of(10, 2)).unwrap();
    for max_bytes in [0, 1, 64, 5000] {
        let read = p.read(0, max_bytes).unwrap();
        assert_eq!(
            offsets(&read),
            (0..10).collect::<Vec<_>>(),
            "max_bytes {max_bytes}: exactly the first batch"
        );
    }
}

#[test]
fn read_respects_max_bytes_at_batch_granularity() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::default());
    let p = log.partition(0).unwrap();
    // Five batches of three records; measure each batch's size on disk.
    let mut sizes = Vec::new();
    for b in 0..5 {
        let before = p.size_bytes();
        p.append(&batch_of(b * 3, 3)).unwrap();
        sizes.push((p.size_bytes() - before) as usize);
    }
    let two = sizes[0] + sizes[1];
    assert_eq!(
        offsets(&p.read(0, two).unwrap()),
        (0..6).collect::<Vec<_>>()
    );
    assert_eq!(
        offsets(&p.read(0, two + sizes[2] - 1).unwrap()),
        (0..6).collect::<Vec<_>>(),
        "one byte short of the third batch"
    );
    assert_eq!(
        offsets(&p.read(0, two + sizes[2]).unwrap()),
        (0..9).collect::<Vec<_>>()
    );
    assert_eq!(
        offsets(&p.read(0, sizes.iter().sum()).unwrap()),
        (0..15).collect::<Vec<_>>()
    );
    assert_eq!(
        offsets(&p.read(3, sizes[1]).unwrap()),
        vec![3, 4, 5],
        "a read from a later batch counts from that batch"
    );
}

#[test]
fn read_starting_inside_a_batch_skips_its_earlier_records() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::default());
    let p = log.partition(0).unwrap();
    p.append(&batch_of(0, 10)).unwrap();
    p.append(&batch_of(10, 10)).unwrap();
    let read = p.read(4, 1).unwrap();
    assert_eq!(offsets(&read), (4..10).collect::<Vec<_>>());
    for r in &read {
        assert_same(r, &record(r.offset));
    }
    assert_eq!(offsets(&p.read(19, 1).unwrap()), vec![19]);
    let tail = read_from(&p, 13);
    assert_eq!(offsets(&tail), (13..20).collect::<Vec<_>>());
}

#[test]
fn reader_returns_every_record_in_order_and_ends_at_the_end_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::default().segment_bytes(1000));
    let p = log.partition(0).unwrap();
    for b in 0..20 {
        p.append(&batch_of(b * 4, 4)).unwrap();
    }
    assert!(p.segment_count() > 1);
    let mut reader = p.reader(0);
    for expected in 0..80 {
        assert_eq!(reader.next_offset(), expected);
        let r = reader.next().expect("a record").expect("no error");
        assert_eq!(r.offset, expected);
        assert_same(&r, &record(expected));
    }
    assert!(reader.next().is_none());
    assert!(reader.next().is_none(), "stays at the end");
    assert_eq!(reader.next_offset(), 80);
}

#[test]
fn reader_resumes_after_new_appends() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::default().segment_bytes(500));
    let p = log.partition(0).unwrap();
    let mut reader = p.reader(0);
    assert!(reader.next().is_none(), "empty partition");
    let mut seen = Vec::new();
    for round in 0..10u64 {
        p.append(&batch_of(round * 3, 3)).unwrap();
        for r in reader.by_ref() {
            seen.push(r.unwrap().offset);
        }
        assert_eq!(seen.len() as u64, (round + 1) * 3);
    }
    assert!(p.segment_count() > 1, "the reader followed rolls");
    assert_eq!(seen, (0..30).collect::<Vec<_>>());
}

#[test]
fn reader_at_the_end_offset_waits_for_new_records() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::default());
    let p = log.partition(0).unwrap();
    p.append(&batch_of(0, 5)).unwrap();
    let mut reader = p.reader(5);
    assert!(reader.next().is_none());
    p.append(&batch_of(5, 2)).unwrap();
    let got: Vec<u64> = reader.map(|r| r.unwrap().offset).collect();
    assert_eq!(got, vec![5, 6]);
}

#[test]
fn reader_starting_inside_a_batch_skips_its_earlier_records() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::default());
    let p = log.partition(0).unwrap();
    p.append(&batch_of(0, 8)).unwrap();
    let got = read_from(&p, 5);
    assert_eq!(offsets(&got), vec![5, 6, 7]);
    for r in &got {
        assert_same(r, &record(r.offset));
    }
}

#[test]
fn reader_past_the_end_reports_out_of_range_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::default());
    let p = log.partition(0).unwrap();
    p.append(&batch_of(0, 2)).unwrap();
    let mut reader = p.reader(3);
    match reader.next() {
        Some(Err(Error::OffsetOutOfRange {
            requested: 3,
            start: 0,
            end: 2,
        })) => {}
        other => panic!("expected OffsetOutOfRange, got {other:?}"),
    }
    assert!(reader.next().is_none());
}

#[test]
fn every_offset_can_be_read_individually_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default()
        .segment_bytes(2000)
        .index_interval_bytes(100);
    let log = open(dir.path(), config);
    let p = log.partition(0).unwrap();
    let mut next = 0;
    for size in [1, 3, 2, 5, 1, 4, 2, 7, 1, 1, 3, 6] {
        p.append(&batch_of(next, size)).unwrap();
        next += size;
    }
    assert!(p.segment_count() > 1);
    for offset in 0..next {
        let read = p.read(offset, 1).unwrap();
        assert_eq!(read[0].offset, offset, "first record read at {offset}");
        assert_same(&read[0], &record(offset));
        assert!(offsets(&read).windows(2).all(|w| w[1] == w[0] + 1));
    }
}

#[test]
fn wait_for_reports_whether_the_offset_is_available() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::default());
    let p = log.partition(0).unwrap();
    assert!(!p.wait_for(0, Duration::from_millis(1)).unwrap());
    p.append(&batch_of(0, 2)).unwrap();
    assert!(p.wait_for(0, Duration::ZERO).unwrap());
    assert!(p.wait_for(1, Duration::ZERO).unwrap());
    assert!(!p.wait_for(2, Duration::from_millis(1)).unwrap());
    let appender = {
        let p = p.clone();
        std::thread::spawn(move || p.append(&batch_of(2, 1)).unwrap())
    };
    // No deadline that could fire on a slow machine: the wait ends only by
    // the append.
    assert!(p.wait_for(2, Duration::from_secs(3600)).unwrap());
    appender.join().unwrap();
    assert_eq!(p.end_offset(), 3);
}

#[test]
fn waiting_with_an_unbounded_timeout_does_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let log = durable_log::Log::open(dir.path(), durable_log::Config::default()).unwrap();
    let p = log.partition(0).unwrap();
    p.append(&[durable_log::Record::new("x")]).unwrap();
    assert!(p.wait_for(0, std::time::Duration::MAX).unwrap());
}
