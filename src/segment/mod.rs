//! A segment: one log file of batches, `<base offset, 20 digits>.log`, with
//! its sparse offset index (`.index`) and time index (`.timeindex`).
//!
//! Only the partition's writer appends, and only at the end; readers read
//! below the published `size` without any lock.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use bytes::Bytes;

mod index;
mod verified;

pub(crate) use index::{Entry, Index, OffsetEntry, TimeEntry};
use verified::VerifiedBatches;

use crate::config::{Config, Durability};
use crate::error::{CorruptKind, Error, Result};
use crate::record::batch::{self, BatchHeader, HEADER_BYTES, Records};
use crate::storage::{Storage, StorageFile, Stores, read_exact_at};

/// File name suffixes.
pub(crate) const LOG_SUFFIX: &str = ".log";
pub(crate) const INDEX_SUFFIX: &str = ".index";
pub(crate) const TIME_INDEX_SUFFIX: &str = ".timeindex";

/// Twenty digits hold any `u64`.
pub(crate) fn file_name(base_offset: u64, suffix: &str) -> String {
    format!("{base_offset:020}{suffix}")
}

/// Parses `<20 digits><suffix>` back into a base offset.
pub(crate) fn parse_file_name(name: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_suffix(suffix)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Batches already on disk are bounded by their segment's size, not by the
/// current `max_batch_bytes`, which may have been lowered since they were
/// written.
const STORED_BATCH_BYTES_MAX: u32 = u32::MAX;

/// What the writer learns from appending one batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchMeta {
    pub header: BatchHeader,
    pub position: u64,
}

/// The files of a segment, as found on disk.
pub(crate) struct SegmentFiles {
    pub log: Arc<dyn StorageFile>,
    pub log_path: PathBuf,
    /// `None` when missing or not a whole number of entries.
    pub index: Option<Index<OffsetEntry>>,
    /// `None` when missing or not a whole number of entries.
    pub time_index: Option<Index<TimeEntry>>,
}

/// One segment of a partition.
pub(crate) struct Segment {
    base_offset: u64,
    log_path: PathBuf,
    log: Arc<dyn StorageFile>,
    view: Option<Bytes>,
    /// Bytes of valid batches; readers read below it.
    size: AtomicU64,
    /// Offset after the last batch (the base offset while empty).
    next_offset: AtomicU64,
    /// Largest timestamp of any record; `i64::MIN` while empty.
    max_timestamp: AtomicI64,
    /// Relative offset of the batch holding `max_timestamp`.
    offset_of_max_timestamp: AtomicU64,
    /// First batch's first timestamp, for rolling by age; `i64::MIN` while empty.
    first_timestamp: AtomicI64,
    /// Bytes appended since the last offset-index entry (writer only).
    bytes_since_index: AtomicU64,
    pub(crate) index: Index<OffsetEntry>,
    pub(crate) time_index: Index<TimeEntry>,
    /// What is readied ahead of the data.
    ahead: Ahead,
    /// The file's length: data, then the zeros written or the space
    /// reserved ahead (writer only).
    allocated: AtomicU64,
    /// The end of the space reserved for writes, at most `allocated`
    /// (writer only, `Ahead::Reserve`).
    reserved: AtomicU64,
    segment_bytes: u64,
    /// Batches whose checksum this process has verified (readers only).
    verified: VerifiedBatches,
}

/// Printed without the mapping, whose bytes past the file's end must never
/// be touched (and which would be a whole segment long).
impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("path", &self.log_path)
            .field("base_offset", &self.base_offset)
            .field("next_offset", &self.next_offset())
            .field("size", &self.size())
            .finish_non_exhaustive()
    }
}

/// How far ahead of the data a `Durability::Sync` segment is zero-filled.
const PREALLOCATE_BYTES: u64 = 1 << 20;

/// How far ahead of the data other active segments reserve space.
const RESERVE_BYTES: u64 = 4 << 20;

/// What an active segment readies ahead of its data, so that appends do
/// not grow the file one batch at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ahead {
    /// Nothing: each write grows the file (segments written in full before
    /// they are renamed into place).
    Nothing,
    /// Zeros written [`PREALLOCATE_BYTES`] ahead (`Durability::Sync`): each
    /// fsync then overwrites blocks already allocated and written, and
    /// commits neither an allocation nor a size change.
    Zeros,
    /// Space reserved [`RESERVE_BYTES`] ahead with
    /// [`StorageFile::reserve`]: batches are copied into a mapping of the
    /// file rather than written with a system call each. The unwritten
    /// blocks cost their conversion at the next fsync, which `Interval` and
    /// `None` make rarely.
    Reserve,
}

/// Limits of the indexes, from the config.
fn index_limits(config: &Config) -> (u64, u64) {
    let offset = u64::from(config.max_index_bytes);
    (offset, offset / 2 * 3)
}

impl Segment {
    /// Creates an empty segment; the caller syncs the directory.
    pub(crate) fn create(
        storage: &dyn Storage,
        dir: &Path,
        base_offset: u64,
        config: &Config,
    ) -> Result<Segment> {
        let log_path = dir.join(file_name(base_offset, LOG_SUFFIX));
        let log = storage
            .open(&log_path, true)
            .map_err(|e| Error::io(&log_path, e))?;
        log.set_len(0).map_err(|e| Error::io(&log_path, e))?;
        let (index_bytes, time_bytes) = index_limits(config);
        let index_path = dir.join(file_name(base_offset, INDEX_SUFFIX));
        let index = Index::create(storage, &index_path, index_bytes)
            .map_err(|e| Error::io(&index_path, e))?;
        let time_path = dir.join(file_name(base_offset, TIME_INDEX_SUFFIX));
        let time_index =
            Index::create(storage, &time_path, time_bytes).map_err(|e| Error::io(&time_path, e))?;
        Self::assemble(log_path, log, 0, base_offset, index, time_index, config)
    }

    /// Creates an empty segment whose files carry `suffix` after their usual
    /// names (`<base>.log<suffix>` and so on), for a segment written in full
    /// before it is renamed into place. Nothing is written ahead of its data,
    /// and its indexes hold at least `index_entries` entries (plus the one
    /// kept for sealing) whatever `max_index_bytes` says. The caller syncs
    /// the directory.
    pub(crate) fn create_with_suffix(
        storage: &dyn Storage,
        dir: &Path,
        base_offset: u64,
        suffix: &str,
        index_entries: u64,
        config: &Config,
    ) -> Result<Segment> {
        let path = |kind: &str| dir.join(format!("{}{suffix}", file_name(base_offset, kind)));
        let log_path = path(LOG_SUFFIX);
        let log = storage
            .open(&log_path, true)
            .map_err(|e| Error::io(&log_path, e))?;
        log.set_len(0).map_err(|e| Error::io(&log_path, e))?;
        let (index_bytes, time_bytes) = index_limits(config);
        let index_bytes = index_bytes.max(index_entries.saturating_add(1).saturating_mul(8));
        let time_bytes = time_bytes.max(index_entries.saturating_add(2).saturating_mul(12));
        let index_path = path(INDEX_SUFFIX);
        let index = Index::create(storage, &index_path, index_bytes)
            .map_err(|e| Error::io(&index_path, e))?;
        let time_path = path(TIME_INDEX_SUFFIX);
        let time_index =
            Index::create(storage, &time_path, time_bytes).map_err(|e| Error::io(&time_path, e))?;
        let mut segment = Self::assemble(log_path, log, 0, base_offset, index, time_index, config)?;
        segment.ahead = Ahead::Nothing;
        Ok(segment)
    }

    fn assemble(
        log_path: PathBuf,
        log: Arc<dyn StorageFile>,
        size: u64,
        base_offset: u64,
        index: Index<OffsetEntry>,
        time_index: Index<TimeEntry>,
        config: &Config,
    ) -> Result<Segment> {
        let view_len = size.max(config.segment_bytes) + PREALLOCATE_BYTES;
        let view = log.map(view_len).map_err(|e| Error::io(&log_path, e))?;
        Ok(Segment {
            base_offset,
            log_path,
            log,
            view,
            size: AtomicU64::new(size),
            next_offset: AtomicU64::new(base_offset),
            max_timestamp: AtomicI64::new(i64::MIN),
            offset_of_max_timestamp: AtomicU64::new(0),
            first_timestamp: AtomicI64::new(i64::MIN),
            bytes_since_index: AtomicU64::new(0),
            index,
            time_index,
            ahead: match config.durability {
                Durability::Sync => Ahead::Zeros,
                Durability::Interval(_) | Durability::None => Ahead::Reserve,
            },
            allocated: AtomicU64::new(size),
            reserved: AtomicU64::new(size),
            segment_bytes: config.segment_bytes,
            verified: VerifiedBatches::new(
                size.max(config.segment_bytes),
                !config.verify_every_read,
            ),
        })
    }

    /// Opens the files of an existing segment. Its `size` is set to `size`
    /// (the caller decides it: from a checkpoint, the file length or a scan),
    /// and its indexes are opened as they are, or `None` if one is missing
    /// or not a whole number of entries; the caller then validates or
    /// rebuilds them.
    pub(crate) fn open_files(
        storage: &dyn Storage,
        dir: &Path,
        base_offset: u64,
        config: &Config,
    ) -> Result<SegmentFiles> {
        let log_path = dir.join(file_name(base_offset, LOG_SUFFIX));
        let log = storage
            .open(&log_path, false)
            .map_err(|e| Error::io(&log_path, e))?;
        let (index_bytes, time_bytes) = index_limits(config);
        let index_path = dir.join(file_name(base_offset, INDEX_SUFFIX));
        let index = match storage
            .exists(&index_path)
            .map_err(|e| Error::io(&index_path, e))?
        {
            true => Index::open(storage, &index_path, index_bytes)
                .map_err(|e| Error::io(&index_path, e))?,
            false => None,
        };
        let time_path = dir.join(file_name(base_offset, TIME_INDEX_SUFFIX));
        let time_index = match storage
            .exists(&time_path)
            .map_err(|e| Error::io(&time_path, e))?
        {
            true => Index::open(storage, &time_path, time_bytes)
                .map_err(|e| Error::io(&time_path, e))?,
            false => None,
        };
        Ok(SegmentFiles {
            log,
            log_path,
            index,
            time_index,
        })
    }

    /// Builds a segment from opened files whose indexes were validated, with
    /// the state the caller established.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn from_parts(
        log_path: PathBuf,
        log: Arc<dyn StorageFile>,
        base_offset: u64,
        size: u64,
        next_offset: u64,
        index: Index<OffsetEntry>,
        time_index: Index<TimeEntry>,
        config: &Config,
    ) -> Result<Segment> {
        let segment = Self::assemble(log_path, log, size, base_offset, index, time_index, config)?;
        segment.next_offset.store(next_offset, Ordering::Relaxed);
        if let Some(last) = segment
            .time_index
            .last()
            .map_err(|e| Error::io(segment.time_index.path(), e))?
        {
            segment
                .max_timestamp
                .store(last.timestamp, Ordering::Relaxed);
            segment
                .offset_of_max_timestamp
                .store(u64::from(last.relative_offset), Ordering::Relaxed);
        }
        Ok(segment)
    }

    /// Recreates both indexes empty, for a rebuild by [`Segment::append_meta`]
    /// replaying a scan.
    pub(crate) fn create_indexes(
        storage: &dyn Storage,
        dir: &Path,
        base_offset: u64,
        config: &Config,
    ) -> Result<(Index<OffsetEntry>, Index<TimeEntry>)> {
        let (index_bytes, time_bytes) = index_limits(config);
        let index_path = dir.join(file_name(base_offset, INDEX_SUFFIX));
        let index = Index::create(storage, &index_path, index_bytes)
            .map_err(|e| Error::io(&index_path, e))?;
        let time_path = dir.join(file_name(base_offset, TIME_INDEX_SUFFIX));
        let time_index =
            Index::create(storage, &time_path, time_bytes).map_err(|e| Error::io(&time_path, e))?;
        Ok((index, time_index))
    }

    pub(crate) fn base_offset(&self) -> u64 {
        self.base_offset
    }

    pub(crate) fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub(crate) fn index_path(&self) -> PathBuf {
        self.index.path().to_path_buf()
    }

    pub(crate) fn time_index_path(&self) -> PathBuf {
        self.time_index.path().to_path_buf()
    }

    pub(crate) fn log_file(&self) -> &Arc<dyn StorageFile> {
        &self.log
    }

    /// Bytes of batches published to readers.
    pub(crate) fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    pub(crate) fn next_offset(&self) -> u64 {
        self.next_offset.load(Ordering::Acquire)
    }

    pub(crate) fn max_timestamp(&self) -> i64 {
        self.max_timestamp.load(Ordering::Acquire)
    }

    /// The first batch's first timestamp; read from the file the first time
    /// it is asked for, so that opening a segment reads none of its batches.
    pub(crate) fn first_timestamp(&self) -> Option<i64> {
        match self.first_timestamp.load(Ordering::Acquire) {
            i64::MIN if self.is_empty() => None,
            i64::MIN => {
                let first = self.read_header(0).ok()?.first_timestamp;
                self.first_timestamp.store(first, Ordering::Release);
                Some(first)
            }
            ts => Some(ts),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.size() == 0
    }

    /// True if a batch spanning these offsets cannot be indexed here: a
    /// relative offset must fit in 32 bits.
    pub(crate) fn offsets_fit(&self, last_offset: u64) -> bool {
        last_offset
            .checked_sub(self.base_offset)
            .is_some_and(|rel| rel <= u64::from(u32::MAX))
    }

    /// Writes a sealed batch at the end. Publishing to readers is separate
    /// ([`Segment::publish`]) so the writer decides the order.
    pub(crate) fn write(&self, bytes: &[u8]) -> Result<u64> {
        let position = self.size.load(Ordering::Relaxed);
        let end = position + bytes.len() as u64;
        let readied = match self.ahead {
            Ahead::Nothing => u64::MAX,
            Ahead::Zeros => self.allocated.load(Ordering::Relaxed),
            Ahead::Reserve => self.reserved.load(Ordering::Relaxed),
        };
        if end > readied {
            self.ready_past(end)?;
        }
        self.log
            .write_at(bytes, position)
            .map_err(|e| Error::io(&self.log_path, e))?;
        Ok(position)
    }

    /// Readies the file a chunk past `end` (never past the segment's size
    /// limit unless `end` is), as [`Ahead`] says.
    ///
    /// Zeros are written from the end of the data, so that the next batches
    /// overwrite blocks the file system has already allocated: their fsync
    /// then need not commit an allocation or a size change. The zeros become
    /// durable with the next fsync.
    ///
    /// A reservation first sets the file's length to the segment's size
    /// limit, once (the file systems measured here take stores into a
    /// mapping far more slowly near the end of a file that keeps growing),
    /// then allocates a chunk at a time below it.
    fn ready_past(&self, end: u64) -> Result<()> {
        let from = self.size.load(Ordering::Relaxed);
        let io = |e| Error::io(&self.log_path, e);
        match self.ahead {
            Ahead::Nothing => {}
            Ahead::Zeros => {
                let to = (end + PREALLOCATE_BYTES).min(end.max(self.segment_bytes));
                self.log
                    .write_at(&vec![0u8; (to - from) as usize], from)
                    .map_err(io)?;
                self.allocated.store(to, Ordering::Relaxed);
            }
            Ahead::Reserve => {
                let len = end.max(self.segment_bytes);
                if self.allocated.load(Ordering::Relaxed) < len {
                    self.log.set_len(len).map_err(io)?;
                    self.allocated.store(len, Ordering::Relaxed);
                }
                let to = (end + RESERVE_BYTES).min(len);
                self.log.reserve(to, Stores::Streaming).map_err(io)?;
                self.reserved.store(to, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Records a batch written at `position` in the indexes and in memory,
    /// then publishes it to readers.
    pub(crate) fn append_meta(&self, meta: BatchMeta, index_interval_bytes: u32) -> Result<()> {
        let BatchMeta { header, position } = meta;
        let length = u64::from(header.batch_length);
        assert_eq!(
            position,
            self.size.load(Ordering::Relaxed),
            "batches are appended at the end"
        );
        assert!(
            header.base_offset >= self.next_offset.load(Ordering::Relaxed),
            "offsets increase"
        );
        let relative =
            u32::try_from(header.base_offset - self.base_offset).expect("checked by offsets_fit");
        if position == 0 {
            self.first_timestamp
                .store(header.first_timestamp, Ordering::Release);
        }
        if header.max_timestamp > self.max_timestamp.load(Ordering::Relaxed) {
            self.offset_of_max_timestamp
                .store(u64::from(relative), Ordering::Relaxed);
            self.max_timestamp
                .store(header.max_timestamp, Ordering::Release);
        }
        let since = self.bytes_since_index.load(Ordering::Relaxed);
        // The first batch always gets an entry, so a lookup never scans from
        // before the segment's first batch; then one entry per interval.
        if (position == 0 || since >= u64::from(index_interval_bytes)) && !self.index.is_full() {
            let position32 = u32::try_from(position).expect("segments stay below 4 GiB");
            self.index
                .push(OffsetEntry {
                    relative_offset: relative,
                    position: position32,
                })
                .map_err(|e| Error::io(self.index.path(), e))?;
            self.push_time_entry_if_newer()?;
            self.bytes_since_index.store(length, Ordering::Relaxed);
        } else {
            self.bytes_since_index
                .store(since + length, Ordering::Relaxed);
        }
        self.next_offset
            .store(header.next_offset(), Ordering::Release);
        self.size.store(position + length, Ordering::Release);
        Ok(())
    }

    /// Adds a time-index entry for the largest timestamp so far, if it is
    /// larger than the last entry's and there is room (one slot is kept for
    /// the entry written when the segment rolls).
    fn push_time_entry_if_newer(&self) -> Result<()> {
        let max = self.max_timestamp.load(Ordering::Relaxed);
        if max == i64::MIN {
            return Ok(());
        }
        let last = self
            .time_index
            .last()
            .map_err(|e| Error::io(self.time_index.path(), e))?;
        if last.is_some_and(|e| e.timestamp >= max) || self.time_index.free() == 0 {
            return Ok(());
        }
        let relative_offset = u32::try_from(self.offset_of_max_timestamp.load(Ordering::Relaxed))
            .expect("relative offsets fit");
        self.time_index
            .push(TimeEntry {
                timestamp: max,
                relative_offset,
            })
            .map_err(|e| Error::io(self.time_index.path(), e))
    }

    /// True when an index has no room for another entry; the segment rolls.
    pub(crate) fn indexes_full(&self) -> bool {
        self.index.is_full() || self.time_index.free() <= 1
    }

    /// Makes the segment read-only: a final time-index entry, indexes trimmed
    /// and everything synced. Called on roll and on close.
    pub(crate) fn seal(&self) -> Result<()> {
        self.push_time_entry_if_newer()?;
        self.log
            .sync_data()
            .map_err(|e| Error::io(&self.log_path, e))?;
        // Cut the zeros ahead, so that the file ends where its data does;
        // readers only read below `size`, so nothing they hold is cut.
        let size = self.size();
        if self.allocated.load(Ordering::Relaxed) > size {
            self.log
                .set_len(size)
                .and_then(|()| self.log.sync_data())
                .map_err(|e| Error::io(&self.log_path, e))?;
            self.allocated.store(size, Ordering::Relaxed);
            self.reserved.fetch_min(size, Ordering::Relaxed);
        }
        for (index_path, result) in [
            (
                self.index.path(),
                self.index.trim().and_then(|()| self.index.sync()),
            ),
            (
                self.time_index.path(),
                self.time_index.trim().and_then(|()| self.time_index.sync()),
            ),
        ] {
            result.map_err(|e| Error::io(index_path, e))?;
        }
        Ok(())
    }

    /// `len` bytes at `position`, as a view of the mapped file when possible.
    fn bytes(&self, position: u64, len: usize) -> io::Result<Bytes> {
        if let Some(view) = &self.view
            && let Some(range) = Self::view_range(view, position, len)
        {
            return Ok(view.slice(range));
        }
        let mut buf = vec![0u8; len];
        read_exact_at(&*self.log, &mut buf, position)?;
        Ok(Bytes::from(buf))
    }

    /// Where `len` bytes at `position` are in `view`, if they are.
    fn view_range(view: &Bytes, position: u64, len: usize) -> Option<std::ops::Range<usize>> {
        let start = usize::try_from(position).ok()?;
        let end = start.checked_add(len).filter(|&end| end <= view.len())?;
        Some(start..end)
    }

    /// Reads and checks the header of the batch at `position`, which must be
    /// below `size()`. Does not verify the checksum.
    pub(crate) fn read_header(&self, position: u64) -> Result<BatchHeader> {
        self.read_header_within(position, self.size())
    }

    /// As [`Segment::read_header`], for a batch that must end by `size`.
    pub(crate) fn read_header_within(&self, position: u64, size: u64) -> Result<BatchHeader> {
        let corrupt = |kind| Error::corrupt(&self.log_path, position, kind);
        if position + HEADER_BYTES as u64 > size {
            return Err(corrupt(CorruptKind::Truncated {
                needed: HEADER_BYTES as u64,
                available: size.saturating_sub(position),
            }));
        }
        // Parsed where it lies in the mapping when there is one: a header is
        // read for every batch of a scan, so no `Bytes` is made for it.
        let mapped = self.view.as_ref().and_then(|view| {
            Self::view_range(view, position, HEADER_BYTES).map(|range| &view[range])
        });
        let parsed = match mapped {
            Some(bytes) => BatchHeader::parse(bytes, STORED_BATCH_BYTES_MAX),
            None => {
                let mut buf = [0u8; HEADER_BYTES];
                read_exact_at(&*self.log, &mut buf, position)
                    .map_err(|e| Error::io(&self.log_path, e))?;
                BatchHeader::parse(&buf, STORED_BATCH_BYTES_MAX)
            }
        };
        let header = parsed.map_err(corrupt)?;
        if position + u64::from(header.batch_length) > size {
            return Err(corrupt(CorruptKind::Length {
                length: u64::from(header.batch_length),
            }));
        }
        Ok(header)
    }

    /// Reads the whole published batch at `position` and verifies its
    /// checksum, unless this process has verified it already (see
    /// [`Config::verify_every_read`]).
    pub(crate) fn read_batch(&self, position: u64) -> Result<(BatchHeader, Bytes)> {
        self.read_batch_checked(position, self.size(), true)
    }

    /// As [`Segment::read_batch`], for a batch that must end by `size`, and
    /// always verified: used by recovery, which checks bytes before they
    /// are published (and may cut them).
    pub(crate) fn read_batch_within(
        &self,
        position: u64,
        size: u64,
    ) -> Result<(BatchHeader, Bytes)> {
        self.read_batch_checked(position, size, false)
    }

    fn read_batch_checked(
        &self,
        position: u64,
        size: u64,
        published: bool,
    ) -> Result<(BatchHeader, Bytes)> {
        let header = self.read_header_within(position, size)?;
        let bytes = self
            .bytes(position, header.batch_length as usize)
            .map_err(|e| Error::io(&self.log_path, e))?;
        let header = if published && self.verified.contains(position, header.crc) {
            header
        } else {
            let verified = batch::verify_batch(&bytes, STORED_BATCH_BYTES_MAX)
                .map_err(|kind| Error::corrupt(&self.log_path, position, kind))?;
            if published {
                self.verified.insert(position, verified.crc);
            }
            verified
        };
        // A batch belongs to its segment's offsets, whatever its checksum.
        if header.base_offset < self.base_offset || !self.offsets_fit(header.last_offset()) {
            return Err(Error::corrupt(
                &self.log_path,
                position,
                CorruptKind::OffsetOrder {
                    expected_at_least: self.base_offset,
                    found: header.base_offset,
                },
            ));
        }
        Ok((header, bytes))
    }

    /// The records of the batch at `position` (as [`Segment::read_batch`]
    /// returned it) from `offset` on. The records before `offset` are
    /// stepped over from the nearest place an earlier read of the batch
    /// learned (see [`Marks`](batch::Marks)), and what this walk learns is kept for the
    /// next one.
    pub(crate) fn records_from(
        &self,
        position: u64,
        header: BatchHeader,
        batch: Bytes,
        offset: u64,
    ) -> Records {
        let records = Records::new(header, batch);
        if offset <= header.base_offset {
            return records;
        }
        let known = self.verified.marks(position);
        let mut marks = known;
        let records = records.skip_before_marked(offset, &mut marks);
        if marks != known {
            self.verified.set_marks(position, marks);
        }
        records
    }

    /// Stops trusting the batches this process has verified: every later
    /// read of the segment verifies its batch again. For a partition whose
    /// fsync failed, whose pages may be dropped and read back stale.
    pub(crate) fn forget_verified(&self) {
        self.verified.forget();
    }

    /// Byte position of the batch holding `offset`, or of the first batch
    /// after it; `size()` when there is none. Scans headers from the nearest
    /// index entry.
    pub(crate) fn position_of(&self, offset: u64) -> Result<u64> {
        let relative = offset
            .saturating_sub(self.base_offset)
            .min(u64::from(u32::MAX)) as u32;
        let entry = self
            .index
            .floor(relative, |e| e.relative_offset)
            .map_err(|e| Error::io(self.index.path(), e))?;
        let size = self.size();
        let mut position = entry.map_or(0, |(_, e)| u64::from(e.position)).min(size);
        // The batch a point read lands in is usually the indexed one.
        self.verified.prefetch(position);
        // The entry must point at the batch it names; otherwise the scan
        // could start past the offset, or inside a batch. The index is
        // derived data: a bad entry means scanning from the segment's start.
        if let Some((_, entry)) = entry
            && position < size
        {
            let names_its_batch = self.read_header(position).is_ok_and(|h| {
                h.base_offset == self.base_offset + u64::from(entry.relative_offset)
            });
            if !names_its_batch {
                position = 0;
            }
        }
        while position < size {
            let header = self.read_header(position)?;
            if header.last_offset() >= offset {
                return Ok(position);
            }
            position += u64::from(header.batch_length);
        }
        Ok(size)
    }

    /// Byte position from which a scan for the first record with a
    /// timestamp at or after `timestamp` can start.
    pub(crate) fn position_for_timestamp(&self, timestamp: i64) -> Result<u64> {
        let entry = self
            .time_index
            .floor(timestamp, |e| e.timestamp)
            .map_err(|e| Error::io(self.time_index.path(), e))?;
        match entry {
            // Every record before the entry's batch is older than the entry's
            // timestamp, and strictly older than `timestamp` when it is smaller.
            Some((_, e)) if e.timestamp < timestamp => {
                self.position_of(self.base_offset + u64::from(e.relative_offset))
            }
            _ => Ok(0),
        }
    }

    /// Syncs the log file's data.
    pub(crate) fn sync(&self) -> Result<()> {
        self.log
            .sync_data()
            .map_err(|e| Error::io(&self.log_path, e))
    }

    /// Paths of the segment's files.
    pub(crate) fn paths(&self) -> [PathBuf; 3] {
        [
            self.log_path.clone(),
            self.index.path().to_path_buf(),
            self.time_index.path().to_path_buf(),
        ]
    }
}
