//! Reopening a log: after a clean close, and after the test damaged its
//! files with `std::fs` while it was closed. Each damage case names the row
//! of the recovery table (`src/recovery.rs`) it exercises.

mod log_common;

use std::fs;
use std::path::Path;

use durable_log::{Config, CorruptKind, Error, Log, StoredRecord};
use log_common::*;

/// A config whose segments roll every few batches and whose offset index
/// has an entry every couple of batches.
fn small() -> Config {
    Config::default()
        .segment_bytes(800)
        .index_interval_bytes(200)
}

/// Fills partition 0 with `count` records in batches of 1 to 3 and closes
/// the log; returns what was written, as read back.
fn fill_and_close(dir: &Path, config: Config, count: u64) -> Vec<StoredRecord> {
    let log = open(dir, config);
    let p = log.partition(0).unwrap();
    let mut sizes = [1u64, 3, 2].iter().cycle();
    while p.end_offset() < count {
        let first = p.end_offset();
        let n = (*sizes.next().unwrap()).min(count - first);
        p.append(&(first..first + n).map(record).collect::<Vec<_>>())
            .unwrap();
    }
    let written = read_all(&p);
    assert_eq!(written.len() as u64, count);
    log.close().unwrap();
    written
}

/// Every record read back one offset at a time (each lookup goes through
/// the offset index) and all at once.
fn assert_intact(log: &Log, written: &[StoredRecord]) {
    let p = log.partition(0).unwrap();
    assert_eq!(read_all(&p), written);
    for r in written {
        let read = p.read(r.offset, 1).unwrap();
        assert_eq!(&read[0], r, "lookup of offset {}", r.offset);
    }
    for r in written {
        assert_eq!(
            p.offset_for_timestamp(r.timestamp).unwrap(),
            Some(r.offset),
            "timestamp of offset {}",
            r.offset
        );
    }
}

/// A byte inside the records (not the header) of the batch.
fn payload_byte(batch: &BatchAt) -> u64 {
    batch.position + BATCH_HEADER_BYTES + (batch.length - BATCH_HEADER_BYTES) / 2
}

fn expect_corrupt_at(result: durable_log::Result<impl std::fmt::Debug>, path: &Path, at: u64) {
    match result {
        Err(Error::Corrupt {
            path: p,
            position,
            kind,
        }) => {
            assert_eq!(p, path, "the error names the damaged file");
            assert_eq!(position, at, "the error names the damaged batch");
            assert!(
                matches!(kind, CorruptKind::Checksum { .. }),
                "unexpected kind {kind:?}"
            );
        }
        other => panic!(
            "expected Error::Corrupt at {at} of {}, got {other:?}",
            path.display()
        ),
    }
}

#[test]
fn reopen_after_a_clean_close_scans_nothing_and_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let config = small().partitions(3);
    let mut before = Vec::new();
    {
        let log = open(dir.path(), config.clone());
        for id in 0..3 {
            let p = log.partition(id).unwrap();
            append_each(&p, 10 + u64::from(id) * 10, record);
        }
        log.partition(1).unwrap().delete_records_before(3).unwrap();
        for id in 0..3 {
            let p = log.partition(id).unwrap();
            before.push((
                read_all(&p),
                p.start_offset(),
                p.end_offset(),
                p.size_bytes(),
                p.segment_count(),
            ));
        }
        log.close().unwrap();
    }
    let log = open(dir.path(), config);
    assert_eq!(log.recovery_reports().len(), 3);
    for (id, report) in log.recovery_reports().iter().enumerate() {
        assert!(report.clean, "partition {id}");
        assert_eq!(report.segments_scanned, 0, "partition {id}");
        assert_eq!(report.indexes_rebuilt, 0, "partition {id}");
        assert_eq!(report.truncated_bytes, 0, "partition {id}");
    }
    for id in 0..3u32 {
        let p = log.partition(id).unwrap();
        let now = (
            read_all(&p),
            p.start_offset(),
            p.end_offset(),
            p.size_bytes(),
            p.segment_count(),
        );
        assert_eq!(now, before[id as usize], "partition {id}");
        assert_eq!(p.durable_offset(), p.end_offset());
    }
}

#[test]
fn dropping_the_log_closes_it_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path(), small());
        append_each(&log.partition(0).unwrap(), 5, record);
    }
    let log = open(dir.path(), small());
    assert!(log.recovery_reports()[0].clean);
    assert_eq!(log.recovery_reports()[0].segments_scanned, 0);
    assert_eq!(log.partition(0).unwrap().end_offset(), 5);
}

#[test]
fn a_deleted_offset_index_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let written = fill_and_close(dir.path(), small(), 40);
    let indexes = files_with_suffix(dir.path(), 0, ".index");
    assert!(indexes.len() >= 3);
    // A closed segment's index and the last segment's.
    fs::remove_file(&indexes[1]).unwrap();
    fs::remove_file(indexes.last().unwrap()).unwrap();
    let log = open(dir.path(), small());
    let report = &log.recovery_reports()[0];
    assert_eq!(report.indexes_rebuilt, 2);
    assert_eq!(report.truncated_bytes, 0);
    assert!(indexes[1].exists() && indexes.last().unwrap().exists());
    assert_intact(&log, &written);
}

#[test]
fn a_deleted_time_index_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let written = fill_and_close(dir.path(), small(), 40);
    let time_indexes = files_with_suffix(dir.path(), 0, ".timeindex");
    fs::remove_file(&time_indexes[0]).unwrap();
    let log = open(dir.path(), small());
    assert_eq!(log.recovery_reports()[0].indexes_rebuilt, 1);
    assert_intact(&log, &written);
}

#[test]
fn an_index_overwritten_with_garbage_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let written = fill_and_close(dir.path(), small(), 40);
    let indexes = files_with_suffix(dir.path(), 0, ".index");
    let time_indexes = files_with_suffix(dir.path(), 0, ".timeindex");
    // Same length, garbage entries.
    let len = file_len(&indexes[0]) as usize;
    fs::write(&indexes[0], vec![0xAB; len]).unwrap();
    // Not a whole number of entries.
    fs::write(&time_indexes[1], vec![0x5A; 17]).unwrap();
    // Entries that do not increase.
    let len = file_len(&indexes[2]) as usize;
    fs::write(&indexes[2], vec![0; len.max(16)]).unwrap();
    let log = open(dir.path(), small());
    assert_eq!(log.recovery_reports()[0].indexes_rebuilt, 3);
    assert_intact(&log, &written);
    drop(log);
    // The rebuilt indexes are good: the next open trusts them.
    let log = open(dir.path(), small());
    assert_eq!(log.recovery_reports()[0].indexes_rebuilt, 0);
    assert_intact(&log, &written);
}

#[test]
fn garbage_appended_to_the_last_segment_is_truncated_away() {
    for garbage in [
        vec![0u8; 3],
        vec![0u8; 4096],
        (0..=255u8).cycle().take(1000).collect::<Vec<u8>>(),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let written = fill_and_close(dir.path(), small(), 30);
        let last = log_files(dir.path(), 0).pop().unwrap();
        let clean_len = file_len(&last);
        append_bytes(&last, &garbage);
        let log = open(dir.path(), small());
        let report = log.recovery_reports()[0].clone();
        assert!(!report.clean);
        assert_eq!(report.segments_scanned, 1, "only the last segment");
        // Zeros past the data look like space written ahead for appends:
        // they are cut but not counted as a torn tail.
        let torn = if garbage.iter().all(|&b| b == 0) {
            0
        } else {
            garbage.len() as u64
        };
        assert_eq!(report.truncated_bytes, torn);
        assert_eq!(file_len(&last), clean_len);
        assert_intact(&log, &written);
        let p = log.partition(0).unwrap();
        assert_eq!(p.end_offset(), 30);
        let appended = p.append(&[record(30)]).unwrap();
        assert_eq!(appended.base_offset, 30);
        assert_same(&p.read(30, 1).unwrap()[0], &record(30));
        log.close().unwrap();
        let log = open(dir.path(), small());
        assert!(log.recovery_reports()[0].clean);
        assert_eq!(log.partition(0).unwrap().end_offset(), 31);
    }
}

#[test]
fn a_copy_of_the_last_batch_appended_again_is_truncated_away() {
    // A whole, checksummed batch whose offsets go backwards is not valid.
    let dir = tempfile::tempdir().unwrap();
    let written = fill_and_close(dir.path(), small(), 20);
    let last = log_files(dir.path(), 0).pop().unwrap();
    let batch = *batches_in(&last).last().unwrap();
    let bytes = fs::read(&last).unwrap();
    let copy = bytes[batch.position as usize..].to_vec();
    append_bytes(&last, &copy);
    let log = open(dir.path(), small());
    assert_eq!(log.recovery_reports()[0].truncated_bytes, batch.length);
    assert_intact(&log, &written);
}

#[test]
fn a_flipped_bit_in_a_closed_segment_is_reported_when_read() {
    let dir = tempfile::tempdir().unwrap();
    let written = fill_and_close(dir.path(), small(), 40);
    let files = log_files(dir.path(), 0);
    assert!(files.len() >= 3);
    let damaged = &files[1];
    let batches = batches_in(damaged);
    assert!(batches.len() >= 2);
    let bad = batches[1];
    flip_bit(damaged, payload_byte(&bad));

    // Trusted data is not scanned at open.
    let log = open(dir.path(), small());
    let report = &log.recovery_reports()[0];
    assert!(report.clean);
    assert_eq!(report.segments_scanned, 0);
    let p = log.partition(0).unwrap();
    assert_eq!(p.end_offset(), 40);

    for offset in bad.base_offset..=bad.last_offset {
        expect_corrupt_at(p.read(offset, 1), damaged, bad.position);
    }
    // Everything else still reads.
    let before: Vec<_> = written
        .iter()
        .filter(|r| r.offset < bad.base_offset)
        .cloned()
        .collect();
    let after: Vec<_> = written
        .iter()
        .filter(|r| r.offset > bad.last_offset)
        .cloned()
        .collect();
    assert_eq!(read_from(&p, bad.last_offset + 1), after);
    let mut reader = p.reader(0);
    for r in &before {
        assert_eq!(&reader.next().unwrap().unwrap(), r);
    }
    expect_corrupt_at(reader.next().unwrap(), damaged, bad.position);
    assert!(reader.next().is_none(), "a reader ends after an error");
    // Appends are not affected.
    assert_eq!(p.append(&[record(40)]).unwrap().base_offset, 40);
}

#[test]
fn a_flipped_bit_in_the_last_segment_after_a_clean_close_is_reported_when_read() {
    let dir = tempfile::tempdir().unwrap();
    fill_and_close(dir.path(), small(), 20);
    let last = log_files(dir.path(), 0).pop().unwrap();
    let bad = batches_in(&last)[0];
    flip_bit(&last, payload_byte(&bad));
    let log = open(dir.path(), small());
    assert!(log.recovery_reports()[0].clean);
    let p = log.partition(0).unwrap();
    assert_eq!(p.end_offset(), 20, "nothing is cut from a clean log");
    expect_corrupt_at(p.read(bad.base_offset, 1), &last, bad.position);
}

#[test]
fn without_a_checkpoint_a_flipped_bit_in_the_last_segment_cuts_the_log_there() {
    // Row 8: with no valid checkpoint nothing of the last segment is known
    // to be synced, so it is scanned as a possibly torn tail (row 5) and
    // cut at the first invalid batch.
    let dir = tempfile::tempdir().unwrap();
    let written = fill_and_close(dir.path(), small(), 40);
    let files = log_files(dir.path(), 0);
    let last = files.last().unwrap();
    let batches = batches_in(last);
    assert!(
        batches.len() >= 2,
        "the test needs two batches in the last segment"
    );
    let bad = batches[1];
    let len = file_len(last);
    flip_bit(last, payload_byte(&bad));
    fs::remove_file(partition_dir(dir.path(), 0).join("checkpoint")).unwrap();

    let log = open(dir.path(), small());
    let report = log.recovery_reports()[0].clone();
    assert!(!report.clean);
    assert_eq!(report.segments_scanned, 1, "earlier segments are trusted");
    assert_eq!(report.truncated_bytes, len - bad.position);
    assert_eq!(file_len(last), bad.position);
    let p = log.partition(0).unwrap();
    assert_eq!(p.end_offset(), bad.base_offset);
    assert_eq!(p.segment_count(), files.len());
    let kept: Vec<_> = written
        .iter()
        .filter(|r| r.offset < bad.base_offset)
        .cloned()
        .collect();
    assert_intact(&log, &kept);
    let appended = p.append(&[record(1000)]).unwrap();
    assert_eq!(appended.base_offset, bad.base_offset);
}

#[test]
fn without_a_checkpoint_a_flipped_bit_in_a_closed_segment_is_reported_when_read() {
    // Row 8: segments before the last were synced when they rolled; they
    // are trusted, not cut.
    let dir = tempfile::tempdir().unwrap();
    fill_and_close(dir.path(), small(), 40);
    let files = log_files(dir.path(), 0);
    let damaged = &files[0];
    let bad = batches_in(damaged)[1];
    flip_bit(damaged, payload_byte(&bad));
    fs::remove_file(partition_dir(dir.path(), 0).join("checkpoint")).unwrap();
    let log = open(dir.path(), small());
    assert_eq!(log.recovery_reports()[0].truncated_bytes, 0);
    let p = log.partition(0).unwrap();
    assert_eq!(p.end_offset(), 40);
    expect_corrupt_at(p.read(bad.base_offset, 1), damaged, bad.position);
}

#[test]
fn without_a_checkpoint_intact_data_is_scanned_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let written = fill_and_close(dir.path(), small(), 40);
    let checkpoint = partition_dir(dir.path(), 0).join("checkpoint");
    fs::remove_file(&checkpoint).unwrap();
    {
        let log = open(dir.path(), small());
        let report = &log.recovery_reports()[0];
        assert!(!report.clean);
        assert_eq!(report.segments_scanned, 1);
        assert_eq!(report.truncated_bytes, 0);
        assert_intact(&log, &written);
    }
    // A checkpoint of garbage is the same as none.
    fs::write(&checkpoint, vec![0x77; 128]).unwrap();
    let log = open(dir.path(), small());
    assert!(!log.recovery_reports()[0].clean);
    assert_eq!(log.recovery_reports()[0].truncated_bytes, 0);
    assert_intact(&log, &written);
}

#[test]
fn damage_in_the_last_synced_batch_of_the_last_segment_fails_the_open() {
    // Row 6: garbage at the end voids the clean mark, so the last segment
    // is scanned; its last synced batch, which gives the offset the synced
    // bytes end at, is verified in full and must check out.
    let dir = tempfile::tempdir().unwrap();
    fill_and_close(dir.path(), small(), 30);
    let last = log_files(dir.path(), 0).pop().unwrap();
    let bad = *batches_in(&last).last().unwrap();
    flip_bit(&last, payload_byte(&bad));
    append_bytes(&last, &[1, 2, 3, 4, 5]);
    expect_corrupt_at(Log::open(dir.path(), small()), &last, bad.position);
    // The failed open released the directory: a second attempt fails the
    // same way instead of finding it locked, and nothing was cut.
    let len = file_len(&last);
    expect_corrupt_at(Log::open(dir.path(), small()), &last, bad.position);
    assert_eq!(file_len(&last), len);
}

#[test]
fn damage_in_earlier_synced_batches_is_reported_by_the_read() {
    // Row 6: below the synced position only headers are walked at open, so
    // damaged records there open fine and fail the read that reaches them,
    // which returns nothing of the damaged batch.
    let dir = tempfile::tempdir().unwrap();
    let written = fill_and_close(dir.path(), small(), 30);
    let last = log_files(dir.path(), 0).pop().unwrap();
    let batches = batches_in(&last);
    assert!(batches.len() >= 2, "{batches:?}");
    let bad = batches[0];
    flip_bit(&last, payload_byte(&bad));
    append_bytes(&last, &[1, 2, 3, 4, 5]);
    let log = Log::open(dir.path(), small()).unwrap();
    let p = log.partition(0).unwrap();
    let mut read = Vec::new();
    let error = p.reader(0).find_map(|record| match record {
        Ok(record) => {
            read.push(record);
            None
        }
        Err(e) => Some(e),
    });
    expect_corrupt_at(error.map_or(Ok(()), Err), &last, bad.position);
    assert!(read.len() < written.len());
    assert_eq!(read[..], written[..read.len()], "only records before it");
}

#[test]
fn a_last_segment_shorter_than_its_synced_position_fails_the_open() {
    // Row 7.
    let dir = tempfile::tempdir().unwrap();
    fill_and_close(dir.path(), small(), 30);
    let last = log_files(dir.path(), 0).pop().unwrap();
    let len = file_len(&last);
    fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    match Log::open(dir.path(), small()) {
        Err(Error::Corrupt {
            path,
            kind: CorruptKind::Truncated { needed, available },
            ..
        }) => {
            assert_eq!(path, last);
            assert_eq!((needed, available), (len, len - 10));
        }
        other => panic!("expected Error::Corrupt (Truncated), got {other:?}"),
    }
}

#[test]
fn leftover_and_orphan_files_are_removed_and_foreign_files_kept() {
    // Rows 9 and 10.
    let dir = tempfile::tempdir().unwrap();
    let written = fill_and_close(dir.path(), small(), 20);
    let pdir = partition_dir(dir.path(), 0);
    let first_log = log_files(dir.path(), 0)[0].clone();
    let leftover = pdir.join(format!(
        "{}.rewrite",
        first_log.file_name().unwrap().to_str().unwrap()
    ));
    fs::write(&leftover, b"half a rewrite").unwrap();
    let orphan = pdir.join("00000000000000099999.index");
    fs::write(&orphan, [0u8; 16]).unwrap();
    let orphan_time = pdir.join("00000000000000099999.timeindex");
    fs::write(&orphan_time, [0u8; 24]).unwrap();
    let foreign = pdir.join("notes.txt");
    fs::write(&foreign, b"mine").unwrap();

    let log = open(dir.path(), small());
    assert!(!leftover.exists(), "leftover of a rewrite removed");
    assert!(
        !orphan.exists() && !orphan_time.exists(),
        "orphan indexes removed"
    );
    assert_eq!(fs::read(&foreign).unwrap(), b"mine", "foreign file kept");
    assert_intact(&log, &written);
}

#[test]
fn reopening_with_more_partitions_adds_empty_ones() {
    let dir = tempfile::tempdir().unwrap();
    let written = fill_and_close(dir.path(), small(), 10);
    let log = open(dir.path(), small().partitions(4));
    assert_eq!(log.partition_count(), 4);
    assert_intact(&log, &written);
    for id in 1..4 {
        let p = log.partition(id).unwrap();
        assert_eq!((p.start_offset(), p.end_offset()), (0, 0));
        assert_eq!(p.append(&[record(0)]).unwrap().base_offset, 0);
    }
    drop(log);
    let log = open(dir.path(), small().partitions(4));
    for id in 1..4 {
        assert_eq!(log.partition(id).unwrap().end_offset(), 1);
    }
}

#[test]
fn reopening_with_a_different_segment_size_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let written = fill_and_close(dir.path(), Config::default(), 20);
    let log = open(dir.path(), small());
    assert_intact(&log, &written);
    let p = log.partition(0).unwrap();
    assert_eq!(p.segment_count(), 1);
    append_each(&p, 20, record);
    assert!(
        p.segment_count() > 1,
        "new appends follow the new segment size"
    );
    assert_eq!(offsets(&read_all(&p)), (0..40).collect::<Vec<_>>());
}

/// Removes a segment's three files.
fn remove_segment(log_file: &Path) {
    for ext in ["log", "index", "timeindex"] {
        fs::remove_file(log_file.with_extension(ext)).unwrap();
    }
}

#[test]
fn a_missing_middle_segment_is_never_skipped_silently() {
    let dir = tempfile::tempdir().unwrap();
    fill_and_close(dir.path(), small(), 40);
    let files = log_files(dir.path(), 0);
    assert!(files.len() >= 3);
    remove_segment(&files[1]);
    // Either the open refuses the log, or a read across the hole fails:
    // records after the hole must never follow those before it as if
    // nothing were missing.
    let Ok(log) = Log::open(dir.path(), small()) else {
        return;
    };
    let p = log.partition(0).unwrap();
    let mut expected = 0;
    for item in p.reader(0) {
        match item {
            Ok(r) => {
                assert_eq!(r.offset, expected, "records were skipped silently");
                expected += 1;
            }
            Err(_) => return,
        }
    }
    assert_eq!(expected, 40, "the reader stopped short without an error");
}

#[test]
fn a_missing_last_segment_that_held_synced_records_fails_the_open() {
    // Row 7 taken to its end: the checkpoint records synced bytes in a
    // segment that is no longer there.
    let dir = tempfile::tempdir().unwrap();
    fill_and_close(dir.path(), small(), 40);
    let files = log_files(dir.path(), 0);
    assert!(files.len() >= 2);
    remove_segment(files.last().unwrap());
    match Log::open(dir.path(), small()) {
        Err(Error::Corrupt { .. }) => {}
        Err(other) => panic!("expected Error::Corrupt, got {other}"),
        Ok(log) => panic!(
            "opened with end offset {} instead of failing: records up to 40 are gone",
            log.partition(0).unwrap().end_offset()
        ),
    }
}
