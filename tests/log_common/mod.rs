//! Helpers shared by the `log_*` integration tests: opening logs, building
//! recognisable records, reading everything back, and finding and damaging
//! the files of a closed log.

#![allow(dead_code, reason = "each test file uses a subset of the helpers")]

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use durable_log::{Config, Log, Partition, Record, StoredRecord};

/// Size of a batch header on disk.
pub const BATCH_HEADER_BYTES: u64 = 64;
/// Byte position of the batch length inside the header.
const LENGTH_AT: usize = 4;
/// Byte position of the base offset inside the header.
const BASE_OFFSET_AT: usize = 16;
/// Byte position of the last offset delta inside the header.
const LAST_OFFSET_DELTA_AT: usize = 24;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    i64::try_from(since.as_millis()).expect("fits in i64")
}

/// One hour in milliseconds.
pub const HOUR_MS: i64 = 60 * 60 * 1000;

/// Opens a log, panicking with the error if it fails.
pub fn open(dir: &Path, config: Config) -> Log {
    Log::open(dir, config).unwrap_or_else(|e| panic!("opening {}: {e}", dir.display()))
}

/// A recent timestamp fixed for the whole test process, so records built
/// from it are reproducible and too young to roll a segment by age or to
/// fall to the default retention.
pub fn base_ts() -> i64 {
    static BASE: OnceLock<i64> = OnceLock::new();
    *BASE.get_or_init(now_ms)
}

/// A record whose key, value, timestamp and headers all derive from `i`, so
/// it can be recognised after a round trip.
pub fn record(i: u64) -> Record {
    Record::new(format!("value-{i}"))
        .with_key(format!("key-{i}"))
        .with_timestamp(base_ts() + i as i64)
        .with_header("n", i.to_string())
        .with_header("parity", if i.is_multiple_of(2) { "even" } else { "odd" })
}

/// A record with a value of `len` bytes, all equal to `i` (mod 256).
pub fn sized_record(i: u64, len: usize) -> Record {
    Record::new(vec![(i % 256) as u8; len]).with_key(format!("key-{i}"))
}

/// Appends `count` single-record batches made by `make`, numbered from the
/// partition's current end offset.
pub fn append_each(p: &Partition, count: u64, make: impl Fn(u64) -> Record) {
    for _ in 0..count {
        let next = p.end_offset();
        let appended = p.append(&[make(next)]).expect("append");
        assert_eq!(appended.base_offset, next);
    }
}

/// Every record from `offset` to the end offset, through the reader.
pub fn read_from(p: &Partition, offset: u64) -> Vec<StoredRecord> {
    p.reader(offset)
        .collect::<durable_log::Result<Vec<_>>>()
        .expect("reading the partition")
}

/// Every record from the start offset to the end offset.
pub fn read_all(p: &Partition) -> Vec<StoredRecord> {
    read_from(p, p.start_offset())
}

/// The offsets of `records`.
pub fn offsets(records: &[StoredRecord]) -> Vec<u64> {
    records.iter().map(|r| r.offset).collect()
}

/// Asserts that a stored record carries exactly what `record` had.
pub fn assert_same(stored: &StoredRecord, record: &Record) {
    assert_eq!(stored.key, record.key, "key at offset {}", stored.offset);
    assert_eq!(
        stored.value, record.value,
        "value at offset {}",
        stored.offset
    );
    if let Some(ts) = record.timestamp {
        assert_eq!(
            stored.timestamp, ts,
            "timestamp at offset {}",
            stored.offset
        );
    }
    assert_eq!(
        stored.headers, record.headers,
        "headers at offset {}",
        stored.offset
    );
}

/// The directory of partition `id` of the log in `dir`.
pub fn partition_dir(dir: &Path, id: u32) -> PathBuf {
    dir.join(id.to_string())
}

/// The files of a partition with this suffix (".log", ".index",
/// ".timeindex"), sorted by base offset.
pub fn files_with_suffix(dir: &Path, id: u32, suffix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(partition_dir(dir, id))
        .expect("listing the partition directory")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.len() == 20 + suffix.len() && n.ends_with(suffix))
        })
        .collect();
    files.sort();
    files
}

/// The segment log files of a partition, sorted by base offset.
pub fn log_files(dir: &Path, id: u32) -> Vec<PathBuf> {
    files_with_suffix(dir, id, ".log")
}

/// The base offset a segment file's name carries.
pub fn base_of(path: &Path) -> u64 {
    let name = path.file_name().and_then(|n| n.to_str()).expect("a name");
    name[..20].parse().expect("twenty digits")
}

/// One batch as found by walking a segment file's headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchAt {
    /// Byte position of the batch in the file.
    pub position: u64,
    /// Length of the batch in bytes.
    pub length: u64,
    /// Offset of its first record.
    pub base_offset: u64,
    /// Offset of its last record.
    pub last_offset: u64,
}

/// Walks the batch headers of a closed segment file (the layout of
/// `FORMAT.md`: length at byte 4, base offset at 16, last offset delta at 24).
pub fn batches_in(path: &Path) -> Vec<BatchAt> {
    let bytes = fs::read(path).expect("reading a segment file");
    let mut batches = Vec::new();
    let mut position = 0usize;
    while position + BATCH_HEADER_BYTES as usize <= bytes.len() {
        let header = &bytes[position..position + BATCH_HEADER_BYTES as usize];
        let length = u32::from_le_bytes(header[LENGTH_AT..LENGTH_AT + 4].try_into().unwrap());
        let base = u64::from_le_bytes(
            header[BASE_OFFSET_AT..BASE_OFFSET_AT + 8]
                .try_into()
                .unwrap(),
        );
        let delta = u32::from_le_bytes(
            header[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4]
                .try_into()
                .unwrap(),
        );
        // An all-zero header is where the data ends and the space written
        // ahead for appends begins (in a segment still being appended to).
        if header.iter().all(|&b| b == 0) {
            break;
        }
        assert!(
            u64::from(length) >= BATCH_HEADER_BYTES,
            "walked into garbage"
        );
        batches.push(BatchAt {
            position: position as u64,
            length: u64::from(length),
            base_offset: base,
            last_offset: base + u64::from(delta),
        });
        position += length as usize;
    }
    assert!(
        bytes[position..].iter().all(|&b| b == 0),
        "{} ends mid-batch",
        path.display()
    );
    batches
}

/// Flips one bit of the byte at `position` of a file.
pub fn flip_bit(path: &Path, position: u64) {
    let mut bytes = fs::read(path).expect("reading the file to damage");
    bytes[position as usize] ^= 0x10;
    fs::write(path, bytes).expect("writing the damaged file");
}

/// Appends `bytes` to the end of a file.
pub fn append_bytes(path: &Path, bytes: &[u8]) {
    let mut file = OpenOptions::new()
        .append(true)
        .open(path)
        .expect("opening the file to extend");
    file.write_all(bytes).expect("extending the file");
    file.sync_all().expect("syncing the extended file");
}

/// The length of a file.
pub fn file_len(path: &Path) -> u64 {
    fs::metadata(path).expect("file metadata").len()
}

/// The names in a directory, sorted.
pub fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("listing a directory")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    names.sort();
    names
}
