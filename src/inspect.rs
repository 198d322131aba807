//! Offline inspection of a log directory: dump, verify, repair, stats.
//!
//! These are the functions behind the `durable-log` command-line tool. They
//! read the files of a log that no [`Log`](crate::Log) has open. Each one
//! that takes a directory holds the directory's lock while it runs, the same
//! lock `Log::open` takes, so it fails with [`Error::Locked`] rather than
//! read files that another process is writing. [`dump_segment`] and
//! [`SegmentBatches`] read a single segment file and take no lock.
//!
//! Everything read from disk is checked before it is trusted. Bad bytes are
//! reported as data, never as a panic, and no length read from a file sizes
//! an allocation before it has been checked against the file.
//!
//! # What counts as a valid batch
//!
//! A batch is valid when its header decodes (known version, no reserved bits
//! set, sane lengths), it fits in the file, its CRC-32 matches, its offsets
//! follow those of the batch before it (and are not below the segment's base
//! offset), and its records decode. A scan of a segment stops at the first
//! batch that is not valid: nothing after it can be located with
//! confidence.
//!
//! ```
//! use durable_log::{Config, Log, Record, inspect};
//!
//! # fn main() -> durable_log::Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! let log = Log::open(dir.path(), Config::default())?;
//! log.partition(0)?.append(&[Record::new("a"), Record::new("b")])?;
//! log.close()?;
//!
//! let report = inspect::verify(dir.path(), |_progress| {})?;
//! assert!(report.is_ok());
//! assert_eq!(report.records, 2);
//! # Ok(()) }
//! ```

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::checkpoint::{self, Checkpoint, State};
use crate::codec;
use crate::error::{CorruptKind, Error, Result};
use crate::record::Header;
use crate::record::batch::{ATTR_LOG_APPEND_TIME, BatchHeader, HEADER_BYTES, Records};
use crate::recovery::{self, BatchDecision, RecoveryPoint, SegmentPlan};
use crate::segment::{
    Entry, INDEX_SUFFIX, Index, LOG_SUFFIX, OffsetEntry, TIME_INDEX_SUFFIX, TimeEntry,
    parse_file_name,
};
use crate::storage::{FsStorage, LockGuard, Storage};

// The metadata file, as `Log::open` writes it (see FORMAT.md).
const META_FILE: &str = "meta";
const LOCK_FILE: &str = "lock";

/// Bytes read ahead from a segment file at a time.
const WINDOW_BYTES: usize = 1 << 20;
/// A progress callback is called at least this often, in bytes scanned.
const PROGRESS_STEP_BYTES: u64 = 1 << 20;
/// Bad entries of one index file that are listed one by one; the rest are
/// counted.
const LISTED_INDEX_PROBLEMS_MAX: usize = 10;
/// Sizes of the index entries on disk.
const OFFSET_ENTRY_BYTES: u64 = 8;
const TIME_ENTRY_BYTES: u64 = 12;

// ---------------------------------------------------------------------------
// Batches and records as reported
// ---------------------------------------------------------------------------

/// The codec of a batch's records block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Codec {
    /// Stored uncompressed.
    None,
    /// LZ4 block compression.
    Lz4,
    /// Zstandard.
    Zstd,
    /// A codec number this build does not know.
    Other(u16),
}

impl Codec {
    fn from_bits(bits: u16) -> Codec {
        match bits {
            codec::CODEC_NONE => Codec::None,
            codec::CODEC_LZ4 => Codec::Lz4,
            codec::CODEC_ZSTD => Codec::Zstd,
            other => Codec::Other(other),
        }
    }

    /// A short lowercase name: `none`, `lz4`, `zstd` or `codec-<n>`.
    pub fn name(&self) -> String {
        match self {
            Codec::None => "none".into(),
            Codec::Lz4 => "lz4".into(),
            Codec::Zstd => "zstd".into(),
            Codec::Other(n) => format!("codec-{n}"),
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// One batch of a segment, as its header describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchInfo {
    /// Byte position of the batch in its segment file.
    pub position: u64,
    /// Offset of the first record.
    pub base_offset: u64,
    /// Offset of the last record.
    pub last_offset: u64,
    /// Number of records.
    pub record_count: u32,
    /// Size of the whole batch in bytes, header included.
    pub batch_length: u32,
    /// The stored CRC-32.
    pub crc: u32,
    /// Whether the CRC-32 matches the batch's bytes.
    pub crc_valid: bool,
    /// Timestamp of the first record, in milliseconds since the Unix epoch.
    pub first_timestamp: i64,
    /// Largest timestamp in the batch, in milliseconds since the Unix epoch.
    pub max_timestamp: i64,
    /// Whether timestamps are the log's append time rather than the
    /// producer's.
    pub log_append_time: bool,
    /// Producer id; -1 when none.
    pub producer_id: i64,
    /// Producer epoch; -1 when none.
    pub producer_epoch: i16,
    /// Sequence number of the first record; -1 when none.
    pub base_sequence: i32,
    /// Leader epoch; -1 when none.
    pub leader_epoch: i32,
    /// Codec of the records block.
    pub codec: Codec,
    /// The records, when they were asked for ([`SegmentBatches::with_records`]).
    pub records: Option<Vec<RecordInfo>>,
}

impl BatchInfo {
    fn from_header(header: &BatchHeader, position: u64, crc_valid: bool) -> BatchInfo {
        BatchInfo {
            position,
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
            record_count: header.record_count,
            batch_length: header.batch_length,
            crc: header.crc,
            crc_valid,
            first_timestamp: header.first_timestamp,
            max_timestamp: header.max_timestamp,
            log_append_time: header.attributes & ATTR_LOG_APPEND_TIME != 0,
            producer_id: header.producer_id,
            producer_epoch: header.producer_epoch,
            base_sequence: header.base_sequence,
            leader_epoch: header.leader_epoch,
            codec: Codec::from_bits(header.codec()),
            records: None,
        }
    }
}

/// One record of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordInfo {
    /// The record's offset.
    pub offset: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The key, if any; see [`Printable`] to show it.
    pub key: Option<Bytes>,
    /// The value; `None` for a tombstone.
    pub value: Option<Bytes>,
    /// The headers, in order.
    pub headers: Vec<Header>,
}

/// Bytes as a person should see them: the text when they are UTF-8,
/// hexadecimal otherwise.
///
/// `Display` quotes text and escapes control characters (so record bytes
/// cannot drive a terminal), and prefixes hex with `0x`.
///
/// ```
/// use durable_log::inspect::Printable;
///
/// assert_eq!(Printable::of(b"hi\n").to_string(), r#""hi\n""#);
/// assert_eq!(Printable::of(&[0xff, 0x00]).to_string(), "0xff00");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Printable<'a> {
    /// The bytes are valid UTF-8.
    Text(&'a str),
    /// The bytes are not UTF-8: their lowercase hexadecimal digits.
    Hex(String),
}

impl<'a> Printable<'a> {
    /// Classifies `bytes`.
    pub fn of(bytes: &'a [u8]) -> Printable<'a> {
        match std::str::from_utf8(bytes) {
            Ok(text) => Printable::Text(text),
            Err(_) => Printable::Hex(hex(bytes)),
        }
    }
}

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Printable::Text(text) => write!(f, "{text:?}"),
            Printable::Hex(digits) => write!(f, "0x{digits}"),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// The first batch of a segment that is not valid, where a scan stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct InvalidBatch {
    /// Byte position of the batch in the segment file.
    pub position: u64,
    /// What is wrong with it.
    pub kind: CorruptKind,
    /// Its header, when the header itself decodes (for instance when only the
    /// checksum fails). Its fields come from damaged bytes.
    pub header: Option<BatchInfo>,
}

/// A whole segment file, dumped by [`dump_segment`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SegmentDump {
    /// The segment file.
    pub path: PathBuf,
    /// The base offset named by the file name, if it is a segment name.
    pub base_offset: Option<u64>,
    /// Length of the file.
    pub file_bytes: u64,
    /// Bytes of valid batches from the start of the file.
    pub valid_bytes: u64,
    /// The valid batches, in order.
    pub batches: Vec<BatchInfo>,
    /// The first invalid batch, where the dump stopped; `None` when every
    /// byte of the file belongs to a valid batch.
    pub invalid: Option<InvalidBatch>,
}

/// Reads the batches of one segment file (without their records) and the
/// first invalid one, if any. Takes no lock; a file that is being written
/// may show a partial batch at its end. The result holds every batch: for
/// large files, iterate with [`SegmentBatches`] instead.
///
/// # Errors
///
/// [`Error::Io`] when the file cannot be read; invalid bytes are not an
/// error, they end up in [`SegmentDump::invalid`].
pub fn dump_segment(path: impl AsRef<Path>) -> Result<SegmentDump> {
    let mut batches = SegmentBatches::open(path.as_ref())?;
    let mut list = Vec::new();
    for batch in batches.by_ref() {
        list.push(batch?);
    }
    Ok(SegmentDump {
        path: batches.path().to_path_buf(),
        base_offset: batches.base_offset(),
        file_bytes: batches.file_bytes(),
        valid_bytes: batches.valid_bytes(),
        batches: list,
        invalid: batches.invalid().cloned(),
    })
}

// ---------------------------------------------------------------------------
// Reading a segment file
// ---------------------------------------------------------------------------

/// A segment file read sequentially through a read-ahead window.
#[derive(Debug)]
struct SegmentFile {
    path: PathBuf,
    file: File,
    len: u64,
    window: Vec<u8>,
    window_start: u64,
}

/// What was found at a position of a segment file.
enum Found {
    /// A batch whose header, bounds and checksum check out, with its bytes
    /// when they were asked for.
    Batch(BatchHeader, Option<Bytes>),
    /// Bytes that are not a valid batch, with the header if it decodes.
    Invalid(CorruptKind, Option<BatchHeader>),
}

impl SegmentFile {
    fn open(path: &Path) -> Result<SegmentFile> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        if !meta.is_file() {
            return Err(Error::NotALog {
                path: path.to_path_buf(),
                reason: "not a regular file".into(),
            });
        }
        Ok(SegmentFile {
            path: path.to_path_buf(),
            file,
            len: meta.len(),
            window: Vec::new(),
            window_start: 0,
        })
    }

    /// `len` bytes at `position`, which the caller has checked lie within
    /// the file.
    fn bytes(&mut self, position: u64, len: usize) -> Result<&[u8]> {
        debug_assert!(position + len as u64 <= self.len);
        let cached = position
            .checked_sub(self.window_start)
            .and_then(|start| usize::try_from(start).ok())
            .filter(|&start| start + len <= self.window.len());
        if let Some(start) = cached {
            return Ok(&self.window[start..start + len]);
        }
        // Bounded by the file's real length, never by a length read from it.
        let want = (self.len - position).min(len.max(WINDOW_BYTES) as u64) as usize;
        self.window.clear();
        self.window.resize(want, 0);
        self.window_start = position;
        if let Err(e) = self.file.read_exact_at(&mut self.window, position) {
            self.window.clear();
            return Err(Error::io(&self.path, e));
        }
        Ok(&self.window[..len])
    }

    /// True if every byte from `position` to the end of the file is zero:
    /// space written ahead for appends, which ends the data as the end of
    /// the file would (the log cuts it without counting it as torn).
    ///
    /// Holes (space reserved ahead and never written) are skipped, not read.
    fn zeros_from(&mut self, position: u64) -> Result<bool> {
        let mut at = position;
        while at < self.len {
            let data = self.data_after(at)?;
            let Some(data) = data.filter(|data| data.end > at) else {
                return Ok(true);
            };
            at = data.start.max(at);
            let stop = data.end.min(self.len);
            while at < stop {
                let len = (stop - at).min(WINDOW_BYTES as u64) as usize;
                if self.bytes(at, len)?.iter().any(|&b| b != 0) {
                    return Ok(false);
                }
                at += len as u64;
            }
        }
        Ok(true)
    }

    /// The next stretch at or after `position` that may hold data.
    fn data_after(&self, position: u64) -> Result<Option<std::ops::Range<u64>>> {
        #[cfg(target_os = "linux")]
        return crate::storage::data_after(&self.file, position)
            .map_err(|e| Error::io(&self.path, e));
        #[cfg(not(target_os = "linux"))]
        return Ok((position < self.len).then_some(position..self.len));
    }

    /// The header at `position`, checked against the file's bounds but not
    /// against the checksum.
    fn header_at(
        &mut self,
        position: u64,
    ) -> Result<std::result::Result<BatchHeader, CorruptKind>> {
        let available = self.len.saturating_sub(position);
        if available < HEADER_BYTES as u64 {
            return Ok(Err(CorruptKind::Truncated {
                needed: HEADER_BYTES as u64,
                available,
            }));
        }
        let bytes = self.bytes(position, HEADER_BYTES)?;
        Ok(BatchHeader::parse(bytes, u32::MAX))
    }

    /// Reads and checks the batch at `position`.
    fn batch_at(&mut self, position: u64, keep_bytes: bool) -> Result<Found> {
        let header = match self.header_at(position)? {
            Ok(header) => header,
            Err(kind) => return Ok(Found::Invalid(kind, None)),
        };
        let available = self.len - position;
        if u64::from(header.batch_length) > available {
            return Ok(Found::Invalid(
                CorruptKind::Truncated {
                    needed: u64::from(header.batch_length),
                    available,
                },
                Some(header),
            ));
        }
        let len = header.batch_length as usize;
        let bytes = self.bytes(position, len)?;
        match crate::record::batch::verify_batch(bytes, u32::MAX) {
            Ok(verified) => {
                let kept = keep_bytes.then(|| Bytes::copy_from_slice(bytes));
                Ok(Found::Batch(verified, kept))
            }
            Err(kind) => Ok(Found::Invalid(kind, Some(header))),
        }
    }
}

/// The valid batches of one segment file, in order, read without a lock.
///
/// The iteration ends at the end of the file or at the first invalid batch,
/// which [`SegmentBatches::invalid`] then describes. An I/O error is yielded
/// once and ends the iteration. Memory use does not grow with the file.
///
/// ```
/// use durable_log::{Config, Log, Record, inspect::SegmentBatches};
///
/// # fn main() -> durable_log::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let log = Log::open(dir.path(), Config::default())?;
/// log.partition(0)?.append(&[Record::new("a").with_key("k")])?;
/// log.close()?;
///
/// let path = dir.path().join("0").join("00000000000000000000.log");
/// let mut batches = SegmentBatches::open(&path)?.with_records(true);
/// let first = batches.next().unwrap()?;
/// let records = first.records.unwrap();
/// assert_eq!(records[0].key.as_deref(), Some(&b"k"[..]));
/// assert!(batches.next().is_none());
/// assert!(batches.invalid().is_none());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct SegmentBatches {
    file: SegmentFile,
    base_offset: Option<u64>,
    position: u64,
    /// The smallest base offset the next batch may have.
    expected: u64,
    records: bool,
    /// Also decompress to measure each batch's uncompressed records block.
    measure: bool,
    last_uncompressed: u64,
    invalid: Option<InvalidBatch>,
    done: bool,
}

impl SegmentBatches {
    /// Opens a segment file. When its name is a segment name
    /// (`<20 digits>.log`), batches must not start below that base offset.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the file cannot be opened; [`Error::NotALog`] when
    /// the path is not a regular file.
    pub fn open(path: impl AsRef<Path>) -> Result<SegmentBatches> {
        let path = path.as_ref();
        let base_offset = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| parse_file_name(n, LOG_SUFFIX));
        Self::for_segment(path, base_offset, base_offset.unwrap_or(0))
    }

    fn for_segment(path: &Path, base_offset: Option<u64>, expected: u64) -> Result<SegmentBatches> {
        Ok(SegmentBatches {
            file: SegmentFile::open(path)?,
            base_offset,
            position: 0,
            expected,
            records: false,
            measure: false,
            last_uncompressed: 0,
            invalid: None,
            done: false,
        })
    }

    /// Also decodes each batch's records into [`BatchInfo::records`].
    /// Records are decoded (and so checked) either way.
    #[must_use]
    pub fn with_records(mut self, records: bool) -> SegmentBatches {
        self.records = records;
        self
    }

    /// The segment file.
    pub fn path(&self) -> &Path {
        &self.file.path
    }

    /// The base offset named by the file name, if it is a segment name.
    pub fn base_offset(&self) -> Option<u64> {
        self.base_offset
    }

    /// Length of the file when it was opened.
    pub fn file_bytes(&self) -> u64 {
        self.file.len
    }

    /// Bytes of the valid batches read so far.
    pub fn valid_bytes(&self) -> u64 {
        self.position
    }

    /// The offset the next batch may start at, at the earliest: after the
    /// last valid batch read, the offset that follows it.
    pub fn next_offset(&self) -> u64 {
        self.expected
    }

    /// The first invalid batch, once the iteration has reached it.
    pub fn invalid(&self) -> Option<&InvalidBatch> {
        self.invalid.as_ref()
    }

    fn stop(&mut self, kind: CorruptKind, header: Option<BatchInfo>) -> Result<Option<BatchInfo>> {
        self.invalid = Some(InvalidBatch {
            position: self.position,
            kind,
            header,
        });
        Ok(None)
    }

    fn step(&mut self) -> Result<Option<BatchInfo>> {
        let position = self.position;
        let (header, bytes) = match self.file.batch_at(position, true)? {
            Found::Batch(header, bytes) => (header, bytes.expect("asked for the bytes")),
            Found::Invalid(_, None) if self.file.zeros_from(position)? => return Ok(None),
            Found::Invalid(kind, header) => {
                let info = header.map(|h| BatchInfo::from_header(&h, position, false));
                return self.stop(kind, info);
            }
        };
        let mut info = BatchInfo::from_header(&header, position, true);
        if header.base_offset < self.expected {
            let kind = CorruptKind::OffsetOrder {
                expected_at_least: self.expected,
                found: header.base_offset,
            };
            return self.stop(kind, Some(info));
        }
        if let Some(base) = self.base_offset
            && header.last_offset() - base > u64::from(u32::MAX)
        {
            let kind = CorruptKind::Record("offset too far from the segment base");
            return self.stop(kind, Some(info));
        }
        let mut records = self.records.then(Vec::new);
        for record in Records::new(header, bytes.clone()) {
            match record {
                Ok(r) => {
                    if let Some(list) = &mut records {
                        list.push(RecordInfo {
                            offset: r.offset,
                            timestamp: r.timestamp,
                            key: r.key,
                            value: r.value,
                            headers: r.headers,
                        });
                    }
                }
                Err(kind) => return self.stop(kind, Some(info)),
            }
        }
        let block = &bytes[HEADER_BYTES..];
        self.last_uncompressed = if !self.measure || header.codec() == codec::CODEC_NONE {
            block.len() as u64
        } else {
            match codec::decompress(header.codec(), block) {
                Ok(plain) => plain.len() as u64,
                Err(kind) => return self.stop(kind, Some(info)),
            }
        };
        info.records = records;
        self.position += u64::from(header.batch_length);
        self.expected = header.next_offset();
        Ok(Some(info))
    }
}

impl Iterator for SegmentBatches {
    type Item = Result<BatchInfo>;

    fn next(&mut self) -> Option<Result<BatchInfo>> {
        if self.done || self.position >= self.file.len {
            self.done = true;
            return None;
        }
        match self.step() {
            Ok(Some(info)) => Some(Ok(info)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The directory: metadata, lock, files
// ---------------------------------------------------------------------------

/// The files of one segment, as found in its partition's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SegmentFiles {
    /// The segment's base offset, from its file name.
    pub base_offset: u64,
    /// The log file.
    pub log: PathBuf,
    /// The offset index, if present.
    pub index: Option<PathBuf>,
    /// The time index, if present.
    pub time_index: Option<PathBuf>,
}

impl SegmentFiles {
    fn index_path(&self) -> PathBuf {
        sibling(&self.log, self.base_offset, INDEX_SUFFIX)
    }

    fn time_index_path(&self) -> PathBuf {
        sibling(&self.log, self.base_offset, TIME_INDEX_SUFFIX)
    }

    /// The files that exist, log first.
    fn existing(&self) -> Vec<PathBuf> {
        let mut files = vec![self.log.clone()];
        files.extend(self.index.iter().cloned());
        files.extend(self.time_index.iter().cloned());
        files
    }
}

fn sibling(log: &Path, base_offset: u64, suffix: &str) -> PathBuf {
    log.with_file_name(crate::segment::file_name(base_offset, suffix))
}

/// The files of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionFiles {
    /// The partition's number.
    pub partition: u32,
    /// Its directory, `<log dir>/<partition>`.
    pub dir: PathBuf,
    /// Whether the directory exists.
    pub present: bool,
    /// Its segments, by base offset.
    pub segments: Vec<SegmentFiles>,
    /// The checkpoint file, if present.
    pub checkpoint: Option<PathBuf>,
    /// Files the next open deletes: temporary files of an interrupted
    /// rewrite, and index files whose log file is gone.
    pub leftovers: Vec<PathBuf>,
}

/// A log directory opened for offline inspection.
///
/// Holds the directory's lock until dropped, so no [`Log`](crate::Log)
/// (in this process or another) can open the log meanwhile. Use it to walk
/// the files of a log with [`SegmentBatches`]; [`verify`], [`repair`] and
/// [`stats`] open one of their own.
#[derive(Debug)]
pub struct OfflineLog {
    dir: PathBuf,
    partitions: Vec<PartitionFiles>,
    _lock: Box<dyn LockGuard>,
}

impl OfflineLog {
    /// Takes the lock of the log in `dir` and lists its files.
    ///
    /// # Errors
    ///
    /// [`Error::NotALog`] when `dir` holds no log metadata, or metadata of
    /// another format version; [`Error::Corrupt`] when the metadata is
    /// damaged; [`Error::Locked`] when a `Log` or another inspection holds
    /// the directory; [`Error::Io`].
    pub fn open(dir: impl AsRef<Path>) -> Result<OfflineLog> {
        let dir = dir.as_ref();
        let partitions = read_partition_count(dir)?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = crate::log::take_lock(&FsStorage, &lock_path)?;
        let partitions = (0..partitions)
            .map(|id| read_partition_files(dir, id))
            .collect::<Result<_>>()?;
        Ok(OfflineLog {
            dir: dir.to_path_buf(),
            partitions,
            _lock: lock,
        })
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The partitions' files, by partition number.
    pub fn partitions(&self) -> &[PartitionFiles] {
        &self.partitions
    }

    /// Bytes of all segment files.
    fn log_bytes(&self) -> u64 {
        self.partitions
            .iter()
            .flat_map(|p| &p.segments)
            .map(|s| fs::metadata(&s.log).map_or(0, |m| m.len()))
            .sum()
    }
}

/// Reads the partition count from the metadata file, checking it as
/// `Log::open` does.
fn read_partition_count(dir: &Path) -> Result<u32> {
    let meta = fs::metadata(dir).map_err(|e| Error::io(dir, e))?;
    if !meta.is_dir() {
        return Err(Error::NotALog {
            path: dir.to_path_buf(),
            reason: "not a directory".into(),
        });
    }
    let path = dir.join(META_FILE);
    if !path.exists() {
        return Err(Error::NotALog {
            path: dir.to_path_buf(),
            reason: format!("no `{META_FILE}` file"),
        });
    }
    // The same checks, in the same order, as `Log::open`.
    crate::log::read_meta(&FsStorage, &path)
}

fn read_partition_files(dir: &Path, id: u32) -> Result<PartitionFiles> {
    let partition_dir = dir.join(id.to_string());
    let mut files = PartitionFiles {
        partition: id,
        dir: partition_dir.clone(),
        present: false,
        segments: Vec::new(),
        checkpoint: None,
        leftovers: Vec::new(),
    };
    match fs::metadata(&partition_dir) {
        Ok(meta) if meta.is_dir() => files.present = true,
        Ok(_) => {
            return Err(Error::NotALog {
                path: partition_dir,
                reason: "a partition is not a directory".into(),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(Error::io(&partition_dir, e)),
    }
    let names = FsStorage
        .list_dir(&partition_dir)
        .map_err(|e| Error::io(&partition_dir, e))?;
    let mut indexes = Vec::new();
    for name in &names {
        let path = partition_dir.join(name);
        match recovery::classify(name) {
            recovery::Entry::Log(base_offset) => files.segments.push(SegmentFiles {
                base_offset,
                log: path,
                index: None,
                time_index: None,
            }),
            recovery::Entry::Index(base_offset) => indexes.push((base_offset, name, path)),
            recovery::Entry::Leftover => files.leftovers.push(path),
            recovery::Entry::Checkpoint => files.checkpoint = Some(path),
            recovery::Entry::Foreign => {}
        }
    }
    files.segments.sort_by_key(|s| s.base_offset);
    for (base_offset, name, path) in indexes {
        let Ok(at) = files
            .segments
            .binary_search_by_key(&base_offset, |s| s.base_offset)
        else {
            files.leftovers.push(path);
            continue;
        };
        if name.ends_with(TIME_INDEX_SUFFIX) {
            files.segments[at].time_index = Some(path);
        } else {
            files.segments[at].index = Some(path);
        }
    }
    files.leftovers.sort();
    Ok(files)
}

// ---------------------------------------------------------------------------
// Problems
// ---------------------------------------------------------------------------

/// One problem found by [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Problem {
    /// The file (or directory) that has it.
    pub path: PathBuf,
    /// Byte position in that file where it is.
    pub position: u64,
    /// What it is.
    pub kind: ProblemKind,
}

impl Problem {
    /// True when the problem is only in files derived from the segments
    /// (indexes, leftovers of an interrupted rewrite): no record is at
    /// stake, and [`repair`] deletes the file so the next open rebuilds or
    /// forgets it.
    pub fn is_derived(&self) -> bool {
        matches!(
            self.kind,
            ProblemKind::MissingIndex
                | ProblemKind::IndexLength { .. }
                | ProblemKind::EmptyIndex
                | ProblemKind::IndexEntry { .. }
                | ProblemKind::MoreIndexEntries { .. }
                | ProblemKind::Leftover
        )
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at byte {}: {}",
            self.path.display(),
            self.position,
            self.kind
        )
    }
}

/// What a [`Problem`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProblemKind {
    /// A batch is not valid; the rest of its segment could not be checked.
    InvalidBatch {
        /// What is wrong with the batch.
        kind: CorruptKind,
        /// Bytes from the batch to the end of the file, unchecked.
        unchecked_bytes: u64,
        /// Whether the segment is its partition's last.
        last_segment: bool,
        /// Whether `Log::open` would cut it as the torn tail of unsynced
        /// writes. When false, the bytes were synced: `Log::open`, or a read
        /// of them, fails with [`Error::Corrupt`].
        torn_tail: bool,
    },
    /// A segment's base offset (its file name) is below the offset that
    /// follows the previous segment.
    SegmentOffset {
        /// The segment's base offset.
        base_offset: u64,
        /// The smallest base offset that would have been valid.
        expected_at_least: u64,
    },
    /// The checkpoint says more bytes of this segment were synced than the
    /// file holds: `Log::open` fails.
    SyncedBytesMissing {
        /// Bytes the checkpoint records as synced.
        synced_bytes: u64,
        /// Bytes in the file.
        file_bytes: u64,
    },
    /// A partition directory is missing.
    MissingPartition,
    /// A segment's offset or time index is missing.
    MissingIndex,
    /// The partition's checkpoint file is missing.
    MissingCheckpoint,
    /// Neither slot of the checkpoint checks out.
    UnreadableCheckpoint,
    /// An index file's length is not a whole number of entries.
    IndexLength {
        /// The file's length.
        bytes: u64,
        /// Size of one entry.
        entry_bytes: u64,
    },
    /// An index has no entries though its segment holds batches.
    EmptyIndex,
    /// An index entry is inconsistent.
    IndexEntry {
        /// Number of the entry in its file.
        entry: u64,
        /// How.
        issue: IndexIssue,
    },
    /// More bad entries in the same index file, not listed one by one.
    MoreIndexEntries {
        /// How many.
        count: u64,
    },
    /// A file the next open deletes: a temporary file of an interrupted
    /// rewrite, or an index whose log file is gone.
    Leftover,
}

impl ProblemKind {
    /// A stable snake_case name for scripts.
    pub fn code(&self) -> &'static str {
        match self {
            ProblemKind::InvalidBatch { .. } => "invalid_batch",
            ProblemKind::SegmentOffset { .. } => "segment_offset",
            ProblemKind::SyncedBytesMissing { .. } => "synced_bytes_missing",
            ProblemKind::MissingPartition => "missing_partition",
            ProblemKind::MissingIndex => "missing_index",
            ProblemKind::MissingCheckpoint => "missing_checkpoint",
            ProblemKind::UnreadableCheckpoint => "unreadable_checkpoint",
            ProblemKind::IndexLength { .. } => "index_length",
            ProblemKind::EmptyIndex => "empty_index",
            ProblemKind::IndexEntry { .. } => "index_entry",
            ProblemKind::MoreIndexEntries { .. } => "more_index_entries",
            ProblemKind::Leftover => "leftover",
        }
    }
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProblemKind::InvalidBatch {
                kind,
                unchecked_bytes,
                last_segment,
                torn_tail,
            } => {
                write!(
                    f,
                    "invalid batch: {kind}; {unchecked_bytes} bytes from here unchecked"
                )?;
                match (torn_tail, last_segment) {
                    (true, _) => f.write_str(" (torn tail: the next open cuts it)"),
                    (false, true) => f.write_str(" (last segment: `repair` cuts it)"),
                    (false, false) => f.write_str(" (synced data in an earlier segment)"),
                }
            }
            ProblemKind::SegmentOffset {
                base_offset,
                expected_at_least,
            } => write!(
                f,
                "segment base offset {base_offset} is below {expected_at_least}, the end of the previous segment"
            ),
            ProblemKind::SyncedBytesMissing {
                synced_bytes,
                file_bytes,
            } => write!(
                f,
                "the checkpoint records {synced_bytes} synced bytes but the file holds {file_bytes}"
            ),
            ProblemKind::MissingPartition => f.write_str("partition directory is missing"),
            ProblemKind::MissingIndex => f.write_str("index file is missing"),
            ProblemKind::MissingCheckpoint => f.write_str("checkpoint file is missing"),
            ProblemKind::UnreadableCheckpoint => f.write_str("no checkpoint slot checks out"),
            ProblemKind::IndexLength { bytes, entry_bytes } => write!(
                f,
                "index of {bytes} bytes is not a whole number of {entry_bytes}-byte entries"
            ),
            ProblemKind::EmptyIndex => f.write_str("index is empty but its segment is not"),
            ProblemKind::IndexEntry { entry, issue } => write!(f, "index entry {entry}: {issue}"),
            ProblemKind::MoreIndexEntries { count } => {
                write!(f, "{count} more bad entries in this index")
            }
            ProblemKind::Leftover => f.write_str("leftover file (the next open deletes it)"),
        }
    }
}

/// How an index entry is inconsistent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IndexIssue {
    /// Its key (offset, position or timestamp) is not above the previous
    /// entry's.
    NotIncreasing,
    /// The first offset-index entry does not point at the first batch.
    FirstNotAtStart,
    /// It points inside a batch rather than at the start of one.
    NotAtBatchStart,
    /// The batch at its position has another base offset.
    WrongOffset {
        /// The offset the entry names.
        indexed: u64,
        /// The base offset of the batch there.
        actual: u64,
    },
    /// Its timestamp is not the largest one up to and including its batch.
    WrongTimestamp {
        /// The timestamp the entry names.
        indexed: i64,
        /// The batch's largest timestamp (or the largest so far).
        actual: i64,
    },
    /// It points past the segment's data.
    PastEnd,
    /// The last time-index entry of a sealed segment does not hold the
    /// segment's largest timestamp (retention relies on it).
    LastNotMax {
        /// The timestamp of the last entry.
        indexed: i64,
        /// The segment's largest timestamp.
        actual: i64,
    },
}

impl fmt::Display for IndexIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IndexIssue::NotIncreasing => f.write_str("not above the previous entry"),
            IndexIssue::FirstNotAtStart => f.write_str("first entry is not at position 0"),
            IndexIssue::NotAtBatchStart => f.write_str("does not point at the start of a batch"),
            IndexIssue::WrongOffset { indexed, actual } => write!(
                f,
                "names offset {indexed} but the batch there starts at offset {actual}"
            ),
            IndexIssue::WrongTimestamp { indexed, actual } => write!(
                f,
                "names timestamp {indexed} but the largest timestamp there is {actual}"
            ),
            IndexIssue::PastEnd => f.write_str("points past the end of the segment's data"),
            IndexIssue::LastNotMax { indexed, actual } => write!(
                f,
                "last entry names timestamp {indexed}, not the segment's largest, {actual}"
            ),
        }
    }
}

/// Collects the problems of one index file, listing the first few.
struct EntryProblems {
    path: PathBuf,
    entry_bytes: u64,
    listed: Vec<Problem>,
    more: u64,
    first_more: u64,
}

impl EntryProblems {
    fn new(path: &Path, entry_bytes: u64) -> EntryProblems {
        EntryProblems {
            path: path.to_path_buf(),
            entry_bytes,
            listed: Vec::new(),
            more: 0,
            first_more: 0,
        }
    }

    fn push(&mut self, entry: u64, issue: IndexIssue) {
        let position = entry * self.entry_bytes;
        if self.listed.len() < LISTED_INDEX_PROBLEMS_MAX {
            self.listed.push(Problem {
                path: self.path.clone(),
                position,
                kind: ProblemKind::IndexEntry { entry, issue },
            });
        } else {
            if self.more == 0 {
                self.first_more = position;
            }
            self.more += 1;
        }
    }

    fn file_problem(&mut self, kind: ProblemKind) {
        self.listed.push(Problem {
            path: self.path.clone(),
            position: 0,
            kind,
        });
    }

    fn finish(mut self) -> Vec<Problem> {
        if self.more > 0 {
            self.listed.push(Problem {
                path: self.path,
                position: self.first_more,
                kind: ProblemKind::MoreIndexEntries { count: self.more },
            });
        }
        self.listed
    }
}

// ---------------------------------------------------------------------------
// Index checks: the entries of each index walked in step with the batches
// ---------------------------------------------------------------------------

/// Opens an offset index; `None`, with the problem recorded, when its length
/// is not a whole number of entries.
fn open_offset_index(
    path: &Path,
    problems: &mut EntryProblems,
) -> Result<Option<Index<OffsetEntry>>> {
    let index = Index::<OffsetEntry>::open(&FsStorage, path, 0).map_err(|e| Error::io(path, e))?;
    if index.is_none() {
        let bytes = fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
        problems.file_problem(ProblemKind::IndexLength {
            bytes,
            entry_bytes: OFFSET_ENTRY_BYTES,
        });
    }
    Ok(index)
}

/// As [`open_offset_index`], for a time index.
fn open_time_index(path: &Path, problems: &mut EntryProblems) -> Result<Option<Index<TimeEntry>>> {
    let index = Index::<TimeEntry>::open(&FsStorage, path, 0).map_err(|e| Error::io(path, e))?;
    if index.is_none() {
        let bytes = fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
        problems.file_problem(ProblemKind::IndexLength {
            bytes,
            entry_bytes: TIME_ENTRY_BYTES,
        });
    }
    Ok(index)
}

/// A walk through the entries of an index that were written (trailing
/// preallocated slack left out), reporting entries out of order. Shared by
/// the offset and time index checks.
struct IndexWalk<E: Entry> {
    index: Index<E>,
    /// Entries that were written; the rest is preallocated slack.
    used: u64,
    next: u64,
    previous: Option<E>,
    problems: EntryProblems,
}

impl<E: Entry> IndexWalk<E> {
    /// With `slack`, trailing entries for which `is_slack` holds are
    /// taken as preallocated space, not entries.
    fn new(
        index: Index<E>,
        problems: EntryProblems,
        slack: bool,
        is_slack: impl Fn(&E) -> bool,
    ) -> Result<IndexWalk<E>> {
        let mut used = index.len();
        while slack && used > 0 {
            let entry = index
                .get(used - 1)
                .map_err(|e| Error::io(&problems.path, e))?;
            if !is_slack(&entry) {
                break;
            }
            used -= 1;
        }
        Ok(IndexWalk {
            index,
            used,
            next: 0,
            previous: None,
            problems,
        })
    }

    fn peek(&self) -> Result<Option<E>> {
        if self.next >= self.used {
            return Ok(None);
        }
        self.index
            .get(self.next)
            .map(Some)
            .map_err(|e| Error::io(&self.problems.path, e))
    }

    /// Consumes the next entry; false (reported) when `follows` says it
    /// does not come after the previous one.
    fn take(&mut self, entry: E, follows: impl Fn(&E, &E) -> bool) -> bool {
        let n = self.next;
        self.next += 1;
        if let Some(previous) = self.previous
            && !follows(&previous, &entry)
        {
            self.problems.push(n, IndexIssue::NotIncreasing);
            return false;
        }
        self.previous = Some(entry);
        true
    }
}

/// Checks an offset index against the batches of its segment, which arrive
/// in order of position: each entry must name a batch start and that
/// batch's base offset. Memory use does not depend on the index's size.
struct OffsetIndexCheck {
    walk: IndexWalk<OffsetEntry>,
    base_offset: u64,
}

impl OffsetIndexCheck {
    fn new(
        index: Index<OffsetEntry>,
        problems: EntryProblems,
        base_offset: u64,
        slack: bool,
        segment_bytes: u64,
    ) -> Result<OffsetIndexCheck> {
        let mut walk = IndexWalk::new(index, problems, slack, |e: &OffsetEntry| {
            e.relative_offset == 0 && e.position == 0
        })?;
        // The first entry of a segment that holds batches is (0, 0), which
        // looks like slack.
        if slack && walk.used == 0 && walk.index.len() > 0 && segment_bytes > 0 {
            walk.used = 1;
        }
        Ok(OffsetIndexCheck { walk, base_offset })
    }

    fn peek(&self) -> Result<Option<OffsetEntry>> {
        self.walk.peek()
    }

    /// Consumes the next entry; false (reported) when it is out of order.
    fn take(&mut self, entry: OffsetEntry) -> bool {
        let first = self.walk.previous.is_none();
        let n = self.walk.next;
        if !self.walk.take(entry, |p, e| {
            e.relative_offset > p.relative_offset && e.position > p.position
        }) {
            return false;
        }
        if first && entry.position != 0 {
            self.walk.problems.push(n, IndexIssue::FirstNotAtStart);
        }
        true
    }

    fn batch(&mut self, position: u64, base_offset: u64) -> Result<()> {
        while let Some(entry) = self.peek()? {
            let at = u64::from(entry.position);
            if at > position {
                break;
            }
            let n = self.walk.next;
            if !self.take(entry) {
                continue;
            }
            let indexed = self.base_offset + u64::from(entry.relative_offset);
            if at < position {
                self.walk.problems.push(n, IndexIssue::NotAtBatchStart);
            } else if indexed != base_offset {
                self.walk.problems.push(
                    n,
                    IndexIssue::WrongOffset {
                        indexed,
                        actual: base_offset,
                    },
                );
            }
        }
        Ok(())
    }

    /// Entries left after the last valid batch. Past a damaged batch they
    /// cannot be checked; the damage is reported on its own.
    fn finish(
        mut self,
        valid_bytes: u64,
        damaged: bool,
        has_batches: bool,
    ) -> Result<Vec<Problem>> {
        while let Some(entry) = self.peek()? {
            let at = u64::from(entry.position);
            let n = self.walk.next;
            if damaged && at >= valid_bytes {
                self.walk.next += 1;
                continue;
            }
            if !self.take(entry) {
                continue;
            }
            let issue = if at >= valid_bytes {
                IndexIssue::PastEnd
            } else {
                IndexIssue::NotAtBatchStart
            };
            self.walk.problems.push(n, issue);
        }
        if has_batches && self.walk.used == 0 {
            self.walk.problems.file_problem(ProblemKind::EmptyIndex);
        }
        Ok(self.walk.problems.finish())
    }
}

/// Checks a time index against the batches of its segment, in offset
/// order: each entry must name a batch's base offset and the largest
/// timestamp up to and including that batch, which is that batch's own.
struct TimeIndexCheck {
    walk: IndexWalk<TimeEntry>,
    base_offset: u64,
}

impl TimeIndexCheck {
    fn new(
        index: Index<TimeEntry>,
        problems: EntryProblems,
        base_offset: u64,
        slack: bool,
    ) -> Result<TimeIndexCheck> {
        let walk = IndexWalk::new(index, problems, slack, |e: &TimeEntry| {
            e.timestamp == 0 && e.relative_offset == 0
        })?;
        Ok(TimeIndexCheck { walk, base_offset })
    }

    fn peek(&self) -> Result<Option<TimeEntry>> {
        self.walk.peek()
    }

    fn take(&mut self, entry: TimeEntry) -> bool {
        self.walk.take(entry, |p, e| {
            e.timestamp > p.timestamp && e.relative_offset >= p.relative_offset
        })
    }

    fn batch(&mut self, base_offset: u64, max_timestamp: i64, running_max: i64) -> Result<()> {
        while let Some(entry) = self.peek()? {
            let offset = self.base_offset + u64::from(entry.relative_offset);
            if offset > base_offset {
                break;
            }
            let n = self.walk.next;
            if !self.take(entry) {
                continue;
            }
            let issue = if offset < base_offset {
                Some(IndexIssue::NotAtBatchStart)
            } else if entry.timestamp != max_timestamp {
                Some(IndexIssue::WrongTimestamp {
                    indexed: entry.timestamp,
                    actual: max_timestamp,
                })
            } else if entry.timestamp != running_max {
                Some(IndexIssue::WrongTimestamp {
                    indexed: entry.timestamp,
                    actual: running_max,
                })
            } else {
                None
            };
            if let Some(issue) = issue {
                self.walk.problems.push(n, issue);
            }
        }
        Ok(())
    }

    /// `sealed`: the segment was rolled or closed, so its last entry holds
    /// its largest timestamp.
    fn finish(
        mut self,
        next_offset: u64,
        damaged: bool,
        sealed: bool,
        segment_max: Option<i64>,
    ) -> Result<Vec<Problem>> {
        while let Some(entry) = self.peek()? {
            let n = self.walk.next;
            if damaged {
                self.walk.next += 1;
                continue;
            }
            if !self.take(entry) {
                continue;
            }
            let offset = self.base_offset + u64::from(entry.relative_offset);
            let issue = if offset >= next_offset {
                IndexIssue::PastEnd
            } else {
                IndexIssue::NotAtBatchStart
            };
            self.walk.problems.push(n, issue);
        }
        if let Some(max) = segment_max
            && !damaged
        {
            if self.walk.used == 0 && (sealed || self.walk.index.len() == 0) {
                self.walk.problems.file_problem(ProblemKind::EmptyIndex);
            } else if let Some(last) = self.walk.previous
                && sealed
                && last.timestamp != max
            {
                self.walk.problems.push(
                    self.walk.used - 1,
                    IndexIssue::LastNotMax {
                        indexed: last.timestamp,
                        actual: max,
                    },
                );
            }
        }
        Ok(self.walk.problems.finish())
    }
}

// ---------------------------------------------------------------------------
// Scanning a partition: the common core of verify, stats and repair
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct ScanOptions {
    check_indexes: bool,
    /// Decompress batches to measure their uncompressed size.
    measure: bool,
}

/// What a scan learned about one segment.
#[derive(Debug)]
struct SegmentScan {
    files: SegmentFiles,
    file_bytes: u64,
    invalid: Option<InvalidBatch>,
    /// The smallest valid base offset, when the segment's is below it.
    misplaced: Option<u64>,
    /// Synced bytes the checkpoint records, when more than the file holds.
    synced_missing: Option<u64>,
    /// Index files with problems.
    bad_indexes: Vec<PathBuf>,
    problems: Vec<Problem>,
    stats: SegmentStats,
}

/// What a scan learned about one partition.
#[derive(Debug)]
struct PartitionScan {
    files: PartitionFiles,
    /// Problems not tied to one segment.
    problems: Vec<Problem>,
    segments: Vec<SegmentScan>,
    state: Option<State>,
    start_offset: u64,
    end_offset: u64,
}

impl PartitionScan {
    fn all_problems(&self) -> impl Iterator<Item = &Problem> {
        self.problems
            .iter()
            .chain(self.segments.iter().flat_map(|s| &s.problems))
    }
}

fn scan_partition(
    files: &PartitionFiles,
    options: ScanOptions,
    tick: &mut dyn FnMut(u64),
) -> Result<PartitionScan> {
    let mut scan = PartitionScan {
        files: files.clone(),
        problems: Vec::new(),
        segments: Vec::new(),
        state: None,
        start_offset: 0,
        end_offset: 0,
    };
    if !files.present {
        scan.problems.push(Problem {
            path: files.dir.clone(),
            position: 0,
            kind: ProblemKind::MissingPartition,
        });
        return Ok(scan);
    }
    for leftover in &files.leftovers {
        scan.problems.push(Problem {
            path: leftover.clone(),
            position: 0,
            kind: ProblemKind::Leftover,
        });
    }
    let checkpoint_path = files.dir.join(checkpoint::FILE_NAME);
    if files.checkpoint.is_some() {
        let (_, state) = Checkpoint::open(&FsStorage, &files.dir)?;
        if state.is_none() {
            scan.problems.push(Problem {
                path: checkpoint_path,
                position: 0,
                kind: ProblemKind::UnreadableCheckpoint,
            });
        }
        scan.state = state;
    } else {
        scan.problems.push(Problem {
            path: checkpoint_path,
            position: 0,
            kind: ProblemKind::MissingCheckpoint,
        });
    }
    let point = scan.state.map(|s| RecoveryPoint {
        clean: s.clean,
        segment: s.segment,
        position: s.position,
    });
    let mut previous_next: Option<u64> = None;
    for (i, segment) in files.segments.iter().enumerate() {
        let is_last = i + 1 == files.segments.len();
        let result = scan_segment(segment, is_last, previous_next, point, options, tick)?;
        previous_next = Some(result.1);
        scan.segments.push(result.0);
    }
    let first_base = files.segments.first().map(|s| s.base_offset);
    scan.end_offset = match previous_next {
        Some(next) => next,
        None => scan
            .state
            .map_or(0, |s| s.log_start_offset.max(s.next_offset)),
    };
    let first_base = first_base.unwrap_or(scan.end_offset);
    scan.start_offset = scan.state.map_or(first_base, |s| {
        s.log_start_offset.max(first_base).min(scan.end_offset)
    });
    Ok(scan)
}

/// Scans one segment; returns what it found and the offset that follows its
/// valid batches.
fn scan_segment(
    files: &SegmentFiles,
    is_last: bool,
    previous_next: Option<u64>,
    point: Option<RecoveryPoint>,
    options: ScanOptions,
    tick: &mut dyn FnMut(u64),
) -> Result<(SegmentScan, u64)> {
    let base = files.base_offset;
    let min_offset = previous_next.map_or(base, |p| p.max(base));
    let mut batches = SegmentBatches::for_segment(&files.log, Some(base), min_offset)?;
    batches.measure = options.measure;
    let file_bytes = batches.file_bytes();
    let plan = recovery::plan_segment(base, is_last, file_bytes, point);
    let mut scan = SegmentScan {
        files: files.clone(),
        file_bytes,
        invalid: None,
        misplaced: None,
        synced_missing: None,
        bad_indexes: Vec::new(),
        problems: Vec::new(),
        stats: SegmentStats {
            base_offset: base,
            path: files.log.clone(),
            bytes: file_bytes,
            valid_bytes: 0,
            batches: 0,
            records: 0,
            first_offset: None,
            last_offset: None,
            max_timestamp: None,
            stored_record_bytes: 0,
            uncompressed_record_bytes: 0,
        },
    };
    if let Some(previous) = previous_next
        && base < previous
    {
        scan.misplaced = Some(previous);
        scan.problems.push(Problem {
            path: files.log.clone(),
            position: 0,
            kind: ProblemKind::SegmentOffset {
                base_offset: base,
                expected_at_least: previous,
            },
        });
    }
    if let SegmentPlan::Scan {
        synced_position, ..
    } = plan
        && !recovery::synced_bytes_present(file_bytes, synced_position)
    {
        scan.synced_missing = Some(synced_position);
        scan.problems.push(Problem {
            path: files.log.clone(),
            position: file_bytes,
            kind: ProblemKind::SyncedBytesMissing {
                synced_bytes: synced_position,
                file_bytes,
            },
        });
    }

    // Indexes of a segment still being written are preallocated; only a
    // rolled or cleanly closed one is trimmed to its entries.
    let sealed = !is_last || plan == SegmentPlan::TrustClean;
    let mut offset_check = None;
    let mut time_check = None;
    if options.check_indexes {
        let mut index_problems = Vec::new();
        match &files.index {
            None => index_problems.push(Problem {
                path: files.index_path(),
                position: 0,
                kind: ProblemKind::MissingIndex,
            }),
            Some(path) => {
                let mut problems = EntryProblems::new(path, OFFSET_ENTRY_BYTES);
                match open_offset_index(path, &mut problems)? {
                    Some(index) => {
                        offset_check = Some(OffsetIndexCheck::new(
                            index, problems, base, !sealed, file_bytes,
                        )?);
                    }
                    None => {
                        scan.bad_indexes.push(path.clone());
                        index_problems.extend(problems.finish());
                    }
                }
            }
        }
        match &files.time_index {
            None => index_problems.push(Problem {
                path: files.time_index_path(),
                position: 0,
                kind: ProblemKind::MissingIndex,
            }),
            Some(path) => {
                let mut problems = EntryProblems::new(path, TIME_ENTRY_BYTES);
                match open_time_index(path, &mut problems)? {
                    Some(index) => {
                        time_check = Some(TimeIndexCheck::new(index, problems, base, !sealed)?);
                    }
                    None => {
                        scan.bad_indexes.push(path.clone());
                        index_problems.extend(problems.finish());
                    }
                }
            }
        }
        scan.problems.extend(index_problems);
    }

    let mut reported = 0u64;
    let mut running_max = i64::MIN;
    while let Some(info) = batches.next() {
        let info = info?;
        let stats = &mut scan.stats;
        stats.batches += 1;
        stats.records += u64::from(info.record_count);
        stats.first_offset.get_or_insert(info.base_offset);
        stats.last_offset = Some(info.last_offset);
        running_max = running_max.max(info.max_timestamp);
        stats.max_timestamp = Some(running_max);
        stats.stored_record_bytes += u64::from(info.batch_length) - HEADER_BYTES as u64;
        stats.uncompressed_record_bytes += batches.last_uncompressed;
        if let Some(check) = &mut offset_check {
            check.batch(info.position, info.base_offset)?;
        }
        if let Some(check) = &mut time_check {
            check.batch(info.base_offset, info.max_timestamp, running_max)?;
        }
        let done = batches.valid_bytes();
        if done - reported >= PROGRESS_STEP_BYTES {
            tick(done - reported);
            reported = done;
        }
    }
    tick(file_bytes - reported);
    let valid_bytes = batches.valid_bytes();
    scan.stats.valid_bytes = valid_bytes;
    scan.invalid = batches.invalid().cloned();
    if let Some(invalid) = &scan.invalid {
        let torn_tail = match plan {
            SegmentPlan::Scan {
                synced_position,
                is_last,
            } => {
                recovery::invalid_batch(is_last, invalid.position, synced_position)
                    == BatchDecision::TruncateTail
            }
            SegmentPlan::TrustClean | SegmentPlan::TrustSynced => false,
        };
        // Listed before the index problems it may explain.
        let at = scan.problems.len() - scan.problems.iter().filter(|p| p.is_derived()).count();
        scan.problems.insert(
            at,
            Problem {
                path: files.log.clone(),
                position: invalid.position,
                kind: ProblemKind::InvalidBatch {
                    kind: invalid.kind.clone(),
                    unchecked_bytes: file_bytes - invalid.position,
                    last_segment: is_last,
                    torn_tail,
                },
            },
        );
    }
    let damaged = scan.invalid.is_some();
    let next_offset = batches.next_offset();
    if let Some(check) = offset_check {
        let path = check.walk.problems.path.clone();
        let problems = check.finish(valid_bytes, damaged, scan.stats.batches > 0)?;
        if !problems.is_empty() {
            scan.bad_indexes.push(path);
        }
        scan.problems.extend(problems);
    }
    if let Some(check) = time_check {
        let path = check.walk.problems.path.clone();
        let problems = check.finish(next_offset, damaged, sealed, scan.stats.max_timestamp)?;
        if !problems.is_empty() {
            scan.bad_indexes.push(path);
        }
        scan.problems.extend(problems);
    }
    Ok((scan, next_offset))
}

// ---------------------------------------------------------------------------
// verify
// ---------------------------------------------------------------------------

/// How far [`verify`] has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// The partition being verified.
    pub partition: u32,
    /// Number of partitions.
    pub partitions: u32,
    /// Bytes of segment files verified so far.
    pub bytes_done: u64,
    /// Bytes of all segment files.
    pub bytes_total: u64,
}

/// Counts for one partition, from [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionSummary {
    /// The partition's number.
    pub partition: u32,
    /// Number of segments.
    pub segments: u64,
    /// Valid batches.
    pub batches: u64,
    /// Records in valid batches.
    pub records: u64,
    /// Bytes of valid batches.
    pub bytes: u64,
    /// The first offset a reader can read, as `Log::open` would compute it.
    pub start_offset: u64,
    /// The offset after the last valid batch.
    pub end_offset: u64,
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// The log's directory.
    pub dir: PathBuf,
    /// Counts per partition.
    pub partitions: Vec<PartitionSummary>,
    /// Every problem found, partition by partition, in file order.
    pub problems: Vec<Problem>,
    /// Segments checked.
    pub segments: u64,
    /// Valid batches.
    pub batches: u64,
    /// Records in valid batches.
    pub records: u64,
    /// Bytes of valid batches.
    pub bytes: u64,
}

impl VerifyReport {
    /// True when no problem was found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks every file of the log in `dir`, holding its lock: every batch
/// (checksum, bounds, records, offsets increasing within and across
/// segments, none below its segment's base offset), every index entry
/// against the batches, the checkpoint against the segments, and reports
/// every problem with its file and byte position. Changes nothing.
///
/// `progress` is called as the scan advances, at least every MiB.
///
/// # Errors
///
/// Those of [`OfflineLog::open`], and [`Error::Io`]. Damage is not an
/// error: it is reported in [`VerifyReport::problems`].
pub fn verify(dir: impl AsRef<Path>, progress: impl FnMut(Progress)) -> Result<VerifyReport> {
    OfflineLog::open(dir)?.verify(progress)
}

impl OfflineLog {
    /// As [`verify`], on this locked log.
    ///
    /// # Errors
    ///
    /// [`Error::Io`].
    pub fn verify(&self, mut progress: impl FnMut(Progress)) -> Result<VerifyReport> {
        let partitions = u32::try_from(self.partitions.len()).expect("counted from a u32");
        let bytes_total = self.log_bytes();
        let mut bytes_done = 0u64;
        let mut report = VerifyReport {
            dir: self.dir.clone(),
            partitions: Vec::new(),
            problems: Vec::new(),
            segments: 0,
            batches: 0,
            records: 0,
            bytes: 0,
        };
        progress(Progress {
            partition: 0,
            partitions,
            bytes_done,
            bytes_total,
        });
        let options = ScanOptions {
            check_indexes: true,
            measure: false,
        };
        for files in &self.partitions {
            let partition = files.partition;
            let mut tick = |bytes: u64| {
                bytes_done = (bytes_done + bytes).min(bytes_total);
                progress(Progress {
                    partition,
                    partitions,
                    bytes_done,
                    bytes_total,
                });
            };
            let scan = scan_partition(files, options, &mut tick)?;
            let summary = PartitionSummary {
                partition,
                segments: scan.segments.len() as u64,
                batches: scan.segments.iter().map(|s| s.stats.batches).sum(),
                records: scan.segments.iter().map(|s| s.stats.records).sum(),
                bytes: scan.segments.iter().map(|s| s.stats.valid_bytes).sum(),
                start_offset: scan.start_offset,
                end_offset: scan.end_offset,
            };
            report.segments += summary.segments;
            report.batches += summary.batches;
            report.records += summary.records;
            report.bytes += summary.bytes;
            report.partitions.push(summary);
            report.problems.extend(scan.all_problems().cloned());
        }
        Ok(report)
    }

    /// As [`stats`], on this locked log.
    ///
    /// # Errors
    ///
    /// [`Error::Io`].
    pub fn stats(&self) -> Result<LogStats> {
        let options = ScanOptions {
            check_indexes: false,
            measure: true,
        };
        let mut partitions = Vec::with_capacity(self.partitions.len());
        for files in &self.partitions {
            let scan = scan_partition(files, options, &mut |_| {})?;
            let segments: Vec<SegmentStats> = scan.segments.into_iter().map(|s| s.stats).collect();
            partitions.push(PartitionStats {
                partition: files.partition,
                start_offset: scan.start_offset,
                end_offset: scan.end_offset,
                bytes: segments.iter().map(|s| s.bytes).sum(),
                batches: segments.iter().map(|s| s.batches).sum(),
                records: segments.iter().map(|s| s.records).sum(),
                stored_record_bytes: segments.iter().map(|s| s.stored_record_bytes).sum(),
                uncompressed_record_bytes: segments
                    .iter()
                    .map(|s| s.uncompressed_record_bytes)
                    .sum(),
                segments,
            });
        }
        Ok(LogStats {
            dir: self.dir.clone(),
            partitions,
        })
    }
}

// ---------------------------------------------------------------------------
// stats
// ---------------------------------------------------------------------------

/// Figures for one segment, from [`stats`]. Only valid batches count.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SegmentStats {
    /// The segment's base offset.
    pub base_offset: u64,
    /// Its log file.
    pub path: PathBuf,
    /// Length of the log file.
    pub bytes: u64,
    /// Bytes of valid batches from the start of the file; below `bytes`
    /// when the file holds an invalid batch.
    pub valid_bytes: u64,
    /// Valid batches.
    pub batches: u64,
    /// Records in them.
    pub records: u64,
    /// Offset of the first record, if any.
    pub first_offset: Option<u64>,
    /// Offset of the last record, if any.
    pub last_offset: Option<u64>,
    /// Largest record timestamp, if any.
    pub max_timestamp: Option<i64>,
    /// Bytes of records blocks as stored (batch headers excluded).
    pub stored_record_bytes: u64,
    /// Bytes of the same blocks once decompressed.
    pub uncompressed_record_bytes: u64,
}

/// Figures for one partition, from [`stats`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionStats {
    /// The partition's number.
    pub partition: u32,
    /// Its segments, by base offset.
    pub segments: Vec<SegmentStats>,
    /// The first offset a reader can read, as `Log::open` would compute it.
    pub start_offset: u64,
    /// The offset after the last valid batch: the next offset to assign.
    pub end_offset: u64,
    /// Bytes of all segment files.
    pub bytes: u64,
    /// Valid batches.
    pub batches: u64,
    /// Records in them.
    pub records: u64,
    /// Bytes of records blocks as stored.
    pub stored_record_bytes: u64,
    /// Bytes of the same blocks once decompressed.
    pub uncompressed_record_bytes: u64,
}

impl PartitionStats {
    /// Uncompressed record bytes over stored record bytes: 1.0 when nothing
    /// is compressed (or nothing is stored).
    pub fn compression_ratio(&self) -> f64 {
        ratio(self.uncompressed_record_bytes, self.stored_record_bytes)
    }
}

fn ratio(uncompressed: u64, stored: u64) -> f64 {
    if stored == 0 {
        1.0
    } else {
        uncompressed as f64 / stored as f64
    }
}

/// Figures for a whole log, from [`stats`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogStats {
    /// The log's directory.
    pub dir: PathBuf,
    /// Per partition.
    pub partitions: Vec<PartitionStats>,
}

impl LogStats {
    /// Bytes of all segment files.
    pub fn bytes(&self) -> u64 {
        self.partitions.iter().map(|p| p.bytes).sum()
    }

    /// Records in valid batches.
    pub fn records(&self) -> u64 {
        self.partitions.iter().map(|p| p.records).sum()
    }

    /// Compression ratio over the whole log (see
    /// [`PartitionStats::compression_ratio`]).
    pub fn compression_ratio(&self) -> f64 {
        ratio(
            self.partitions
                .iter()
                .map(|p| p.uncompressed_record_bytes)
                .sum(),
            self.partitions.iter().map(|p| p.stored_record_bytes).sum(),
        )
    }
}

/// Segments, offsets, sizes, record counts and compression of every
/// partition of the log in `dir`, holding its lock. Every batch is read and
/// checked; a segment's figures stop at its first invalid batch (use
/// [`verify`] to learn about it).
///
/// # Errors
///
/// Those of [`OfflineLog::open`], and [`Error::Io`].
pub fn stats(dir: impl AsRef<Path>) -> Result<LogStats> {
    OfflineLog::open(dir)?.stats()
}

// ---------------------------------------------------------------------------
// repair
// ---------------------------------------------------------------------------

/// How far [`repair_with_mode`] may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RepairMode {
    /// Cut each partition's last segment at its first invalid batch: the
    /// one place where a crash leaves damage (a torn tail). Damage in an
    /// earlier segment is reported and left in place.
    #[default]
    LastSegmentTail,
    /// Truncate each partition at its first invalid batch wherever it is,
    /// deleting every later segment. This keeps the longest valid prefix of
    /// the partition and drops everything after it, valid records
    /// included: use it when losing the end of a partition is better than
    /// not opening it.
    TruncateAtFirstInvalid,
}

/// Where a partition was cut, and what went with it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Cut {
    /// The segment file where the partition now ends.
    pub path: PathBuf,
    /// Byte position of the cut in it: the first byte removed.
    pub position: u64,
    /// What was wrong there.
    pub reason: CorruptKind,
    /// Bytes removed, deleted segments included.
    pub bytes_removed: u64,
    /// Batches removed whose headers could still be read (the damaged
    /// batch included when its header decodes).
    pub batches_removed: u64,
    /// Records in those batches, as their headers count them.
    pub records_removed: u64,
    /// First and last offsets named by those headers.
    pub offsets_removed: Option<(u64, u64)>,
    /// Removed bytes past the last header that could be read.
    pub unreadable_bytes: u64,
    /// Base offsets of the segments deleted whole.
    pub segments_deleted: Vec<u64>,
}

/// What [`repair`] did to one partition (or, in a dry run, would do).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionRepair {
    /// The partition's number.
    pub partition: u32,
    /// The cut, if data was removed.
    pub cut: Option<Cut>,
    /// Files deleted: segments removed whole, indexes to be rebuilt at the
    /// next open, leftovers.
    pub deleted_files: Vec<PathBuf>,
    /// Whether the checkpoint was rewritten so the next open scans the new
    /// end of the partition.
    pub checkpoint_rewritten: bool,
}

/// What [`repair`] did (or, in a dry run, would do).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RepairReport {
    /// The log's directory.
    pub dir: PathBuf,
    /// The mode it ran in.
    pub mode: RepairMode,
    /// True when nothing was changed on disk.
    pub dry_run: bool,
    /// The partitions that were changed.
    pub partitions: Vec<PartitionRepair>,
    /// Damage left in place (in [`RepairMode::LastSegmentTail`], damage
    /// outside the last segment): the log may still refuse to open.
    pub unrepaired: Vec<Problem>,
}

impl RepairReport {
    /// True when the repair changed (or would change) something.
    pub fn changed(&self) -> bool {
        !self.partitions.is_empty()
    }

    /// True when no damage is left in place.
    pub fn is_complete(&self) -> bool {
        self.unrepaired.is_empty()
    }
}

/// Repairs the log in `dir` in [`RepairMode::LastSegmentTail`], holding its
/// lock; see [`repair_with_mode`].
///
/// # Errors
///
/// As [`repair_with_mode`].
pub fn repair(dir: impl AsRef<Path>, dry_run: bool) -> Result<RepairReport> {
    repair_with_mode(dir, RepairMode::LastSegmentTail, dry_run)
}

/// Repairs the log in `dir`, holding its lock, so that the next
/// `Log::open` succeeds with the valid data:
///
/// - cuts a partition at its first invalid batch (only in the last segment
///   in [`RepairMode::LastSegmentTail`]; anywhere, deleting the later
///   segments, in [`RepairMode::TruncateAtFirstInvalid`]);
/// - deletes the index files of the cut segment and every index file that
///   does not check out, so the next open rebuilds them, and leftovers of
///   an interrupted rewrite;
/// - rewrites the checkpoint when it would make the next open fail or
///   trust bytes that are gone (or when it is missing or unreadable).
///
/// The report says exactly what was removed. With `dry_run` nothing is
/// changed and the report says what would be. Changes are synced (files,
/// then their directory) before this returns.
///
/// # Errors
///
/// Those of [`OfflineLog::open`], and [`Error::Io`].
pub fn repair_with_mode(
    dir: impl AsRef<Path>,
    mode: RepairMode,
    dry_run: bool,
) -> Result<RepairReport> {
    let log = OfflineLog::open(dir)?;
    let mut report = RepairReport {
        dir: log.dir.clone(),
        mode,
        dry_run,
        partitions: Vec::new(),
        unrepaired: Vec::new(),
    };
    let options = ScanOptions {
        check_indexes: true,
        measure: false,
    };
    for files in &log.partitions {
        let scan = scan_partition(files, options, &mut |_| {})?;
        let plan = plan_repair(&scan, mode)?;
        report.unrepaired.extend(plan.unrepaired.iter().cloned());
        if plan.is_empty() {
            continue;
        }
        if !dry_run {
            apply_repair(&scan, &plan)?;
        }
        report.partitions.push(PartitionRepair {
            partition: files.partition,
            cut: plan.cut,
            deleted_files: plan.deleted_files,
            checkpoint_rewritten: plan.new_state.is_some(),
        });
    }
    Ok(report)
}

/// What to do to one partition.
#[derive(Debug, Default)]
struct RepairPlan {
    cut: Option<Cut>,
    /// Segment to truncate, by number, and the length to keep.
    truncate: Option<(usize, u64)>,
    /// Segments from this number on are deleted whole.
    delete_from: Option<usize>,
    /// Every file to delete, in order.
    deleted_files: Vec<PathBuf>,
    new_state: Option<State>,
    unrepaired: Vec<Problem>,
}

impl RepairPlan {
    fn is_empty(&self) -> bool {
        self.cut.is_none() && self.deleted_files.is_empty() && self.new_state.is_none()
    }
}

fn plan_repair(scan: &PartitionScan, mode: RepairMode) -> Result<RepairPlan> {
    let mut plan = RepairPlan::default();
    let segments = &scan.segments;
    if !scan.files.present || segments.is_empty() {
        plan.unrepaired = scan
            .all_problems()
            .filter(|p| !p.is_derived())
            .cloned()
            .collect();
        return Ok(plan);
    }
    let last = segments.len() - 1;
    // The first damage the mode repairs: (segment, position, reason, whether
    // the segment itself goes).
    let damage = |s: &SegmentScan| -> Option<(u64, CorruptKind, bool)> {
        if let Some(expected) = s.misplaced {
            let kind = CorruptKind::OffsetOrder {
                expected_at_least: expected,
                found: s.files.base_offset,
            };
            return Some((0, kind, true));
        }
        if let Some(invalid) = &s.invalid {
            return Some((invalid.position, invalid.kind.clone(), false));
        }
        s.synced_missing.map(|synced| {
            let kind = CorruptKind::Truncated {
                needed: synced,
                available: s.file_bytes,
            };
            (s.file_bytes, kind, false)
        })
    };
    let cut_at = match mode {
        RepairMode::LastSegmentTail => {
            let s = &segments[last];
            match &s.invalid {
                Some(invalid) if s.misplaced.is_none() => {
                    Some((last, invalid.position, invalid.kind.clone(), false))
                }
                _ => None,
            }
        }
        RepairMode::TruncateAtFirstInvalid => segments
            .iter()
            .enumerate()
            .find_map(|(i, s)| damage(s).map(|(p, k, whole)| (i, p, k, whole)))
            // Missing synced bytes in the last segment need no cut: the
            // rewritten checkpoint covers them.
            .filter(|&(i, position, _, whole)| {
                whole || i < last || position < segments[i].file_bytes
            }),
    };

    let mut new_last = last;
    if let Some((at, position, reason, whole)) = &cut_at {
        let (at, position, whole) = (*at, *position, *whole);
        // Only a segment after the first can be misplaced, so `at > 0` when
        // the segment goes whole.
        let delete_from = if whole { at } else { at + 1 };
        new_last = if whole { at.saturating_sub(1) } else { at };
        let mut cut = Cut {
            path: segments[at].files.log.clone(),
            position,
            reason: reason.clone(),
            bytes_removed: 0,
            batches_removed: 0,
            records_removed: 0,
            offsets_removed: None,
            unreadable_bytes: 0,
            segments_deleted: Vec::new(),
        };
        if !whole && position < segments[at].file_bytes {
            count_removed(&segments[at].files.log, position, &mut cut)?;
            plan.truncate = Some((at, position));
            for path in [&segments[at].files.index, &segments[at].files.time_index]
                .into_iter()
                .flatten()
            {
                plan.deleted_files.push(path.clone());
            }
        }
        // Later segments go last first, so that a crash leaves a prefix.
        for s in segments[delete_from..].iter().rev() {
            count_removed(&s.files.log, 0, &mut cut)?;
            cut.segments_deleted.push(s.files.base_offset);
            plan.deleted_files.extend(s.files.existing());
        }
        cut.segments_deleted.reverse();
        if delete_from <= last {
            plan.delete_from = Some(delete_from);
        }
        plan.cut = Some(cut);
    }
    let kept = plan.delete_from.unwrap_or(segments.len());
    for s in &segments[..kept] {
        for path in &s.bad_indexes {
            if !plan.deleted_files.contains(path) {
                plan.deleted_files.push(path.clone());
            }
        }
    }
    plan.deleted_files
        .extend(scan.files.leftovers.iter().cloned());

    // The checkpoint must neither name bytes that are gone as synced nor
    // vouch for a clean shutdown of files that changed.
    let new_last_bytes = match plan.truncate {
        Some((at, position)) if at == new_last => position,
        _ => segments[new_last].file_bytes,
    };
    let new_last_base = segments[new_last].files.base_offset;
    let removed = plan.cut.is_some();
    plan.new_state = match scan.state {
        None => Some(State {
            clean: false,
            log_start_offset: segments[0].files.base_offset,
            segment: new_last_base,
            position: 0,
            next_offset: new_last_base,
        }),
        Some(old) => {
            let (segment, position) = if old.segment > new_last_base && plan.delete_from.is_some() {
                (new_last_base, 0)
            } else if old.segment == new_last_base {
                (new_last_base, old.position.min(new_last_bytes))
            } else {
                (old.segment, old.position)
            };
            let moved = (segment, position) != (old.segment, old.position);
            (moved || (old.clean && removed)).then_some(State {
                clean: false,
                segment,
                position,
                ..old
            })
        }
    };

    // Damage that stays: everything the plan does not remove or cover.
    let fixed_from = cut_at.as_ref().map_or(segments.len(), |&(at, ..)| at);
    plan.unrepaired.extend(
        scan.problems
            .iter()
            .filter(|p| {
                !p.is_derived()
                    && !matches!(
                        p.kind,
                        ProblemKind::MissingCheckpoint | ProblemKind::UnreadableCheckpoint
                    )
            })
            .cloned(),
    );
    for (i, s) in segments.iter().enumerate() {
        for p in s.problems.iter().filter(|p| !p.is_derived()) {
            let fixed = match p.kind {
                ProblemKind::InvalidBatch { .. } => i >= fixed_from,
                ProblemKind::SegmentOffset { .. } => {
                    i >= fixed_from && mode == RepairMode::TruncateAtFirstInvalid
                }
                // The rewritten checkpoint no longer claims them, and in the
                // last segment that loses nothing more.
                ProblemKind::SyncedBytesMissing { .. } => {
                    i == new_last || plan.delete_from.is_some_and(|d| i >= d)
                }
                _ => false,
            };
            if !fixed {
                plan.unrepaired.push(p.clone());
            }
        }
    }
    Ok(plan)
}

/// Adds the batches between `from` and the end of a file that is being
/// removed to `cut`, as far as their headers can be read.
fn count_removed(path: &Path, from: u64, cut: &mut Cut) -> Result<()> {
    let mut file = SegmentFile::open(path)?;
    let mut position = from;
    while position < file.len {
        let Ok(header) = file.header_at(position)? else {
            break;
        };
        cut.batches_removed += 1;
        cut.records_removed += u64::from(header.record_count);
        let (first, last) = cut
            .offsets_removed
            .unwrap_or((header.base_offset, header.last_offset()));
        cut.offsets_removed = Some((
            first.min(header.base_offset),
            last.max(header.last_offset()),
        ));
        // A torn batch whose header is whole counts, and ends the walk.
        position = position
            .saturating_add(u64::from(header.batch_length))
            .min(file.len);
    }
    cut.unreadable_bytes += file.len - position;
    cut.bytes_removed += file.len - from;
    Ok(())
}

fn apply_repair(scan: &PartitionScan, plan: &RepairPlan) -> Result<()> {
    let dir = &scan.files.dir;
    // First the checkpoint stops vouching for what is about to go.
    if let Some(state) = plan.new_state {
        let (mut checkpoint, _) = Checkpoint::open(&FsStorage, dir)?;
        checkpoint.write(state, true)?;
    }
    if let Some((at, position)) = plan.truncate {
        let path = &scan.segments[at].files.log;
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        file.set_len(position).map_err(|e| Error::io(path, e))?;
        file.sync_all().map_err(|e| Error::io(path, e))?;
    }
    for path in &plan.deleted_files {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(path, e)),
        }
    }
    FsStorage.sync_dir(dir).map_err(|e| Error::io(dir, e))
}
