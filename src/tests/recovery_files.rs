//! The rows of the recovery table (`src/recovery.rs`) that need files, end
//! to end: a log on the simulated disk, its files damaged with
//! `write_raw`/`set_len_raw`, then opened again.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::record::batch::LENGTH_OFFSET;
use crate::segment::{INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX, file_name, parse_file_name};
use crate::storage::Storage;
use crate::storage::sim::SimStorage;
use crate::{Config, CorruptKind, Durability, Error, Log, Record, StoredRecord};

const DIR: &str = "/log";

fn partition_dir() -> PathBuf {
    Path::new(DIR).join("0")
}

fn segment_file(base: u64, suffix: &str) -> PathBuf {
    partition_dir().join(file_name(base, suffix))
}

/// Small segments (several per test), an index entry for every batch.
fn config() -> Config {
    Config::default()
        .segment_bytes(700)
        .index_interval_bytes(1)
        .max_index_bytes(1024)
        .retention_age(None)
        .durability(Durability::Sync)
}

/// One segment, however much is appended.
fn one_segment_config() -> Config {
    config().segment_bytes(1 << 20)
}

fn open(sim: &SimStorage, config: &Config) -> crate::Result<Log> {
    Log::open_with_storage(Path::new(DIR), config.clone(), Arc::new(sim.clone()))
}

/// Appends `batches` batches of two records with distinct, increasing
/// timestamps (recent ones: an old first timestamp would roll the segment
/// at every append); returns the records as they must read back.
fn append_batches(log: &Log, first: u64, batches: u64) -> Vec<StoredRecord> {
    let p = log.partition(0).expect("partition 0");
    let mut out = Vec::new();
    let base_ms = crate::partition::now_ms() - 1_000_000;
    for i in first..first + batches {
        let records = [
            Record::new(format!("value {i}a"))
                .with_key(format!("key {i}"))
                .with_header("h", format!("{i}"))
                .with_timestamp(base_ms + 10 * i as i64),
            Record::new(format!("value {i}b")).with_timestamp(base_ms + 5 + 10 * i as i64),
        ];
        let a = p.append(&records).expect("append");
        for (j, r) in records.iter().enumerate() {
            out.push(StoredRecord {
                offset: a.base_offset + j as u64,
                timestamp: r.timestamp.expect("set"),
                key: r.key.clone(),
                value: r.value.clone(),
                headers: r.headers.clone(),
            });
        }
    }
    out
}

fn all_records(log: &Log) -> Vec<StoredRecord> {
    let p = log.partition(0).expect("partition 0");
    p.reader(p.start_offset())
        .collect::<crate::Result<_>>()
        .expect("the whole partition reads")
}

/// Base offsets of the segments on disk, in order.
fn segments_on_disk(sim: &SimStorage) -> Vec<u64> {
    let mut bases: Vec<u64> = sim
        .list_dir(&partition_dir())
        .expect("partition directory")
        .iter()
        .filter_map(|name| parse_file_name(name, LOG_SUFFIX))
        .collect();
    bases.sort_unstable();
    bases
}

fn names_on_disk(sim: &SimStorage) -> Vec<String> {
    sim.list_dir(&partition_dir()).expect("partition directory")
}

/// Positions of the whole batches in a segment file, from their length
/// fields.
fn batch_positions(sim: &SimStorage, path: &Path) -> Vec<u64> {
    let bytes = sim.file_contents(path).expect("segment file");
    let mut positions = Vec::new();
    let mut position = 0usize;
    while position + LENGTH_OFFSET + 4 <= bytes.len() {
        let length = u32::from_le_bytes(
            bytes[position + LENGTH_OFFSET..position + LENGTH_OFFSET + 4]
                .try_into()
                .expect("4 bytes"),
        ) as usize;
        if length == 0 || position + length > bytes.len() {
            break;
        }
        positions.push(position as u64);
        position += length;
    }
    positions
}

/// Flips the bits of one byte, on disk.
fn flip(sim: &SimStorage, path: &Path, position: u64) {
    let bytes = sim.file_contents(path).expect("file");
    let old = bytes[usize::try_from(position).expect("small")];
    sim.write_raw(path, position, &[!old]).expect("write_raw");
}

fn create_file(sim: &SimStorage, path: &Path, contents: &[u8]) {
    let file = sim.open(path, true).expect("create");
    file.write_at(contents, 0).expect("write");
    file.sync_data().expect("sync");
    sim.sync_dir(path.parent().expect("a parent"))
        .expect("sync dir");
}

/// A log of several segments, closed cleanly; returns its records.
fn closed_log(sim: &SimStorage, batches: u64) -> Vec<StoredRecord> {
    let log = open(sim, &config()).expect("open");
    let records = append_batches(&log, 0, batches);
    log.close().expect("close");
    assert!(
        segments_on_disk(sim).len() >= 3,
        "the test wants several segments: {:?}",
        segments_on_disk(sim)
    );
    records
}

fn expect_corrupt(result: crate::Result<Log>) -> (PathBuf, u64, CorruptKind) {
    match result {
        Err(Error::Corrupt {
            path,
            position,
            kind,
        }) => (path, position, kind),
        Err(other) => panic!("expected Error::Corrupt, got {other}"),
        Ok(_) => panic!("expected Error::Corrupt, the log opened"),
    }
}

// Row 3 -----------------------------------------------------------------------

#[test]
fn row3_missing_index_of_closed_segment_is_rebuilt() {
    let sim = SimStorage::new(1);
    let records = closed_log(&sim, 20);
    let bases = segments_on_disk(&sim);
    let index = segment_file(bases[0], INDEX_SUFFIX);
    let original = sim.file_contents(&index).expect("index");
    assert!(!original.is_empty());
    sim.remove_file(&index).expect("remove");

    let log = open(&sim, &config()).expect("open without an index");
    let report = &log.recovery_reports()[0];
    assert!(report.clean, "{report:?}");
    assert_eq!(report.indexes_rebuilt, 1, "{report:?}");
    assert_eq!(report.segments_scanned, 1, "{report:?}");
    assert_eq!(all_records(&log), records);
    assert_eq!(
        sim.file_contents(&index).as_deref(),
        Some(&original[..]),
        "the rebuilt index differs from the one written on append"
    );
    // Lookups through the rebuilt index land on the right batch.
    let p = log.partition(0).expect("partition 0");
    for r in records.iter().filter(|r| r.offset < bases[1]) {
        let got = p.read(r.offset, 1).expect("read");
        assert_eq!(got.first(), Some(r), "read({})", r.offset);
    }
}

#[test]
fn row3_garbage_indexes_of_closed_segments_are_rebuilt() {
    let sim = SimStorage::new(2);
    let records = closed_log(&sim, 24);
    let bases = segments_on_disk(&sim);
    assert!(bases.len() >= 4, "{bases:?}");
    let originals: Vec<(PathBuf, Vec<u8>)> = bases[..3]
        .iter()
        .flat_map(|&b| [INDEX_SUFFIX, TIME_INDEX_SUFFIX].map(|s| segment_file(b, s)))
        .map(|path| {
            let bytes = sim.file_contents(&path).expect("index");
            (path, bytes)
        })
        .collect();
    // Not a whole number of entries.
    let index0 = segment_file(bases[0], INDEX_SUFFIX);
    let len = sim.file_contents(&index0).expect("index").len() as u64;
    sim.set_len_raw(&index0, len - 3).expect("set_len_raw");
    // An entry that points past the end of the segment.
    sim.write_raw(segment_file(bases[1], INDEX_SUFFIX), 0, &[0xFF; 8])
        .expect("write_raw");
    // A time-index entry beyond the segment's offsets.
    sim.write_raw(segment_file(bases[2], TIME_INDEX_SUFFIX), 8, &[0xFF; 4])
        .expect("write_raw");

    let log = open(&sim, &config()).expect("open with damaged indexes");
    let report = &log.recovery_reports()[0];
    assert_eq!(report.indexes_rebuilt, 3, "{report:?}");
    assert_eq!(report.segments_scanned, 3, "{report:?}");
    assert_eq!(report.truncated_bytes, 0, "{report:?}");
    assert_eq!(all_records(&log), records);
    for (path, bytes) in &originals {
        assert_eq!(
            sim.file_contents(path).as_deref(),
            Some(&bytes[..]),
            "{} was not rebuilt as written",
            path.display()
        );
    }
    let p = log.partition(0).expect("partition 0");
    for r in &records {
        assert_eq!(
            p.offset_for_timestamp(r.timestamp).expect("lookup"),
            Some(r.offset),
            "timestamp {}",
            r.timestamp
        );
        assert_eq!(p.read(r.offset, 1).expect("read").first(), Some(r));
    }
}

// Row 5 -----------------------------------------------------------------------

#[test]
fn row5_torn_tail_after_crash_is_cut() {
    let sim = SimStorage::new(3);
    let config = one_segment_config().durability(Durability::None);
    let log = open(&sim, &config).expect("open");
    let mut records = append_batches(&log, 0, 6);
    log.sync().expect("sync");
    records.extend(append_batches(&log, 6, 3));
    let path = segment_file(0, LOG_SUFFIX);
    let positions = batch_positions(&sim, &path);
    assert_eq!(positions.len(), 9);
    sim.crash_clean_prefix();
    drop(log);
    // The last batch reached the disk only in part.
    let torn_at = positions[8];
    sim.set_len_raw(&path, torn_at + 30).expect("set_len_raw");

    let log = open(&sim, &config).expect("open after the crash");
    let report = &log.recovery_reports()[0];
    assert!(!report.clean, "{report:?}");
    assert_eq!(report.segments_scanned, 1, "{report:?}");
    assert_eq!(report.truncated_bytes, 30, "{report:?}");
    records.truncate(16);
    assert_eq!(all_records(&log), records);
    assert_eq!(
        sim.file_contents(&path).map(|c| c.len() as u64),
        Some(torn_at)
    );
    let p = log.partition(0).expect("partition 0");
    assert_eq!(p.end_offset(), 16);
    // The cut is durable, and appends go on from it.
    let a = p.append(&[Record::new("after")]).expect("append");
    assert_eq!(a.base_offset, 16);
}

#[test]
fn row5_power_loss_tails_are_cut_to_whole_batches() {
    let config = one_segment_config().durability(Durability::None);
    let mut cut = 0;
    for seed in 0..64 {
        let sim = SimStorage::new(seed);
        let log = open(&sim, &config).expect("open");
        let mut records = append_batches(&log, 0, 4);
        log.sync().expect("sync");
        records.extend(append_batches(&log, 4, 4));
        sim.crash();
        drop(log);
        let log = open(&sim, &config).expect("open after power loss");
        let report = log.recovery_reports()[0].clone();
        let got = all_records(&log);
        assert!(
            (8..=16).contains(&got.len()) && got.len().is_multiple_of(2),
            "seed {seed}: {} records survived",
            got.len()
        );
        assert_eq!(got, records[..got.len()], "seed {seed}");
        if report.truncated_bytes > 0 {
            cut += 1;
        }
    }
    assert!(cut > 0, "no seed left a torn tail to cut");
}

// Row 6 -----------------------------------------------------------------------

/// One segment whose first six batches are below a synced recovery point:
/// they are appended, the log is closed and opened again (opening syncs the
/// checkpoint), two more batches are appended, and the process crashes.
/// Whatever the crash does to the checkpoint's later, unsynced updates, the
/// six batches stay below the synced position. Returns the positions of the
/// batches in the segment.
fn crashed_after_reopen(sim: &SimStorage) -> Vec<u64> {
    let log = open(sim, &one_segment_config()).expect("open");
    append_batches(&log, 0, 6);
    log.close().expect("close");
    let log = open(sim, &one_segment_config()).expect("reopen");
    append_batches(&log, 6, 2);
    sim.crash_clean_prefix();
    drop(log);
    let positions = batch_positions(sim, &segment_file(0, LOG_SUFFIX));
    assert!(positions.len() >= 6, "{positions:?}");
    positions
}

#[test]
fn row6_a_damaged_header_below_synced_position_fails() {
    let sim = SimStorage::new(4);
    let positions = crashed_after_reopen(&sim);
    let path = segment_file(0, LOG_SUFFIX);
    flip(
        &sim,
        &path,
        positions[2] + crate::record::batch::MAGIC_OFFSET as u64,
    );

    let (bad_path, position, kind) = expect_corrupt(open(&sim, &one_segment_config()));
    assert_eq!(bad_path, path);
    assert_eq!(position, positions[2]);
    assert!(matches!(kind, CorruptKind::Version(_)), "{kind:?}");
}

/// Below the synced position only headers are walked at open; a batch
/// whose records were damaged there fails its checksum at its first read,
/// which reports it instead of returning its records.
#[test]
fn row6_damaged_records_below_synced_position_fail_when_read() {
    let sim = SimStorage::new(4);
    let positions = crashed_after_reopen(&sim);
    let path = segment_file(0, LOG_SUFFIX);
    flip(&sim, &path, positions[2] + 70);

    let log = open(&sim, &one_segment_config()).expect("only headers are walked");
    expect_corrupt_read(&log, &path, positions[2]);
}

#[test]
fn row6_damage_in_earlier_segment_with_missing_index_fails_when_read() {
    let sim = SimStorage::new(5);
    closed_log(&sim, 20);
    let bases = segments_on_disk(&sim);
    let path = segment_file(bases[0], LOG_SUFFIX);
    let positions = batch_positions(&sim, &path);
    assert!(positions.len() >= 2);
    sim.remove_file(&segment_file(bases[0], INDEX_SUFFIX))
        .expect("remove");
    flip(&sim, &path, positions[1] + 70);

    let log = open(&sim, &config()).expect("the index is rebuilt from headers");
    expect_corrupt_read(&log, &path, positions[1]);
}

/// Reads partition 0 from its first record and expects the read to stop
/// with a checksum error for the batch at `position` of `path`, after
/// returning only the records before it.
fn expect_corrupt_read(log: &Log, path: &std::path::Path, position: u64) {
    let p = log.partition(0).expect("partition 0");
    let mut reader = p.reader(p.start_offset());
    loop {
        match reader.next() {
            Some(Ok(_)) => {}
            Some(Err(Error::Corrupt {
                path: bad_path,
                position: bad_position,
                kind,
            })) => {
                assert_eq!((bad_path.as_path(), bad_position), (path, position));
                assert!(matches!(kind, CorruptKind::Checksum { .. }), "{kind:?}");
                return;
            }
            Some(Err(other)) => panic!("expected a checksum error, got {other}"),
            None => panic!("the damaged batch was read without an error"),
        }
    }
}

/// Row 2 trusts a closed segment with good indexes without reading it;
/// damage there is found by the read that reaches it, which fails instead
/// of returning the bytes.
#[test]
fn row2_damage_in_trusted_segment_is_reported_on_read() {
    let sim = SimStorage::new(6);
    let records = closed_log(&sim, 20);
    let bases = segments_on_disk(&sim);
    let path = segment_file(bases[0], LOG_SUFFIX);
    let positions = batch_positions(&sim, &path);
    flip(&sim, &path, positions[1] + 70);

    let log = open(&sim, &config()).expect("damage in a trusted segment is not scanned");
    let p = log.partition(0).expect("partition 0");
    match p.read(2, 1) {
        Err(Error::Corrupt {
            path: bad_path,
            position,
            ..
        }) => {
            assert_eq!((bad_path, position), (path.clone(), positions[1]));
        }
        other => panic!("read of the damaged batch gave {other:?}"),
    }
    let mut reader = p.reader(0);
    assert_eq!(reader.next().expect("a record").expect("good"), records[0]);
    assert_eq!(reader.next().expect("a record").expect("good"), records[1]);
    assert!(matches!(reader.next(), Some(Err(Error::Corrupt { .. }))));
    assert!(reader.next().is_none(), "a reader goes on after corruption");
    // Other segments still read.
    let later: Vec<StoredRecord> = p
        .reader(bases[1])
        .collect::<crate::Result<_>>()
        .expect("later segments read");
    assert_eq!(later, records[bases[1] as usize..]);
}

// Row 7 -----------------------------------------------------------------------

#[test]
fn row7_last_segment_cut_below_synced_position_fails() {
    for clean in [false, true] {
        let sim = SimStorage::new(7);
        let path = segment_file(0, LOG_SUFFIX);
        let positions = if clean {
            let log = open(&sim, &one_segment_config()).expect("open");
            append_batches(&log, 0, 6);
            log.close().expect("close");
            batch_positions(&sim, &path)
        } else {
            crashed_after_reopen(&sim)
        };
        sim.set_len_raw(&path, positions[3]).expect("set_len_raw");

        let (bad_path, position, kind) = expect_corrupt(open(&sim, &one_segment_config()));
        assert_eq!(bad_path, path, "clean {clean}");
        assert_eq!(position, positions[3], "clean {clean}");
        assert!(
            matches!(kind, CorruptKind::Truncated { available, .. } if available == positions[3]),
            "clean {clean}: {kind:?}"
        );
    }
}

// Row 8 -----------------------------------------------------------------------

#[test]
fn row8_missing_checkpoint_opens_and_scans() {
    for clean in [true, false] {
        let sim = SimStorage::new(8);
        let log = open(&sim, &config()).expect("open");
        let mut records = append_batches(&log, 0, 20);
        if clean {
            log.close().expect("close");
        } else {
            sim.crash_clean_prefix();
            drop(log);
        }
        let segments = segments_on_disk(&sim).len();
        assert!(segments >= 3);
        sim.remove_file(&partition_dir().join(crate::checkpoint::FILE_NAME))
            .expect("remove");

        let log = open(&sim, &config()).expect("open without a checkpoint");
        let report = &log.recovery_reports()[0];
        assert!(!report.clean, "clean {clean}: {report:?}");
        assert_eq!(report.segments_scanned, 1, "clean {clean}: {report:?}");
        assert_eq!(report.truncated_bytes, 0, "clean {clean}: {report:?}");
        assert_eq!(all_records(&log), records, "clean {clean}");
        let p = log.partition(0).expect("partition 0");
        assert_eq!(p.start_offset(), 0);
        records.extend(append_batches(&log, 20, 2));
        drop(p);
        log.close().expect("close");
        let log = open(&sim, &config()).expect("reopen");
        assert!(log.recovery_reports()[0].clean);
        assert_eq!(all_records(&log), records, "clean {clean}");
    }
}

// Row 9 -----------------------------------------------------------------------

#[test]
fn row9_stray_indexes_and_rewrite_leftovers_are_removed() {
    let sim = SimStorage::new(9);
    let records = closed_log(&sim, 20);
    let bases = segments_on_disk(&sim);
    let before = names_on_disk(&sim);
    let leftovers = [
        file_name(99_999, INDEX_SUFFIX),
        file_name(99_999, TIME_INDEX_SUFFIX),
        format!("{}.rewrite", file_name(bases[0], LOG_SUFFIX)),
        format!("{}.rewrite", file_name(bases[1], INDEX_SUFFIX)),
    ];
    for name in &leftovers {
        create_file(&sim, &partition_dir().join(name), b"left over");
    }

    let log = open(&sim, &config()).expect("open");
    assert_eq!(all_records(&log), records);
    let mut after = names_on_disk(&sim);
    let mut before = before;
    after.sort();
    before.sort();
    assert_eq!(after, before, "leftovers not removed, or log files lost");
    // The removal is durable.
    sim.crash();
    drop(log);
    for name in &leftovers {
        assert!(
            !names_on_disk(&sim).contains(name),
            "{name} is back after a power loss"
        );
    }
    let log = open(&sim, &config()).expect("open after power loss");
    assert_eq!(all_records(&log), records);
}

// Row 10 ----------------------------------------------------------------------

#[test]
fn row10_foreign_files_are_left_alone() {
    let sim = SimStorage::new(10);
    let records = closed_log(&sim, 20);
    let foreign = [
        ("notes.txt", &b"keep me"[..]),
        ("0100.log", b"not a segment"),
        ("00000000000000000000.log.bak", b"a backup"),
        ("x.log.rewrite", b"not a rewrite"),
    ];
    for (name, contents) in foreign {
        create_file(&sim, &partition_dir().join(name), contents);
    }
    for round in 0..2 {
        let log = open(&sim, &config()).expect("open");
        assert_eq!(all_records(&log), records, "round {round}");
        if round == 0 {
            log.close().expect("close");
        } else {
            sim.crash();
            drop(log);
        }
        for (name, contents) in foreign {
            assert_eq!(
                sim.file_contents(partition_dir().join(name)).as_deref(),
                Some(contents),
                "round {round}: {name}"
            );
        }
    }
}

// Durability of what opening creates ------------------------------------------

/// Row 8 again: the checkpoint that opening recreates must be durable
/// before the log relies on it, or a power loss takes the log start offset
/// (and the recovery point) with it.
///
/// Regression: `Checkpoint::open` created the missing file, and its name
/// was made durable only by a later directory sync (a roll, a deletion).
/// Until then a power loss lost the file, and with it a
/// `delete_records_before` that had returned.
#[test]
fn row8_recreated_checkpoint_survives_power_loss() {
    let config = one_segment_config();
    let mut lost = Vec::new();
    for seed in 0..32 {
        let sim = SimStorage::new(seed);
        let log = open(&sim, &config).expect("open");
        append_batches(&log, 0, 4);
        log.close().expect("close");
        sim.remove_file(&partition_dir().join(crate::checkpoint::FILE_NAME))
            .expect("remove");
        sim.sync_dir(&partition_dir()).expect("sync dir");

        let log = open(&sim, &config).expect("open without a checkpoint");
        let p = log.partition(0).expect("partition 0");
        p.delete_records_before(3).expect("delete_records_before");
        sim.crash();
        drop(p);
        drop(log);
        let log = open(&sim, &config).expect("open after power loss");
        let start = log.partition(0).expect("partition 0").start_offset();
        if start != 3 {
            lost.push((seed, start));
        }
    }
    assert!(
        lost.is_empty(),
        "(seed, start offset) after power loss: {lost:?}"
    );
}

/// A log created in a directory whose parents are new too: every new
/// directory must be made durable, or a power loss takes the whole log,
/// acknowledged records and all.
///
/// Regression: `Log::open` created `dir` with `create_dir_all` and synced
/// only `dir`'s parent, so the entries of the other new ancestors (here
/// `data` in `/` and `logs` in `/data`) were not durable.
#[test]
fn new_nested_log_directory_survives_power_loss() {
    let mut lost = Vec::new();
    for seed in 0..32 {
        let sim = SimStorage::new(seed);
        let dir = Path::new("/data/logs/orders");
        let log =
            Log::open_with_storage(dir, one_segment_config(), Arc::new(sim.clone())).expect("open");
        log.partition(0)
            .expect("partition 0")
            .append(&[Record::new("acknowledged")])
            .expect("append");
        sim.crash();
        drop(log);
        let log = Log::open_with_storage(dir, one_segment_config(), Arc::new(sim.clone()))
            .expect("open after power loss");
        let end = log.partition(0).expect("partition 0").end_offset();
        if end != 1 {
            lost.push(seed);
        }
    }
    assert!(
        lost.is_empty(),
        "seeds that lost the acknowledged record: {lost:?}"
    );
}

/// A closed segment is synced whole when it rolls, so one that lost batches
/// at its end (cut at a batch boundary, where no batch is torn) lost synced
/// data. Opening must not accept it: the next segment starts at a higher
/// offset, and readers would skip the missing offsets without an error.
///
/// Regression: the index check fails (its last entry points at the cut), the
/// segment is rescanned as synced data and every batch left is valid, so it
/// opens with its `next_offset` below the next segment's base. Readers went
/// on to the next segment without noticing the gap; now they report it.
#[test]
fn closed_segment_that_lost_its_last_batch_is_not_a_silent_gap() {
    let sim = SimStorage::new(11);
    let records = closed_log(&sim, 20);
    let bases = segments_on_disk(&sim);
    let path = segment_file(bases[0], LOG_SUFFIX);
    let positions = batch_positions(&sim, &path);
    let cut = *positions.last().expect("a batch");
    sim.set_len_raw(&path, cut).expect("set_len_raw");

    match open(&sim, &config()) {
        Err(Error::Corrupt { path: bad_path, .. }) => assert_eq!(bad_path, path),
        Err(other) => panic!("expected Error::Corrupt, got {other}"),
        Ok(log) => {
            let p = log.partition(0).expect("partition 0");
            let got: crate::Result<Vec<StoredRecord>> = p.reader(0).collect();
            match got {
                Err(Error::Corrupt { .. }) => {}
                Err(other) => panic!("reading gave {other}"),
                Ok(got) => {
                    let offsets: Vec<u64> = got.iter().map(|r| r.offset).collect();
                    panic!(
                        "the log opened and reads {} of {} records without an error; offsets {offsets:?}",
                        got.len(),
                        records.len()
                    );
                }
            }
        }
    }
}
