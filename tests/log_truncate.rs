//! `Partition::truncate_to`: cutting inside a batch, at a batch boundary,
//! to zero, into an earlier segment, past the end, and what survives a
//! reopen.

mod log_common;

use durable_log::{Config, Error, Record};
use log_common::*;

fn batch_of(first: u64, count: u64) -> Vec<Record> {
    (first..first + count).map(record).collect()
}

/// A record that cannot be mistaken for `record(i)`.
fn replacement(i: u64) -> Record {
    Record::new(format!("replacement-{i}"))
        .with_timestamp(base_ts() + 500_000 + i as i64)
        .with_header("new", "yes")
}

#[test]
fn truncate_inside_a_batch_keeps_the_earlier_records_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::default());
    let p = log.partition(0).unwrap();
    p.append(&batch_of(0, 4)).unwrap();
    p.append(&batch_of(4, 6)).unwrap();
    let before = read_all(&p);
    p.truncate_to(7).unwrap();
    assert_eq!(p.end_offset(), 7);
    assert_eq!(p.durable_offset(), 7);
    let after = read_all(&p);
    assert_eq!(
        after,
        before[..7].to_vec(),
        "records below the cut are identical"
    );
    for r in &after {
        assert_same(r, &record(r.offset));
    }
    assert!(matches!(
        p.read(8, 100),
        Err(Error::OffsetOutOfRange { end: 7, .. })
    ));
    let appended = p.append(&[replacement(7), replacement(8)]).unwrap();
    assert_eq!((appended.base_offset, appended.last_offset), (7, 8));
    let all = read_all(&p);
    assert_eq!(offsets(&all), (0..9).collect::<Vec<_>>());
    assert_same(&all[7], &replacement(7));
    assert_same(&all[8], &replacement(8));
}

#[test]
fn truncate_at_a_batch_boundary_drops_the_later_batches() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::default());
    let p = log.partition(0).unwrap();
    p.append(&batch_of(0, 3)).unwrap();
    p.append(&batch_of(3, 3)).unwrap();
    p.append(&batch_of(6, 3)).unwrap();
    let size_of_two = {
        let files = log_files(dir.path(), 0);
        let batches = batches_in(&files[0]);
        batches[0].length + batches[1].length
    };
    p.truncate_to(6).unwrap();
    assert_eq!(p.end_offset(), 6);
    assert_eq!(p.size_bytes(), size_of_two);
    assert_eq!(offsets(&read_all(&p)), (0..6).collect::<Vec<_>>());
    assert_eq!(p.append(&[replacement(6)]).unwrap().base_offset, 6);
    assert_same(&p.read(6, 1).unwrap()[0], &replacement(6));
}

#[test]
fn truncate_to_zero_empties_the_partition() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::default().segment_bytes(400));
    let p = log.partition(0).unwrap();
    append_each(&p, 12, record);
    assert!(p.segment_count() > 1);
    p.truncate_to(0).unwrap();
    assert_eq!((p.start_offset(), p.end_offset()), (0, 0));
    assert_eq!(p.durable_offset(), 0);
    assert_eq!(p.segment_count(), 1);
    assert_eq!(p.size_bytes(), 0);
    assert!(p.read(0, 100).unwrap().is_empty());
    assert_eq!(p.offset_for_timestamp(0).unwrap(), None);
    assert_eq!(log_files(dir.path(), 0).len(), 1);
    assert_eq!(p.append(&[replacement(0)]).unwrap().base_offset, 0);
    let all = read_all(&p);
    assert_eq!(all.len(), 1);
    assert_same(&all[0], &replacement(0));
}

#[test]
fn truncate_into_an_earlier_segment_removes_the_later_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::default().segment_bytes(500));
    let p = log.partition(0).unwrap();
    for b in 0..12 {
        p.append(&batch_of(b * 2, 2)).unwrap();
    }
    let files = log_files(dir.path(), 0);
    assert!(files.len() >= 4, "the test needs several segments");
    // Cut inside the second batch of the second segment.
    let second = batches_in(&files[1]);
    let cut = second[1].base_offset + 1;
    p.truncate_to(cut).unwrap();
    assert_eq!(p.end_offset(), cut);
    assert_eq!(p.segment_count(), 2);
    let remaining = log_files(dir.path(), 0);
    assert_eq!(remaining, files[..2].to_vec());
    for gone in &files[2..] {
        assert!(!gone.exists(), "{} should be deleted", gone.display());
        assert!(!gone.with_extension("index").exists());
        assert!(!gone.with_extension("timeindex").exists());
    }
    let all = read_all(&p);
    assert_eq!(offsets(&all), (0..cut).collect::<Vec<_>>());
    for r in &all {
        assert_same(r, &record(r.offset));
    }
    let appended = p.append(&[replacement(cut)]).unwrap();
    assert_eq!(appended.base_offset, cut);
    assert_eq!(p.segment_count(), 2, "appends continue in the cut segment");
}

#[test]
fn truncate_to_the_base_offset_of_a_segment_removes_that_segment() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default().segment_bytes(500);
    {
        let log = open(dir.path(), config.clone());
        let p = log.partition(0).unwrap();
        append_each(&p, 20, record);
        let files = log_files(dir.path(), 0);
        assert!(files.len() >= 3);
        let cut = base_of(&files[2]);
        p.truncate_to(cut).unwrap();
        assert_eq!(p.end_offset(), cut);
        assert_eq!(p.segment_count(), 2);
        assert_eq!(log_files(dir.path(), 0), files[..2].to_vec());
        assert_eq!(offsets(&read_all(&p)), (0..cut).collect::<Vec<_>>());
        append_each(&p, 20 - cut, record);
        log.close().unwrap();
    }
    let log = open(dir.path(), config);
    let p = log.partition(0).unwrap();
    let all = read_all(&p);
    assert_eq!(offsets(&all), (0..20).collect::<Vec<_>>());
    for r in &all {
        assert_same(r, &record(r.offset));
    }
}

#[test]
fn a_reader_past_the_truncation_point_reports_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::default());
    let p = log.partition(0).unwrap();
    append_each(&p, 10, record);
    let mut reader = p.reader(0);
    assert_eq!(reader.by_ref().count(), 10);
    p.truncate_to(5).unwrap();
    p.append(&[replacement(5)]).unwrap();
    match reader.next() {
        Some(Err(Error::OffsetOutOfRange {
            requested: 10,
            start: 0,
            end: 6,
        })) => {}
        other => panic!("expected OffsetOutOfRange, got {other:?}"),
    }
}

#[test]
fn truncate_at_or_past_the_end_is_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::default());
    let p = log.partition(0).unwrap();
    p.append(&batch_of(0, 5)).unwrap();
    let before = read_all(&p);
    let size = p.size_bytes();
    for offset in [5, 6, 1000, u64::MAX] {
        p.truncate_to(offset).unwrap();
        assert_eq!(p.end_offset(), 5);
        assert_eq!(p.size_bytes(), size);
        assert_eq!(read_all(&p), before);
    }
}

#[test]
fn truncate_below_the_start_offset_restarts_the_partition_there() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::default());
    let p = log.partition(0).unwrap();
    p.append(&batch_of(0, 10)).unwrap();
    p.delete_records_before(6).unwrap();
    p.truncate_to(4).unwrap();
    assert_eq!((p.start_offset(), p.end_offset()), (4, 4));
    assert!(p.read(4, 100).unwrap().is_empty());
    assert!(matches!(
        p.read(3, 100),
        Err(Error::OffsetOutOfRange {
            start: 4,
            end: 4,
            ..
        })
    ));
    assert_eq!(p.append(&[replacement(4)]).unwrap().base_offset, 4);
    assert_eq!(offsets(&read_all(&p)), vec![4]);
}

#[test]
fn truncation_survives_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default().segment_bytes(500);
    let expected;
    {
        let log = open(dir.path(), config.clone());
        let p = log.partition(0).unwrap();
        for b in 0..10 {
            p.append(&batch_of(b * 3, 3)).unwrap();
        }
        assert!(p.segment_count() > 2);
        p.truncate_to(10).unwrap();
        expected = read_all(&p);
        log.close().unwrap();
    }
    let log = open(dir.path(), config.clone());
    assert!(log.recovery_reports()[0].clean);
    let p = log.partition(0).unwrap();
    assert_eq!(p.end_offset(), 10);
    assert_eq!(p.durable_offset(), 10);
    assert_eq!(read_all(&p), expected);
    assert_eq!(p.append(&[replacement(10)]).unwrap().base_offset, 10);
    log.close().unwrap();

    let log = open(dir.path(), config);
    let p = log.partition(0).unwrap();
    let all = read_all(&p);
    assert_eq!(offsets(&all), (0..11).collect::<Vec<_>>());
    assert_same(&all[10], &replacement(10));
}

#[test]
fn truncation_inside_a_batch_survives_a_reopen_without_a_checkpoint() {
    // With the checkpoint gone the last segment is scanned from its start:
    // the rewritten batch must check out as a valid batch on its own.
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path(), Config::default());
        let p = log.partition(0).unwrap();
        p.append(&batch_of(0, 6)).unwrap();
        p.truncate_to(2).unwrap();
        log.close().unwrap();
    }
    std::fs::remove_file(partition_dir(dir.path(), 0).join("checkpoint")).unwrap();
    let log = open(dir.path(), Config::default());
    let report = &log.recovery_reports()[0];
    assert!(!report.clean);
    assert_eq!(report.truncated_bytes, 0, "the rewritten batch is valid");
    let p = log.partition(0).unwrap();
    assert_eq!(p.end_offset(), 2);
    let all = read_all(&p);
    assert_eq!(offsets(&all), vec![0, 1]);
    for r in &all {
        assert_same(r, &record(r.offset));
    }
}

#[test]
fn durable_offset_follows_truncation_and_later_appends() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::default());
    let p = log.partition(0).unwrap();
    p.append(&batch_of(0, 8)).unwrap();
    assert_eq!(p.durable_offset(), 8);
    p.truncate_to(3).unwrap();
    assert_eq!(p.durable_offset(), 3);
    assert!(p.durable_offset() <= p.end_offset());
    p.append(&[replacement(3)]).unwrap();
    assert_eq!(p.durable_offset(), 4);
}

#[test]
fn offset_for_timestamp_forgets_truncated_records() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::default());
    let p = log.partition(0).unwrap();
    let records: Vec<Record> = (0..6)
        .map(|i| Record::new("v").with_timestamp(100 * (i + 1)))
        .collect();
    p.append(&records).unwrap();
    p.truncate_to(3).unwrap();
    assert_eq!(p.offset_for_timestamp(300).unwrap(), Some(2));
    assert_eq!(p.offset_for_timestamp(301).unwrap(), None);
    assert_eq!(p.offset_for_timestamp(600).unwrap(), None);
}

#[test]
fn a_reader_never_returns_records_cut_by_a_later_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::default());
    let p = log.partition(0).unwrap();
    p.append(&batch_of(0, 10)).unwrap();
    let mut reader = p.reader(0);
    for expected in 0..3 {
        assert_eq!(reader.next().unwrap().unwrap().offset, expected);
    }
    p.truncate_to(5).unwrap();
    p.append(&[replacement(5), replacement(6)]).unwrap();
    let rest: Vec<_> = reader.map(|r| r.unwrap()).collect();
    assert_eq!(offsets(&rest), vec![3, 4, 5, 6]);
    assert_same(&rest[0], &record(3));
    assert_same(&rest[1], &record(4));
    assert_same(&rest[2], &replacement(5));
    assert_same(&rest[3], &replacement(6));
}
