//! Offline inspection through `durable_log::inspect`: logs are built with
//! `Log`, closed, damaged with `std::fs` (flipped bits, truncations,
//! garbage, deleted or edited indexes), then verified, repaired, measured
//! and reopened.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use durable_log::inspect::{self, IndexIssue, Problem, ProblemKind, RepairMode, SegmentBatches};
use durable_log::{Compression, Config, CorruptKind, Durability, Error, Log, Record};

/// Records per appended batch.
const PER_BATCH: u64 = 5;

fn base_ts() -> i64 {
    static BASE: OnceLock<i64> = OnceLock::new();
    *BASE.get_or_init(|| {
        let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        i64::try_from(since.as_millis()).unwrap()
    })
}

/// Small segments and a dense index, so a few dozen batches make several
/// segments with several index entries each.
fn config() -> Config {
    Config::default()
        .segment_bytes(1024)
        .index_interval_bytes(100)
        .retention_age(None)
        // `close` syncs everything; per-append syncs would only slow the
        // tests down.
        .durability(Durability::None)
}

fn record(i: u64) -> Record {
    Record::new(format!("value-{i:04}-{}", "x".repeat((i % 7) as usize)))
        .with_key(format!("key-{i}"))
        .with_timestamp(base_ts() + i as i64)
        .with_header("n", i.to_string())
}

/// Appends `batches` batches of `PER_BATCH` records to each partition and
/// closes the log. Record `i` of a partition has offset `i`.
fn build(dir: &Path, config: Config, batches: u64) {
    let log = Log::open(dir, config).unwrap();
    for p in 0..log.partition_count() {
        let partition = log.partition(p).unwrap();
        for b in 0..batches {
            let records: Vec<Record> = (b * PER_BATCH..(b + 1) * PER_BATCH).map(record).collect();
            partition.append(&records).unwrap();
        }
    }
    log.close().unwrap();
}

fn segment_logs(dir: &Path, partition: u32) -> Vec<PathBuf> {
    files_with(dir, partition, ".log")
}

fn files_with(dir: &Path, partition: u32, suffix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir.join(partition.to_string()))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    files.sort();
    files
}

/// (position, base offset, last offset, length) of every batch of a file.
fn batches_of(path: &Path) -> Vec<(u64, u64, u64, u64)> {
    let dump = inspect::dump_segment(path).unwrap();
    assert!(dump.invalid.is_none(), "{:?}", dump.invalid);
    dump.batches
        .iter()
        .map(|b| {
            (
                b.position,
                b.base_offset,
                b.last_offset,
                u64::from(b.batch_length),
            )
        })
        .collect()
}

fn flip_bit(path: &Path, position: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[position as usize] ^= 0x04;
    fs::write(path, bytes).unwrap();
}

fn append_bytes(path: &Path, bytes: &[u8]) {
    let mut file = OpenOptions::new().append(true).open(path).unwrap();
    file.write_all(bytes).unwrap();
}

/// Every file of the log, by path, with its contents.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.insert(path.clone(), fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// Values of every record of partition `p`, by reopening the log.
fn values(dir: &Path, p: u32) -> Vec<(u64, String)> {
    let log = Log::open(dir, config()).unwrap();
    let partition = log.partition(p).unwrap();
    let values = partition
        .reader(partition.start_offset())
        .map(|r| {
            let r = r.unwrap();
            (
                r.offset,
                String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
            )
        })
        .collect();
    log.close().unwrap();
    values
}

fn expected_values(offsets: std::ops::Range<u64>) -> Vec<(u64, String)> {
    offsets
        .map(|i| {
            let value = record(i).value.unwrap();
            (i, String::from_utf8(value.to_vec()).unwrap())
        })
        .collect()
}

fn only_problem(problems: &[Problem]) -> &Problem {
    assert_eq!(problems.len(), 1, "{problems:#?}");
    &problems[0]
}

#[test]
fn a_clean_log_verifies_with_exact_counts_and_progress() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), config().partitions(2), 12);
    let mut last = None;
    let mut calls = 0;
    let report = inspect::verify(dir.path(), |p| {
        calls += 1;
        last = Some(p);
    })
    .unwrap();
    assert!(report.is_ok(), "{:#?}", report.problems);
    let file_bytes: u64 = (0..2)
        .flat_map(|p| segment_logs(dir.path(), p))
        .map(|f| fs::metadata(f).unwrap().len())
        .sum();
    assert_eq!(report.batches, 24);
    assert_eq!(report.records, 24 * PER_BATCH);
    assert_eq!(report.bytes, file_bytes);
    let segments = segment_logs(dir.path(), 0).len() + segment_logs(dir.path(), 1).len();
    assert!(
        segments >= 4,
        "the test wants several segments, got {segments}"
    );
    assert_eq!(report.segments, segments as u64);
    for p in &report.partitions {
        assert_eq!((p.start_offset, p.end_offset), (0, 12 * PER_BATCH));
        assert_eq!(p.records, 12 * PER_BATCH);
    }
    let last = last.unwrap();
    assert!(calls >= 2);
    assert_eq!(
        (last.bytes_done, last.bytes_total),
        (file_bytes, file_bytes)
    );
    assert_eq!((last.partition, last.partitions), (1, 2));
}

#[test]
fn stats_numbers_are_exact() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), config(), 10);
    let stats = inspect::stats(dir.path()).unwrap();
    assert_eq!(stats.partitions.len(), 1);
    let p = &stats.partitions[0];
    let logs = segment_logs(dir.path(), 0);
    assert_eq!(p.segments.len(), logs.len());
    assert_eq!((p.start_offset, p.end_offset), (0, 50));
    assert_eq!((p.batches, p.records), (10, 50));
    let mut total = 0;
    let mut header_bytes = 0;
    for (s, path) in p.segments.iter().zip(&logs) {
        let batches = batches_of(path);
        let bytes = fs::metadata(path).unwrap().len();
        total += bytes;
        header_bytes += 64 * batches.len() as u64;
        assert_eq!(&s.path, path);
        assert_eq!((s.bytes, s.valid_bytes), (bytes, bytes));
        assert_eq!(s.base_offset, batches[0].1);
        assert_eq!(s.batches, batches.len() as u64);
        assert_eq!(s.first_offset, Some(batches[0].1));
        assert_eq!(s.last_offset, Some(batches.last().unwrap().2));
        assert_eq!(
            s.records,
            s.last_offset.unwrap() - s.first_offset.unwrap() + 1
        );
        // Timestamps grow with offsets.
        assert_eq!(
            s.max_timestamp,
            Some(base_ts() + s.last_offset.unwrap() as i64)
        );
    }
    assert_eq!(p.bytes, total);
    assert_eq!(stats.bytes(), total);
    assert_eq!(stats.records(), 50);
    assert_eq!(p.stored_record_bytes, total - header_bytes);
    assert_eq!(p.uncompressed_record_bytes, p.stored_record_bytes);
    assert_eq!(p.compression_ratio(), 1.0);
}

#[test]
fn stats_measure_compression() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), Config::default().compression(Compression::Lz4)).unwrap();
    let records: Vec<Record> = (0..200)
        .map(|i| {
            Record::new(format!(
                "{{\"id\":{i},\"level\":\"INFO\",\"msg\":\"hello\"}}"
            ))
        })
        .collect();
    log.partition(0).unwrap().append(&records).unwrap();
    log.close().unwrap();
    let stats = inspect::stats(dir.path()).unwrap();
    let p = &stats.partitions[0];
    assert_eq!(p.records, 200);
    assert!(p.compression_ratio() > 2.0, "{}", p.compression_ratio());
    assert!(p.uncompressed_record_bytes > 2 * p.stored_record_bytes);
    let dump = inspect::dump_segment(&segment_logs(dir.path(), 0)[0]).unwrap();
    assert_eq!(dump.batches[0].codec, inspect::Codec::Lz4);
}

#[test]
fn dump_lists_every_batch_and_its_records() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), config(), 3);
    let path = &segment_logs(dir.path(), 0)[0];
    let dump = inspect::dump_segment(path).unwrap();
    assert_eq!(dump.base_offset, Some(0));
    assert!(dump.invalid.is_none());
    assert_eq!(dump.valid_bytes, dump.file_bytes);
    let mut position = 0;
    for (i, b) in dump.batches.iter().enumerate() {
        let i = i as u64;
        assert_eq!(b.position, position);
        assert_eq!((b.base_offset, b.last_offset), (i * 5, i * 5 + 4));
        assert_eq!(b.record_count, 5);
        assert!(b.crc_valid);
        assert_eq!(b.first_timestamp, base_ts() + (i * 5) as i64);
        assert_eq!(b.max_timestamp, base_ts() + (i * 5 + 4) as i64);
        assert_eq!(
            (b.producer_id, b.producer_epoch, b.base_sequence),
            (-1, -1, -1)
        );
        assert!(b.records.is_none());
        position += u64::from(b.batch_length);
    }
    assert_eq!(position, dump.file_bytes);

    let batch = SegmentBatches::open(path)
        .unwrap()
        .with_records(true)
        .nth(1)
        .unwrap()
        .unwrap();
    let records = batch.records.unwrap();
    assert_eq!(records.len(), 5);
    let want = record(7);
    assert_eq!(records[2].offset, 7);
    assert_eq!(records[2].timestamp, want.timestamp.unwrap());
    assert_eq!(records[2].key, want.key);
    assert_eq!(records[2].value, want.value);
    assert_eq!(records[2].headers, want.headers);
}

#[test]
fn a_flipped_bit_in_the_last_segment_is_found_and_cut() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), config(), 12);
    let logs = segment_logs(dir.path(), 0);
    let last = logs.last().unwrap().clone();
    let batches = batches_of(&last);
    assert!(batches.len() >= 2);
    let (position, base_offset, _, _) = batches[1];
    let file_bytes = fs::metadata(&last).unwrap().len();
    flip_bit(&last, position + 70);

    let report = inspect::verify(dir.path(), |_| {}).unwrap();
    let problem = only_problem(&report.problems);
    assert_eq!(problem.path, last);
    assert_eq!(problem.position, position);
    let ProblemKind::InvalidBatch {
        kind,
        unchecked_bytes,
        last_segment,
        ..
    } = &problem.kind
    else {
        panic!("{problem:?}");
    };
    assert!(matches!(kind, CorruptKind::Checksum { .. }), "{kind:?}");
    assert_eq!(*unchecked_bytes, file_bytes - position);
    assert!(*last_segment);
    assert!(!problem.is_derived());
    assert_eq!(report.partitions[0].end_offset, base_offset);

    // The dump shows the damaged batch's header with its failed checksum.
    let dump = inspect::dump_segment(&last).unwrap();
    assert_eq!(dump.batches.len(), 1);
    let invalid = dump.invalid.unwrap();
    assert_eq!(invalid.position, position);
    let header = invalid.header.unwrap();
    assert!(!header.crc_valid);
    assert_eq!(header.base_offset, base_offset);

    let before = snapshot(dir.path());
    let dry = inspect::repair(dir.path(), true).unwrap();
    assert_eq!(snapshot(dir.path()), before, "a dry run changed files");
    let done = inspect::repair(dir.path(), false).unwrap();
    assert!(dry.dry_run && !done.dry_run);
    assert_eq!(dry.partitions, done.partitions);
    assert!(done.is_complete());
    let repaired = &done.partitions[0];
    let cut = repaired.cut.as_ref().unwrap();
    assert_eq!((&cut.path, cut.position), (&last, position));
    assert_eq!(cut.bytes_removed, file_bytes - position);
    // The damaged batch's header still reads, and so do those after it.
    let dropped = &batches[1..];
    assert_eq!(cut.batches_removed, dropped.len() as u64);
    assert_eq!(cut.records_removed, dropped.len() as u64 * PER_BATCH);
    assert_eq!(
        cut.offsets_removed,
        Some((base_offset, dropped.last().unwrap().2))
    );
    assert_eq!(cut.unreadable_bytes, 0);
    assert!(cut.segments_deleted.is_empty());
    assert!(repaired.checkpoint_rewritten);
    let index = last.with_extension("index");
    let time_index = last.with_extension("timeindex");
    assert_eq!(
        repaired.deleted_files,
        vec![index.clone(), time_index.clone()]
    );
    assert!(!index.exists() && !time_index.exists());
    assert_eq!(fs::metadata(&last).unwrap().len(), position);

    // Clean data after reopening; the indexes come back.
    assert_eq!(values(dir.path(), 0), expected_values(0..base_offset));
    assert!(index.exists() && time_index.exists());
    let after = inspect::verify(dir.path(), |_| {}).unwrap();
    assert!(after.is_ok(), "{:#?}", after.problems);
}

#[test]
fn damage_in_an_earlier_segment_is_reported_not_dropped() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), config(), 12);
    let logs = segment_logs(dir.path(), 0);
    assert!(logs.len() >= 3);
    let first = &logs[0];
    let (position, base_offset, _, _) = batches_of(first)[2];
    flip_bit(first, position + 80);

    let report = inspect::verify(dir.path(), |_| {}).unwrap();
    let problem = only_problem(&report.problems);
    assert_eq!((&problem.path, problem.position), (first, position));
    assert!(matches!(
        problem.kind,
        ProblemKind::InvalidBatch {
            last_segment: false,
            torn_tail: false,
            ..
        }
    ));

    // The default repair leaves it alone and says so.
    let before = snapshot(dir.path());
    let report = inspect::repair(dir.path(), false).unwrap();
    assert!(!report.changed());
    assert!(!report.is_complete());
    assert_eq!(report.unrepaired, vec![problem.clone()]);
    assert_eq!(snapshot(dir.path()), before);

    // A read of the damaged batch reports it.
    {
        let log = Log::open(dir.path(), config()).unwrap();
        let err = log
            .partition(0)
            .unwrap()
            .reader(0)
            .find_map(Result::err)
            .unwrap();
        match err {
            Error::Corrupt {
                path, position: p, ..
            } => {
                assert_eq!((&path, p), (first, position));
            }
            other => panic!("{other:?}"),
        }
        log.close().unwrap();
    }

    // The explicit mode keeps the valid prefix and drops the rest.
    let later_bytes: u64 = logs[1..]
        .iter()
        .map(|f| fs::metadata(f).unwrap().len())
        .sum();
    let first_bytes = fs::metadata(first).unwrap().len();
    let report =
        inspect::repair_with_mode(dir.path(), RepairMode::TruncateAtFirstInvalid, false).unwrap();
    assert!(report.is_complete(), "{:#?}", report.unrepaired);
    let cut = report.partitions[0].cut.as_ref().unwrap();
    assert_eq!((&cut.path, cut.position), (first, position));
    assert_eq!(cut.bytes_removed, first_bytes - position + later_bytes);
    assert_eq!(cut.records_removed, 60 - base_offset);
    assert_eq!(cut.offsets_removed, Some((base_offset, 59)));
    assert_eq!(cut.segments_deleted.len(), logs.len() - 1);
    for deleted in &logs[1..] {
        assert!(!deleted.exists());
        assert!(report.partitions[0].deleted_files.contains(deleted));
    }
    assert_eq!(values(dir.path(), 0), expected_values(0..base_offset));
    let after = inspect::verify(dir.path(), |_| {}).unwrap();
    assert!(after.is_ok(), "{:#?}", after.problems);
}

#[test]
fn a_truncated_tail_is_cut_and_the_checkpoint_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), config(), 12);
    let last = segment_logs(dir.path(), 0).last().unwrap().clone();
    let batches = batches_of(&last);
    let &(position, base_offset, last_offset, length) = batches.last().unwrap();
    let file_bytes = position + length;
    OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(file_bytes - 10)
        .unwrap();

    // The clean shutdown recorded the old length as synced: opening fails.
    match Log::open(dir.path(), config()) {
        Err(e) => assert!(e.is_corruption(), "{e}"),
        Ok(_) => panic!("opened a log whose synced bytes are gone"),
    }
    let report = inspect::verify(dir.path(), |_| {}).unwrap();
    let kinds: Vec<_> = report
        .problems
        .iter()
        .map(|p| (p.path.clone(), p.position, p.kind.clone()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (
                last.clone(),
                file_bytes - 10,
                ProblemKind::SyncedBytesMissing {
                    synced_bytes: file_bytes,
                    file_bytes: file_bytes - 10
                }
            ),
            (
                last.clone(),
                position,
                ProblemKind::InvalidBatch {
                    kind: CorruptKind::Truncated {
                        needed: length,
                        available: length - 10
                    },
                    unchecked_bytes: length - 10,
                    last_segment: true,
                    torn_tail: false,
                }
            ),
        ]
    );

    let report = inspect::repair(dir.path(), false).unwrap();
    assert!(report.is_complete(), "{:#?}", report.unrepaired);
    let cut = report.partitions[0].cut.as_ref().unwrap();
    assert_eq!((cut.position, cut.bytes_removed), (position, length - 10));
    // The torn batch's header is whole: it is counted.
    assert_eq!((cut.batches_removed, cut.records_removed), (1, PER_BATCH));
    assert_eq!(cut.offsets_removed, Some((base_offset, last_offset)));
    assert!(report.partitions[0].checkpoint_rewritten);
    assert_eq!(values(dir.path(), 0), expected_values(0..base_offset));
}

#[test]
fn garbage_after_the_last_batch_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), config(), 8);
    let last = segment_logs(dir.path(), 0).last().unwrap().clone();
    let file_bytes = fs::metadata(&last).unwrap().len();
    append_bytes(&last, &[0xab; 100]);

    let report = inspect::verify(dir.path(), |_| {}).unwrap();
    let problem = only_problem(&report.problems);
    assert_eq!((&problem.path, problem.position), (&last, file_bytes));
    assert!(matches!(
        problem.kind,
        ProblemKind::InvalidBatch {
            unchecked_bytes: 100,
            torn_tail: true,
            ..
        }
    ));
    let report = inspect::repair(dir.path(), false).unwrap();
    let cut = report.partitions[0].cut.as_ref().unwrap();
    assert_eq!((cut.position, cut.bytes_removed), (file_bytes, 100));
    assert_eq!((cut.batches_removed, cut.unreadable_bytes), (0, 100));
    assert_eq!(cut.offsets_removed, None);
    assert_eq!(fs::metadata(&last).unwrap().len(), file_bytes);
    let log = Log::open(dir.path(), config()).unwrap();
    assert_eq!(log.recovery_reports()[0].truncated_bytes, 0);
    assert_eq!(log.partition(0).unwrap().end_offset(), 40);
    log.close().unwrap();
    assert_eq!(values(dir.path(), 0), expected_values(0..40));
}

#[test]
fn a_batch_whose_offsets_go_backwards_is_invalid() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), config(), 12);
    let logs = segment_logs(dir.path(), 0);
    // A whole, checksummed batch from the first segment, copied to the end.
    let (_, _, _, length) = batches_of(&logs[0])[0];
    let copy = fs::read(&logs[0]).unwrap()[..length as usize].to_vec();
    let last = logs.last().unwrap();
    let file_bytes = fs::metadata(last).unwrap().len();
    append_bytes(last, &copy);
    let report = inspect::verify(dir.path(), |_| {}).unwrap();
    let problem = only_problem(&report.problems);
    assert_eq!((&problem.path, problem.position), (last, file_bytes));
    let ProblemKind::InvalidBatch { kind, .. } = &problem.kind else {
        panic!("{problem:?}");
    };
    assert_eq!(
        *kind,
        CorruptKind::OffsetOrder {
            expected_at_least: 60,
            found: 0
        }
    );
}

#[test]
fn a_deleted_index_is_reported_and_rebuilt_at_open() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), config(), 12);
    let index = files_with(dir.path(), 0, ".index")[0].clone();
    fs::remove_file(&index).unwrap();
    let report = inspect::verify(dir.path(), |_| {}).unwrap();
    let problem = only_problem(&report.problems);
    assert_eq!(
        (&problem.path, problem.position, &problem.kind),
        (&index, 0, &ProblemKind::MissingIndex)
    );
    assert!(problem.is_derived());
    let log = Log::open(dir.path(), config()).unwrap();
    assert_eq!(log.recovery_reports()[0].indexes_rebuilt, 1);
    log.close().unwrap();
    assert!(inspect::verify(dir.path(), |_| {}).unwrap().is_ok());
}

#[test]
fn a_bad_index_entry_is_found_and_its_file_deleted_by_repair() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), config(), 12);
    let index = files_with(dir.path(), 0, ".index")[0].clone();
    let mut bytes = fs::read(&index).unwrap();
    assert!(bytes.len() >= 24, "the test wants three entries");
    // Entry 1's position moves 4 bytes into its batch.
    let at = 8 + 4;
    let position = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) + 4;
    bytes[at..at + 4].copy_from_slice(&position.to_le_bytes());
    fs::write(&index, bytes).unwrap();

    let time_index = files_with(dir.path(), 0, ".timeindex")[0].clone();
    let mut bytes = fs::read(&time_index).unwrap();
    // Entry 0's timestamp goes one millisecond up.
    let timestamp = i64::from_le_bytes(bytes[..8].try_into().unwrap());
    bytes[..8].copy_from_slice(&(timestamp + 1).to_le_bytes());
    fs::write(&time_index, bytes).unwrap();

    let report = inspect::verify(dir.path(), |_| {}).unwrap();
    let found: Vec<_> = report
        .problems
        .iter()
        .map(|p| (p.path.clone(), p.position, p.kind.clone()))
        .collect();
    assert_eq!(
        found,
        vec![
            (
                index.clone(),
                8,
                ProblemKind::IndexEntry {
                    entry: 1,
                    issue: IndexIssue::NotAtBatchStart
                }
            ),
            (
                time_index.clone(),
                0,
                ProblemKind::IndexEntry {
                    entry: 0,
                    issue: IndexIssue::WrongTimestamp {
                        indexed: timestamp + 1,
                        actual: timestamp
                    }
                }
            ),
        ]
    );
    let report = inspect::repair(dir.path(), false).unwrap();
    assert!(report.is_complete());
    assert_eq!(
        report.partitions[0].deleted_files,
        vec![index.clone(), time_index.clone()]
    );
    assert!(report.partitions[0].cut.is_none());
    assert!(!index.exists());
    assert_eq!(values(dir.path(), 0), expected_values(0..60));
    assert!(inspect::verify(dir.path(), |_| {}).unwrap().is_ok());
}

#[test]
fn an_index_pointing_at_the_wrong_batch_is_found() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), config(), 12);
    let index = files_with(dir.path(), 0, ".index")[0].clone();
    let mut bytes = fs::read(&index).unwrap();
    // Entry 1 names an offset one past the batch it points at.
    let relative = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
    bytes[8..12].copy_from_slice(&(relative + 1).to_le_bytes());
    fs::write(&index, bytes).unwrap();
    let report = inspect::verify(dir.path(), |_| {}).unwrap();
    let problem = only_problem(&report.problems);
    assert_eq!(
        problem.kind,
        ProblemKind::IndexEntry {
            entry: 1,
            issue: IndexIssue::WrongOffset {
                indexed: u64::from(relative) + 1,
                actual: u64::from(relative)
            }
        }
    );
}

#[test]
fn index_entries_out_of_order_are_found() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), config(), 12);
    let index = files_with(dir.path(), 0, ".index")[0].clone();
    let mut bytes = fs::read(&index).unwrap();
    assert!(bytes.len() >= 24, "the test wants three entries");
    // Entries 1 and 2 swap places.
    let (one, two) = (bytes[8..16].to_vec(), bytes[16..24].to_vec());
    bytes[8..16].copy_from_slice(&two);
    bytes[16..24].copy_from_slice(&one);
    fs::write(&index, bytes).unwrap();

    let time_index = files_with(dir.path(), 0, ".timeindex")[0].clone();
    let mut bytes = fs::read(&time_index).unwrap();
    assert!(bytes.len() >= 24, "the test wants two entries");
    // Entry 1 repeats entry 0.
    let zero = bytes[..12].to_vec();
    bytes[12..24].copy_from_slice(&zero);
    fs::write(&time_index, bytes).unwrap();

    let report = inspect::verify(dir.path(), |_| {}).unwrap();
    let issues: Vec<_> = report
        .problems
        .iter()
        .filter_map(|p| match &p.kind {
            ProblemKind::IndexEntry { entry, issue } => Some((p.path.clone(), *entry, *issue)),
            _ => None,
        })
        .collect();
    assert!(
        issues.contains(&(index.clone(), 2, IndexIssue::NotIncreasing)),
        "{issues:?}"
    );
    assert!(
        issues.contains(&(time_index.clone(), 1, IndexIssue::NotIncreasing)),
        "{issues:?}"
    );
}

#[test]
fn a_dry_run_changes_nothing_and_reports_what_the_repair_does() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), config().partitions(2), 12);
    let logs = segment_logs(dir.path(), 1);
    flip_bit(&logs[1], 100);
    append_bytes(logs.last().unwrap(), b"torn");
    fs::write(
        dir.path()
            .join("0")
            .join("00000000000000000000.log.rewrite"),
        b"x",
    )
    .unwrap();
    let before = snapshot(dir.path());
    for mode in [
        RepairMode::LastSegmentTail,
        RepairMode::TruncateAtFirstInvalid,
    ] {
        let dry = inspect::repair_with_mode(dir.path(), mode, true).unwrap();
        assert!(dry.changed());
        assert_eq!(snapshot(dir.path()), before, "{mode:?}");
    }
    let dry =
        inspect::repair_with_mode(dir.path(), RepairMode::TruncateAtFirstInvalid, true).unwrap();
    let done =
        inspect::repair_with_mode(dir.path(), RepairMode::TruncateAtFirstInvalid, false).unwrap();
    assert_eq!(dry.partitions, done.partitions);
    assert_eq!(dry.unrepaired, done.unrepaired);
    assert_eq!(done.partitions.len(), 2);
    assert_eq!(
        done.partitions[0].deleted_files,
        vec![
            dir.path()
                .join("0")
                .join("00000000000000000000.log.rewrite")
        ]
    );
    assert!(done.partitions[0].cut.is_none());
    assert_eq!(done.partitions[1].cut.as_ref().unwrap().path, logs[1]);
    // Until the next open rebuilds them, the cut segment has no indexes.
    let after = inspect::verify(dir.path(), |_| {}).unwrap();
    let missing: Vec<_> = after.problems.iter().map(|p| (&p.path, &p.kind)).collect();
    let index = logs[1].with_extension("index");
    let time_index = logs[1].with_extension("timeindex");
    assert_eq!(
        missing,
        vec![
            (&index, &ProblemKind::MissingIndex),
            (&time_index, &ProblemKind::MissingIndex)
        ]
    );
    Log::open(dir.path(), config().partitions(2))
        .unwrap()
        .close()
        .unwrap();
    let after = inspect::verify(dir.path(), |_| {}).unwrap();
    assert!(after.is_ok(), "{:#?}", after.problems);
}

#[test]
fn an_open_log_is_locked_against_inspection() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), config(), 2);
    let log = Log::open(dir.path(), config()).unwrap();
    assert!(matches!(
        inspect::verify(dir.path(), |_| {}),
        Err(Error::Locked)
    ));
    assert!(matches!(
        inspect::repair(dir.path(), false),
        Err(Error::Locked)
    ));
    assert!(matches!(inspect::stats(dir.path()), Err(Error::Locked)));
    // A single segment file needs no lock.
    let dump = inspect::dump_segment(&segment_logs(dir.path(), 0)[0]).unwrap();
    assert_eq!(dump.batches.len(), 2);
    log.close().unwrap();
    // And an inspection keeps the log from opening.
    let held = inspect::OfflineLog::open(dir.path()).unwrap();
    assert!(matches!(
        Log::open(dir.path(), config()),
        Err(Error::Locked)
    ));
    drop(held);
    assert!(inspect::verify(dir.path(), |_| {}).unwrap().is_ok());
}

#[test]
fn a_directory_that_is_not_a_log_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("notes.txt"), b"hello").unwrap();
    assert!(matches!(
        inspect::verify(dir.path(), |_| {}),
        Err(Error::NotALog { .. })
    ));
    assert!(!dir.path().join("lock").exists());
    assert!(matches!(
        inspect::verify(dir.path().join("missing"), |_| {}),
        Err(Error::Io { .. })
    ));
}

#[test]
fn space_written_ahead_is_not_damage() {
    // With Durability::Sync the active segment ends in zeros written ahead;
    // a copy taken while the log is open is what an unclean shutdown leaves.
    let dir = tempfile::tempdir().unwrap();
    let copy = tempfile::tempdir().unwrap();
    let log = durable_log::Log::open(dir.path(), durable_log::Config::default()).unwrap();
    let p = log.partition(0).unwrap();
    for i in 0..5 {
        p.append(&[durable_log::Record::new(format!("{i}"))])
            .unwrap();
    }
    fs::create_dir_all(copy.path().join("0")).unwrap();
    fs::copy(dir.path().join("meta"), copy.path().join("meta")).unwrap();
    for entry in fs::read_dir(dir.path().join("0")).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), copy.path().join("0").join(entry.file_name())).unwrap();
    }
    let segment = copy.path().join("0").join("00000000000000000000.log");
    assert!(fs::metadata(&segment).unwrap().len() > p.size_bytes());
    let dump = inspect::dump_segment(&segment).unwrap();
    assert_eq!(dump.batches.len(), 5);
    assert!(dump.invalid.is_none());
    let report = inspect::verify(copy.path(), |_| {}).unwrap();
    let data_problems: Vec<_> = report.problems.iter().filter(|p| !p.is_derived()).collect();
    assert!(data_problems.is_empty(), "{data_problems:?}");
}

#[test]
fn space_reserved_ahead_is_not_damage() {
    // With Durability::None the active segment is as long as its size limit
    // while the log is open, mostly holes: what an unclean shutdown leaves.
    let dir = tempfile::tempdir().unwrap();
    let config = durable_log::Config::default()
        .durability(durable_log::Durability::None)
        .segment_bytes(256 << 20);
    let log = durable_log::Log::open(dir.path(), config).unwrap();
    let p = log.partition(0).unwrap();
    for i in 0..5 {
        p.append(&[durable_log::Record::new(format!("{i}"))])
            .unwrap();
    }
    let segment = dir.path().join("0").join("00000000000000000000.log");
    assert_eq!(fs::metadata(&segment).unwrap().len(), 256 << 20);
    let dump = inspect::dump_segment(&segment).unwrap();
    assert_eq!(dump.batches.len(), 5);
    assert!(dump.invalid.is_none());
    // Bytes past the data are still found.
    append_bytes_at(&segment, (128 << 20) + 5, b"x");
    let dump = inspect::dump_segment(&segment).unwrap();
    assert_eq!(dump.batches.len(), 5);
    assert!(dump.invalid.is_some());
}

fn append_bytes_at(path: &Path, position: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let file = OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytes, position).unwrap();
}

#[test]
fn hostile_segment_bytes_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("00000000000000000000.log");
    // A header claiming a 4 GiB batch, then random-looking bytes.
    let mut bytes = vec![0u8; 64];
    bytes[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    bytes[8] = 1;
    bytes.extend((0..1000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    fs::write(&path, &bytes).unwrap();
    let dump = inspect::dump_segment(&path).unwrap();
    assert!(dump.batches.is_empty());
    let invalid = dump.invalid.unwrap();
    assert_eq!(invalid.position, 0);
    // Every prefix, by cutting the file shorter and shorter.
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    for len in (0..bytes.len() as u64).rev() {
        file.set_len(len).unwrap();
        let dump = inspect::dump_segment(&path).unwrap();
        assert!(dump.batches.is_empty());
        // Nothing but zeros is no data (space written ahead), not damage.
        let zeros = bytes[..len as usize].iter().all(|&b| b == 0);
        assert_eq!(dump.invalid.is_some(), !zeros, "{len}");
    }
}

#[test]
fn synced_bytes_cut_at_a_batch_boundary_need_only_a_new_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), config(), 12);
    let last = segment_logs(dir.path(), 0).last().unwrap().clone();
    let &(position, base_offset, _, length) = batches_of(&last).last().unwrap();
    OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(position)
        .unwrap();
    assert!(Log::open(dir.path(), config()).is_err());
    let report = inspect::verify(dir.path(), |_| {}).unwrap();
    let index = last.with_extension("index");
    let time_index = last.with_extension("timeindex");
    let found: Vec<_> = report
        .problems
        .iter()
        .map(|p| (p.path.clone(), p.kind.clone()))
        .collect();
    assert_eq!(
        found[0],
        (
            last.clone(),
            ProblemKind::SyncedBytesMissing {
                synced_bytes: position + length,
                file_bytes: position
            }
        )
    );
    assert_eq!(report.problems[0].position, position);
    // Both indexes still name the batch that is gone.
    let entry = |path: &PathBuf| {
        found[1..].iter().any(|(p, kind)| {
            p == path
                && matches!(
                    kind,
                    ProblemKind::IndexEntry {
                        issue: IndexIssue::PastEnd,
                        ..
                    }
                )
        })
    };
    assert!(entry(&index) && entry(&time_index), "{found:#?}");
    assert_eq!(found.len(), 3);

    let report = inspect::repair(dir.path(), false).unwrap();
    assert!(report.is_complete(), "{:#?}", report.unrepaired);
    let repaired = &report.partitions[0];
    assert!(repaired.cut.is_none());
    assert!(repaired.checkpoint_rewritten);
    assert_eq!(repaired.deleted_files, vec![index, time_index]);
    assert_eq!(values(dir.path(), 0), expected_values(0..base_offset));
}

#[test]
fn a_segment_named_below_its_predecessor_is_found_and_dropped_on_request() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), config(), 12);
    let logs = segment_logs(dir.path(), 0);
    assert!(logs.len() >= 3);
    let second_base = batches_of(&logs[1])[0].1;
    let renamed_base = second_base - 1;
    let renamed = |suffix: &str| {
        dir.path()
            .join("0")
            .join(format!("{renamed_base:020}.{suffix}"))
    };
    for suffix in ["log", "index", "timeindex"] {
        fs::rename(logs[1].with_extension(suffix), renamed(suffix)).unwrap();
    }
    let report = inspect::verify(dir.path(), |_| {}).unwrap();
    assert_eq!(report.problems[0].path, renamed("log"));
    assert_eq!(report.problems[0].position, 0);
    assert_eq!(
        report.problems[0].kind,
        ProblemKind::SegmentOffset {
            base_offset: renamed_base,
            expected_at_least: second_base
        }
    );
    // Its index entries now name offsets one below their batches'.
    assert!(report.problems[1..].iter().all(Problem::is_derived));
    assert!(!report.problems[1..].is_empty());

    let report = inspect::repair(dir.path(), true).unwrap();
    assert_eq!(report.unrepaired, vec![report_problem(dir.path(), 0)]);
    let report =
        inspect::repair_with_mode(dir.path(), RepairMode::TruncateAtFirstInvalid, false).unwrap();
    assert!(report.is_complete(), "{:#?}", report.unrepaired);
    let cut = report.partitions[0].cut.as_ref().unwrap();
    assert_eq!((&cut.path, cut.position), (&renamed("log"), 0));
    assert_eq!(cut.segments_deleted[0], renamed_base);
    assert_eq!(cut.segments_deleted.len(), logs.len() - 1);
    assert_eq!(cut.records_removed, 60 - second_base);
    assert_eq!(values(dir.path(), 0), expected_values(0..second_base));
}

fn report_problem(dir: &Path, n: usize) -> Problem {
    inspect::verify(dir, |_| {}).unwrap().problems[n].clone()
}

/// `Log::open` trusts a sealed segment's offset index whose entries are
/// merely increasing and in bounds (`indexes_check_out` in
/// src/partition.rs); an entry that points inside a batch then makes
/// `Partition::read` report the intact log file as corrupt, where `verify`
/// sees an index problem and `repair` deletes the index.
#[test]
fn an_index_entry_pointing_inside_a_batch_is_not_trusted_at_open() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), config(), 12);
    let index = files_with(dir.path(), 0, ".index")[0].clone();
    let mut bytes = fs::read(&index).unwrap();
    let relative = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
    let position = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) + 4;
    bytes[12..16].copy_from_slice(&position.to_le_bytes());
    fs::write(&index, bytes).unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    let records = log
        .partition(0)
        .unwrap()
        .read(u64::from(relative), 1 << 20)
        .unwrap();
    assert_eq!(records[0].offset, u64::from(relative));
    log.close().unwrap();
}
