//! A partition: an ordered set of segments with one writer and any number of
//! readers that never wait for it.

use std::collections::BTreeSet;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex, RwLock};

use crate::batches::Batches;
use crate::checkpoint::{Checkpoint, State};
use crate::cleaner::Cleaner;
use crate::config::{Cleanup, Config, Durability};
use crate::error::{CorruptKind, Error, Result};
use crate::poison;
use crate::producer_state::{Check, ProducerStates, SNAPSHOT_SUFFIX, last_sequence};
use crate::record::batch::{BatchHeader, EncodedBatch, ProducerStamp, Records};
use crate::record::{Appended, Record, StoredRecord};
use crate::recovery::{self, BatchDecision, RecoveryPoint, SegmentPlan};
use crate::segment;
use crate::segment::{BatchMeta, Index, OffsetEntry, Segment, SegmentFiles, TimeEntry};
use crate::stats::{self, Counters, PartitionStats};
use crate::storage::Storage;

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A handle to one partition of a [`Log`](crate::Log): cheap to clone, safe
/// to share between threads.
///
/// One append runs at a time; reads run alongside appends and never wait
/// for an fsync.
#[derive(Clone)]
pub struct Partition {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partition")
            .field("id", &self.inner.id)
            .field("dir", &self.inner.dir)
            .field("start_offset", &self.start_offset())
            .field("end_offset", &self.end_offset())
            .field("durable_offset", &self.durable_offset())
            .finish_non_exhaustive()
    }
}

struct Inner {
    /// The end of the data known to be on disk: (segment base, position).
    /// A leaf lock, taken alone.
    synced_point: Mutex<(u64, u64)>,
    /// Idempotent producers' recent batches; locked inside `writer`.
    producers: Mutex<ProducerStates>,
    counters: Counters,
    recovery: RecoveryReport,
    recovery_time: Duration,
    id: u32,
    dir: PathBuf,
    storage: Arc<dyn Storage>,
    config: Arc<Config>,
    /// Readers take a snapshot; the writer swaps in a new list.
    segments: RwLock<Arc<Vec<Arc<Segment>>>>,
    /// The active segment; held while appending, rolling or truncating.
    writer: Mutex<Arc<Segment>>,
    /// Held by the thread that runs an fsync for everyone (group commit).
    /// Whether a thread holds the fsync turn (see [`SyncTurn`]); waiters
    /// sleep on `sync_done`.
    syncing: Mutex<bool>,
    sync_done: Condvar,
    checkpoint: Mutex<Checkpoint>,
    end_offset: AtomicU64,
    start_offset: AtomicU64,
    durable_offset: AtomicU64,
    /// Bumped by every truncation, so readers re-seek instead of reading
    /// bytes that were cut.
    truncations: AtomicU64,
    poisoned: AtomicBool,
    closed: AtomicBool,
    tail_lock: Mutex<()>,
    tail: Condvar,
    waiters: AtomicUsize,
    /// Tasks waiting for the end offset to grow, each counted in `waiters`.
    #[cfg(feature = "async")]
    wakers: crate::tail::Wakers,
    /// Compaction's state (`src/cleaner`).
    cleaner: Cleaner,
}

/// The batches [`Partition::send_to`] sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SentRange {
    /// Base offset of the first batch sent (at or before the offset asked
    /// for; equal to `next_offset` when nothing was sent).
    pub base_offset: u64,
    /// The offset after the last batch sent.
    pub next_offset: u64,
    /// Bytes sent.
    pub bytes: u64,
}

/// What opening a partition found and did, for reporting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// The previous shutdown was clean: nothing was scanned.
    pub clean: bool,
    /// Segments whose batches were read and checked.
    pub segments_scanned: u32,
    /// Indexes rebuilt from their segments.
    pub indexes_rebuilt: u32,
    /// Bytes cut from a torn tail. A tail of nothing but zeros (space written
    /// ahead for appends) is cut without being counted.
    pub truncated_bytes: u64,
}

impl Partition {
    /// Opens (creating if empty) the partition stored in `dir`.
    pub(crate) fn open(
        id: u32,
        dir: &Path,
        storage: Arc<dyn Storage>,
        config: Arc<Config>,
    ) -> Result<(Partition, RecoveryReport)> {
        let opened = Instant::now();
        let mut report = RecoveryReport::default();
        apply_poison_marker(&*storage, dir, &mut report)?;
        // Rows 12 and 13: finish or undo an interrupted compaction swap.
        let cleaner = Cleaner::open(&*storage, dir)?;
        let names = storage.list_dir(dir).map_err(|e| Error::io(dir, e))?;
        let mut logs = BTreeSet::new();
        let mut indexes = Vec::new();
        let mut removed = false;
        for name in &names {
            match recovery::classify(name) {
                recovery::Entry::Log(base) => {
                    logs.insert(base);
                }
                recovery::Entry::Index(base) => indexes.push((base, name)),
                recovery::Entry::Leftover => {
                    let path = dir.join(name);
                    storage
                        .remove_file(&path)
                        .map_err(|e| Error::io(&path, e))?;
                    removed = true;
                }
                recovery::Entry::Checkpoint | recovery::Entry::Foreign => {}
            }
        }
        for (base, name) in indexes {
            if !logs.contains(&base) {
                let path = dir.join(name);
                storage
                    .remove_file(&path)
                    .map_err(|e| Error::io(&path, e))?;
                removed = true;
            }
        }
        let (mut checkpoint, state) = Checkpoint::open(&*storage, dir)?;
        removed |= checkpoint.created();
        // Row 7 of the recovery table, for a whole file: the segment holding
        // synced bytes must still be there (a segment below the first one
        // was deleted by retention, which is fine).
        if let Some(state) = state
            && state.position > 0
            && !logs.contains(&state.segment)
            && logs.first().is_none_or(|&first| first <= state.segment)
        {
            return Err(Error::corrupt(
                dir.join(segment::file_name(state.segment, segment::LOG_SUFFIX)),
                0,
                CorruptKind::Truncated {
                    needed: state.position,
                    available: 0,
                },
            ));
        }
        let point = state.map(|s| RecoveryPoint {
            clean: s.clean,
            segment: s.segment,
            position: s.position,
        });
        let mut segments: Vec<Arc<Segment>> = Vec::with_capacity(logs.len());
        let bases: Vec<u64> = logs.into_iter().collect();
        for (i, &base) in bases.iter().enumerate() {
            let is_last = i + 1 == bases.len();
            let next_base = bases.get(i + 1).copied();
            let previous_next = segments.last().map(|s| s.next_offset());
            let segment = open_segment(
                &*storage,
                dir,
                &config,
                base,
                is_last,
                next_base,
                previous_next,
                point,
                state,
                &mut report,
            )?;
            segments.push(Arc::new(segment));
        }
        if segments.is_empty() {
            let base = state.map_or(0, |s| s.log_start_offset.max(s.next_offset));
            segments.push(Arc::new(Segment::create(&*storage, dir, base, &config)?));
            removed = true;
        }
        if removed {
            storage.sync_dir(dir).map_err(|e| Error::io(dir, e))?;
        }
        let active = segments.last().expect("at least one segment").clone();
        if !report.clean {
            // What the scan kept is made durable, so the recovery point can
            // cover all of it.
            active.sync()?;
        }
        let end = active.next_offset();
        let first_base = segments[0].base_offset();
        let start = state.map_or(first_base, |s| {
            s.log_start_offset.max(first_base).min(end.max(first_base))
        });
        // Clear the clean mark before anything can be appended, or a crash
        // after the next append would trust a stale size.
        checkpoint.write(
            State {
                clean: false,
                log_start_offset: start,
                segment: active.base_offset(),
                position: active.size(),
                next_offset: end,
            },
            true,
        )?;
        let synced_point = (active.base_offset(), active.size());
        let inner = Inner {
            id,
            dir: dir.to_path_buf(),
            storage,
            config,
            segments: RwLock::new(Arc::new(segments)),
            writer: Mutex::new(active.clone()),
            syncing: Mutex::new(false),
            sync_done: Condvar::new(),
            checkpoint: Mutex::new(checkpoint),
            end_offset: AtomicU64::new(end),
            start_offset: AtomicU64::new(start),
            durable_offset: AtomicU64::new(end),
            truncations: AtomicU64::new(0),
            synced_point: Mutex::new(synced_point),
            producers: Mutex::new(ProducerStates::default()),
            counters: Counters::default(),
            recovery: report.clone(),
            recovery_time: opened.elapsed(),
            poisoned: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            tail_lock: Mutex::new(()),
            tail: Condvar::new(),
            waiters: AtomicUsize::new(0),
            #[cfg(feature = "async")]
            wakers: crate::tail::Wakers::default(),
            cleaner,
        };
        let partition = Partition {
            inner: Arc::new(inner),
        };
        partition.rebuild_producer_state()?;
        Ok((partition, report))
    }

    /// The partition's number in its log.
    pub fn id(&self) -> u32 {
        self.inner.id
    }

    /// The next offset to be assigned (the log end offset).
    pub fn end_offset(&self) -> u64 {
        self.inner.end_offset.load(Ordering::Acquire)
    }

    /// The first offset still stored (the log start offset).
    pub fn start_offset(&self) -> u64 {
        self.inner.start_offset.load(Ordering::Acquire)
    }

    /// Every offset below this one is on disk (fsynced).
    pub fn durable_offset(&self) -> u64 {
        self.inner.durable_offset.load(Ordering::Acquire)
    }

    /// Total bytes of the partition's segment files.
    pub fn size_bytes(&self) -> u64 {
        self.snapshot().iter().map(|s| s.size()).sum()
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.snapshot().len()
    }

    /// A snapshot of the partition's counters and extent. Cheap: a handful
    /// of relaxed atomic loads and one pass over the segment list.
    pub fn stats(&self) -> PartitionStats {
        let c = &self.inner.counters;
        PartitionStats {
            batches_appended: stats::get(&c.batches_appended),
            records_appended: stats::get(&c.records_appended),
            bytes_appended: stats::get(&c.bytes_appended),
            bytes_appended_uncompressed: stats::get(&c.bytes_appended_uncompressed),
            largest_batch_bytes: stats::get(&c.largest_batch_bytes),
            fsyncs: stats::get(&c.fsyncs),
            fsync_time: Duration::from_nanos(stats::get(&c.fsync_nanos)),
            group_commit_batches: stats::get(&c.group_commit_batches),
            group_commits: stats::get(&c.group_commits),
            rolls: stats::get(&c.rolls),
            batches_read: stats::get(&c.batches_read),
            bytes_read: stats::get(&c.bytes_read),
            recovery: self.inner.recovery.clone(),
            recovery_time: self.inner.recovery_time,
            start_offset: self.start_offset(),
            end_offset: self.end_offset(),
            durable_offset: self.durable_offset(),
            segments: self.segment_count() as u64,
            size_bytes: self.size_bytes(),
        }
    }

    pub(crate) fn snapshot(&self) -> Arc<Vec<Arc<Segment>>> {
        self.inner.segments.read().clone()
    }

    pub(crate) fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    pub(crate) fn check_writable(&self) -> Result<()> {
        self.check_open()?;
        if self.inner.poisoned.load(Ordering::Acquire) {
            return Err(Error::Poisoned {
                partition: self.inner.id,
            });
        }
        Ok(())
    }

    /// Poisons the partition after a failed write: the batches written
    /// before it are good, so the next open cuts at the end of the last one.
    fn poison(&self, error: Error) -> Error {
        let written = self.snapshot().last().map(|s| (s.base_offset(), s.size()));
        self.poison_at(error, written)
    }

    /// Poisons the partition after a failed fsync: only what earlier fsyncs
    /// covered is known to be on disk, so the next open cuts there.
    fn poison_sync(&self, error: Error) -> Error {
        let synced = *self.inner.synced_point.lock();
        self.poison_at(error, Some(synced))
    }

    fn poison_at(&self, error: Error, cut: Option<(u64, u64)>) -> Error {
        let inner = &*self.inner;
        if !inner.poisoned.swap(true, Ordering::AcqRel) {
            // Pages whose write-back failed may be dropped and read back
            // stale: reads verify every batch again from now on.
            for segment in self.snapshot().iter() {
                segment.forget_verified();
            }
            if let Some((segment, position)) = cut {
                poison::write(&*inner.storage, &inner.dir, segment, position);
            }
        }
        error
    }

    /// Records that every byte of segment `segment` below `position` (and of
    /// every earlier segment) is on disk.
    fn note_synced(&self, segment: u64, position: u64) {
        let mut point = self.inner.synced_point.lock();
        *point = (*point).max((segment, position));
    }

    /// Appends `records` as one atomic batch and returns the offsets the log
    /// gave them.
    ///
    /// Durability: with [`Durability::Sync`] this returns once the batch is
    /// fsynced (appenders running at the same time share one fsync); with the
    /// other policies once it is in the page cache. Readers see the batch as
    /// soon as it is written, before it is synced: compare with
    /// [`Partition::durable_offset`] when that matters.
    ///
    /// # Errors
    ///
    /// [`Error::EmptyBatch`] for no records, [`Error::RecordTooLarge`] when
    /// the batch would exceed `max_batch_bytes`, [`Error::MissingKey`] for a
    /// record without a key on a compacted log, [`Error::Poisoned`] after an
    /// earlier I/O failure, [`Error::Closed`], and [`Error::Io`] (which
    /// poisons the partition).
    pub fn append(&self, records: &[Record]) -> Result<Appended> {
        let (batch, uncompressed) = self.encode(records, None, None)?;
        self.append_encoded(batch, uncompressed)
    }

    /// Encodes `records` as one batch, stamped with a producer and a leader
    /// epoch when given, and compressed with the partition's codec (before
    /// the writer lock is taken). Returns the batch and its uncompressed
    /// size.
    fn encode(
        &self,
        records: &[Record],
        producer: Option<ProducerStamp>,
        leader_epoch: Option<i32>,
    ) -> Result<(EncodedBatch, u64)> {
        if records.is_empty() {
            return Err(Error::EmptyBatch);
        }
        if let Some(stamp) = producer
            && (stamp.producer_id < 0 || stamp.producer_epoch < 0 || stamp.base_sequence < 0)
        {
            return Err(Error::config(
                "producer",
                "producer id, epoch and sequence must not be negative",
            ));
        }
        let max = self.inner.config.max_batch_bytes;
        let mut batch =
            EncodedBatch::encode(records, now_ms(), max).map_err(|size| Error::RecordTooLarge {
                size,
                max: u64::from(max),
            })?;
        if let Some(stamp) = producer {
            batch.set_producer(stamp);
        }
        if let Some(epoch) = leader_epoch {
            batch.set_leader_epoch(epoch);
        }
        let uncompressed = batch.len() as u64;
        batch.compress(self.inner.config.compression);
        Ok((batch, uncompressed))
    }

    /// Appends `records` as one batch of an idempotent producer whose first
    /// record has sequence number `base_sequence` (the next records follow
    /// it). A batch this partition already holds — the same producer, epoch
    /// and sequences, among the producer's last five batches — is not
    /// appended again: the call returns the offsets it got the first time.
    /// The [`Producer`](crate::Producer) does this for you; this is for hosts
    /// that carry produce requests themselves.
    ///
    /// # Errors
    ///
    /// As [`Partition::append`], and [`Error::OutOfOrderSequence`] when the
    /// sequence does not follow the producer's previous batch,
    /// [`Error::ProducerFenced`] when a newer epoch of the producer has
    /// written, [`Error::InvalidConfig`] for a negative id, epoch or
    /// sequence.
    pub fn append_idempotent(
        &self,
        records: &[Record],
        producer_id: i64,
        producer_epoch: i16,
        base_sequence: i32,
    ) -> Result<Appended> {
        let stamp = ProducerStamp {
            producer_id,
            producer_epoch,
            base_sequence,
        };
        let (batch, uncompressed) = self.encode(records, Some(stamp), None)?;
        self.append_encoded(batch, uncompressed)
    }

    /// Appends an encoded batch, then waits for the configured durability.
    pub(crate) fn append_encoded(
        &self,
        batch: EncodedBatch,
        uncompressed_bytes: u64,
    ) -> Result<Appended> {
        let appended = self.write_encoded(batch, uncompressed_bytes)?;
        if self.inner.config.durability == Durability::Sync {
            self.sync_to(appended.last_offset + 1)?;
        }
        Ok(appended)
    }

    /// Appends an encoded batch without waiting for durability; the caller
    /// syncs (the producer syncs once for many batches).
    pub(crate) fn write_encoded(
        &self,
        batch: EncodedBatch,
        uncompressed_bytes: u64,
    ) -> Result<Appended> {
        let stored_bytes = batch.len() as u64;
        let (appended, duplicate) = self.write_batch(batch)?;
        if !duplicate {
            self.inner
                .counters
                .appended(appended.record_count(), stored_bytes, uncompressed_bytes);
            self.notify_tail();
        }
        Ok(appended)
    }

    /// The largest batch this partition accepts.
    pub(crate) fn max_batch_bytes(&self) -> u32 {
        self.inner.config.max_batch_bytes
    }

    /// Writes a batch under the writer lock; the flag is set when the batch
    /// was a producer's retry, answered with the original offsets.
    fn write_batch(&self, mut batch: EncodedBatch) -> Result<(Appended, bool)> {
        let inner = &*self.inner;
        if batch.has_unkeyed() && inner.config.cleanup == Cleanup::Compact {
            return Err(Error::MissingKey {
                partition: inner.id,
            });
        }
        let mut active = inner.writer.lock();
        self.check_writable()?;
        let base_offset = inner.end_offset.load(Ordering::Relaxed);
        let unsealed = batch.header();
        if unsealed.producer_id >= 0 {
            let last = last_sequence(unsealed.base_sequence, unsealed.record_count);
            let check = inner.producers.lock().check(
                unsealed.producer_id,
                unsealed.producer_epoch,
                unsealed.base_sequence,
                last,
            )?;
            if let Check::Duplicate(original) = check {
                let appended = Appended {
                    partition: inner.id,
                    base_offset: original.base_offset,
                    last_offset: original.last_offset,
                    max_timestamp: original.max_timestamp,
                };
                return Ok((appended, true));
            }
        }
        // Offsets end at u64::MAX - 1, so that an end offset always exists.
        let Some(last_offset) = base_offset
            .checked_add(u64::from(unsealed.last_offset_delta))
            .filter(|&last| last < u64::MAX)
        else {
            return Err(Error::OffsetOutOfRange {
                requested: base_offset,
                start: self.start_offset(),
                end: base_offset,
            });
        };
        batch.seal(base_offset);
        let header = batch.header();
        debug_assert_eq!(header.last_offset(), last_offset);
        self.put_sealed(&mut active, batch.bytes(), header)?;
        let appended = Appended {
            partition: inner.id,
            base_offset,
            last_offset: header.last_offset(),
            max_timestamp: header.max_timestamp,
        };
        Ok((appended, false))
    }

    /// Writes a sealed batch that starts at the end offset to the end of the
    /// active segment (rolling first when it does not fit) and publishes it.
    /// The caller holds the writer lock.
    fn put_sealed(
        &self,
        active: &mut Arc<Segment>,
        bytes: &[u8],
        header: BatchHeader,
    ) -> Result<()> {
        let inner = &*self.inner;
        if self.needs_roll(active, bytes.len() as u64, header.last_offset()) {
            self.roll(active)?;
        }
        let position = active.write(bytes).map_err(|e| self.poison(e))?;
        active
            .append_meta(
                BatchMeta { header, position },
                inner.config.index_interval_bytes,
            )
            .map_err(|e| self.poison(e))?;
        if header.producer_id >= 0 {
            inner.producers.lock().replay(&header);
        }
        inner
            .end_offset
            .store(header.next_offset(), Ordering::Release);
        Ok(())
    }

    fn needs_roll(&self, active: &Segment, batch_bytes: u64, last_offset: u64) -> bool {
        if active.is_empty() {
            return !active.offsets_fit(last_offset);
        }
        let config = &self.inner.config;
        let too_old = active.first_timestamp().is_some_and(|first| {
            let age_ms = now_ms().saturating_sub(first);
            u128::try_from(age_ms).is_ok_and(|age| age > config.segment_max_age.as_millis())
        });
        active.size() + batch_bytes > config.segment_bytes
            || too_old
            || active.indexes_full()
            || !active.offsets_fit(last_offset)
    }

    /// Seals the active segment and starts a new one at the end offset.
    fn roll(&self, active: &mut Arc<Segment>) -> Result<()> {
        let inner = &*self.inner;
        let started = Instant::now();
        active.seal().map_err(|e| self.poison_sync(e))?;
        inner.counters.fsynced(started.elapsed());
        stats::add(&inner.counters.rolls, 1);
        let end = inner.end_offset.load(Ordering::Relaxed);
        inner.durable_offset.fetch_max(end, Ordering::AcqRel);
        self.write_producer_snapshot(end)
            .map_err(|e| self.poison(e))?;
        let next = Arc::new(
            Segment::create(&*inner.storage, &inner.dir, end, &inner.config)
                .map_err(|e| self.poison(e))?,
        );
        inner
            .storage
            .sync_dir(&inner.dir)
            .map_err(|e| self.poison(Error::io(&inner.dir, e)))?;
        {
            let mut segments = inner.segments.write();
            let mut list = (**segments).clone();
            list.push(next.clone());
            *segments = Arc::new(list);
        }
        self.note_synced(next.base_offset(), 0);
        *active = next;
        self.write_checkpoint(active, false)?;
        self.remove_old_snapshots(end)
    }

    /// Writes the producer state as of `offset` (the end offset) to
    /// `<offset>.snapshot`, synced; the caller syncs the directory. Written
    /// even when empty: it tells the next open that no batch before
    /// `offset` needs replaying.
    fn write_producer_snapshot(&self, offset: u64) -> Result<()> {
        let inner = &*self.inner;
        let bytes = inner.producers.lock().encode(offset);
        let path = inner.dir.join(segment::file_name(offset, SNAPSHOT_SUFFIX));
        let file = inner
            .storage
            .open(&path, true)
            .map_err(|e| Error::io(&path, e))?;
        file.set_len(0).map_err(|e| Error::io(&path, e))?;
        file.write_at(&bytes, 0).map_err(|e| Error::io(&path, e))?;
        file.sync_data().map_err(|e| Error::io(&path, e))
    }

    /// Keeps the two newest snapshots at or below `newest`.
    fn remove_old_snapshots(&self, newest: u64) -> Result<()> {
        let mut offsets = self.snapshot_offsets()?;
        offsets.retain(|&o| o <= newest);
        offsets.sort_unstable();
        let keep_from = offsets.len().saturating_sub(2);
        for offset in &offsets[..keep_from] {
            self.remove_snapshot(*offset)?;
        }
        Ok(())
    }

    fn snapshot_offsets(&self) -> Result<Vec<u64>> {
        let inner = &*self.inner;
        let names = inner
            .storage
            .list_dir(&inner.dir)
            .map_err(|e| Error::io(&inner.dir, e))?;
        Ok(names
            .iter()
            .filter_map(|name| segment::parse_file_name(name, SNAPSHOT_SUFFIX))
            .collect())
    }

    fn remove_snapshot(&self, offset: u64) -> Result<()> {
        let path = self
            .inner
            .dir
            .join(segment::file_name(offset, SNAPSHOT_SUFFIX));
        match self.inner.storage.remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    /// Rebuilds the producer state for the log as it is now: from the newest
    /// snapshot at or below the end offset, replaying the batches after it.
    /// Snapshots past the end (left by a crash or a truncation) are removed.
    fn rebuild_producer_state(&self) -> Result<()> {
        let end = self.end_offset();
        let mut offsets = self.snapshot_offsets()?;
        offsets.sort_unstable_by(|a, b| b.cmp(a));
        let mut state = ProducerStates::default();
        let mut replay_from = self.snapshot().first().map_or(0, |s| s.base_offset());
        for offset in offsets {
            if offset > end {
                self.remove_snapshot(offset)?;
                continue;
            }
            let path = self
                .inner
                .dir
                .join(segment::file_name(offset, SNAPSHOT_SUFFIX));
            let file = self
                .inner
                .storage
                .open(&path, false)
                .map_err(|e| Error::io(&path, e))?;
            let len = file.len().map_err(|e| Error::io(&path, e))?;
            // A snapshot is small; one that claims otherwise is not trusted.
            if len > 64 << 20 {
                continue;
            }
            let mut bytes = vec![0u8; len as usize];
            crate::storage::read_exact_at(&*file, &mut bytes, 0)
                .map_err(|e| Error::io(&path, e))?;
            if let Ok((at, decoded)) = ProducerStates::decode(&bytes)
                && at == offset
            {
                state = decoded;
                replay_from = replay_from.max(offset);
                break;
            }
        }
        let start = replay_from.max(self.start_offset());
        if start < end {
            // A damaged batch ends the replay rather than the open: reads
            // report it where it is, and producers whose batches lie past it
            // lose only the memory of those batches.
            // Headers are enough: the open checked the batches it had to.
            for segment in self.snapshot().iter().filter(|s| s.next_offset() > start) {
                let Ok(mut position) = segment.position_of(start) else {
                    break;
                };
                let mut damaged = false;
                while position < segment.size() {
                    let Ok(header) = segment.read_header(position) else {
                        damaged = true;
                        break;
                    };
                    state.replay(&header);
                    position += u64::from(header.batch_length);
                }
                if damaged {
                    break;
                }
            }
        }
        *self.inner.producers.lock() = state;
        Ok(())
    }

    /// Records the recovery point at the end of `active` (whose bytes must be
    /// synced), keeping the log start offset.
    fn write_checkpoint(&self, active: &Segment, sync: bool) -> Result<()> {
        let state = State {
            clean: false,
            log_start_offset: self.start_offset(),
            segment: active.base_offset(),
            position: active.size(),
            next_offset: active.next_offset(),
        };
        self.inner
            .checkpoint
            .lock()
            .write(state, sync)
            .map_err(|e| self.poison(e))
    }

    /// Makes everything appended so far durable.
    ///
    /// # Errors
    ///
    /// [`Error::Poisoned`] after an earlier failure; [`Error::Io`] if the
    /// fsync fails, which poisons the partition.
    pub fn sync(&self) -> Result<()> {
        self.check_open()?;
        self.sync_to(self.end_offset())
    }

    /// Group commit: returns once every offset below `target` is durable. The
    /// first thread to arrive runs one fsync covering every write made
    /// before it started; threads that wrote meanwhile find their offsets
    /// covered when they get the lock, or run the next fsync themselves.
    fn sync_to(&self, target: u64) -> Result<()> {
        let inner = &*self.inner;
        if inner.durable_offset.load(Ordering::Acquire) >= target {
            return Ok(());
        }
        let _turn = {
            let mut syncing = inner.syncing.lock();
            loop {
                if inner.durable_offset.load(Ordering::Acquire) >= target {
                    return Ok(());
                }
                if inner.poisoned.load(Ordering::Acquire) {
                    return Err(Error::Poisoned {
                        partition: inner.id,
                    });
                }
                if !*syncing {
                    *syncing = true;
                    break SyncTurn(self);
                }
                inner.sync_done.wait(&mut syncing);
            }
        };
        // Everything written before the writer lock is taken here is covered
        // by the fsync below; whoever wrote meanwhile is woken with the rest
        // when it is done, and the next fsync covers them together.
        let (active, end, position) = {
            let active = inner.writer.lock();
            let end = inner.end_offset.load(Ordering::Acquire);
            (active.clone(), end, active.size())
        };
        let batches = stats::get(&inner.counters.batches_appended);
        let started = Instant::now();
        active.sync().map_err(|e| self.poison_sync(e))?;
        self.note_synced(active.base_offset(), position);
        let counters = &inner.counters;
        counters.fsynced(started.elapsed());
        stats::add(&counters.group_commits, 1);
        let previous = counters
            .batches_at_last_commit
            .swap(batches, Ordering::Relaxed);
        stats::add(
            &counters.group_commit_batches,
            batches.saturating_sub(previous),
        );
        inner.durable_offset.fetch_max(end, Ordering::AcqRel);
        let mut checkpoint = inner.checkpoint.lock();
        let current = checkpoint.state();
        if (active.base_offset(), position) > (current.segment, current.position) {
            let state = State {
                position,
                next_offset: end,
                segment: active.base_offset(),
                ..current
            };
            checkpoint.write(state, false).map_err(|e| self.poison(e))?;
        }
        Ok(())
    }

    /// Waits for the fsync turn and takes it, so that no fsync runs while a
    /// truncation or a close changes the files.
    fn exclusive_sync_turn(&self) -> SyncTurn<'_> {
        let mut syncing = self.inner.syncing.lock();
        while *syncing {
            self.inner.sync_done.wait(&mut syncing);
        }
        *syncing = true;
        SyncTurn(self)
    }

    /// Reads the records from `offset` on, in whole batches of at most
    /// `max_bytes` together (but at least one batch, however large).
    ///
    /// Reading at `end_offset()` returns no records. Every batch's checksum
    /// is verified before its records are returned.
    ///
    /// # Errors
    ///
    /// [`Error::OffsetOutOfRange`] when `offset` is below `start_offset()` or
    /// above `end_offset()`; [`Error::Corrupt`] for a batch that fails its
    /// checks.
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<Vec<StoredRecord>> {
        self.check_open()?;
        let mut cursor = BatchCursor::seek(self, offset)?;
        let mut records = Vec::new();
        let mut bytes = 0usize;
        while let Some((header, batch, position)) = cursor.next_batch()? {
            if !records.is_empty() && bytes + batch.len() > max_bytes {
                break;
            }
            let len = batch.len();
            let before = records.len();
            for record in cursor.segment.records_from(position, header, batch, offset) {
                let record =
                    record.map_err(|kind| Error::corrupt(cursor.path(), position, kind))?;
                if record.offset >= offset {
                    records.push(record);
                }
            }
            if records.len() == before {
                // Compaction removed this batch's records from `offset` on
                // (it keeps the batch's offset span): it does not count.
                continue;
            }
            bytes += len;
            if bytes >= max_bytes {
                break;
            }
        }
        Ok(records)
    }

    /// Streams whole batches, starting with the one holding `offset`, to
    /// `out` — a socket or a file — with `sendfile`, so the bytes go from the
    /// page cache to `out` without passing through this process. At most
    /// `max_bytes` are sent, but always at least one batch, and only batches
    /// of one segment per call. Each batch's checksum is verified first.
    /// Returns the range sent; call again from its `next_offset` to go on.
    /// The bytes are batches in the format of `FORMAT.md`, for a consumer on
    /// the other side to decode; a record before `offset` in the first batch
    /// is included.
    ///
    /// Where `sendfile` cannot write to `out`, the bytes are written to it
    /// from the mapped segment instead.
    ///
    /// # Errors
    ///
    /// As [`Partition::read`], and [`Error::Io`] for a failed write to `out`.
    pub fn send_to<W: std::io::Write + AsFd>(
        &self,
        offset: u64,
        max_bytes: u64,
        out: &mut W,
    ) -> Result<SentRange> {
        self.check_open()?;
        let mut cursor = BatchCursor::seek(self, offset)?;
        let segment = cursor.segment.clone();
        let mut range = SentRange {
            base_offset: offset,
            next_offset: offset,
            bytes: 0,
        };
        let mut first_position = None;
        let mut chunks = Vec::new();
        while let Some((header, batch, position)) = cursor.next_batch()? {
            let len = batch.len() as u64;
            let contiguous = first_position.is_none_or(|p: u64| p + range.bytes == position);
            if !Arc::ptr_eq(&cursor.segment, &segment)
                || !contiguous
                || (range.bytes > 0 && range.bytes + len > max_bytes)
            {
                break;
            }
            if first_position.is_none() {
                first_position = Some(position);
                range.base_offset = header.base_offset;
            }
            range.bytes += len;
            range.next_offset = header.next_offset();
            chunks.push(batch);
            if range.bytes >= max_bytes {
                break;
            }
        }
        let Some(position) = first_position else {
            return Ok(range);
        };
        let path = segment.log_path();
        let sent = segment
            .log_file()
            .send_to(position, range.bytes, out.as_fd())
            .map_err(|e| Error::io(path, e))?;
        if !sent {
            for chunk in chunks {
                out.write_all(&chunk).map_err(|e| Error::io(path, e))?;
            }
        }
        Ok(range)
    }

    /// An iterator over the batches holding the records from `offset` on,
    /// each with its records as borrowed views, built without reference
    /// counting or allocation per record: the fastest way to read a
    /// partition. See [`Batches`].
    pub fn batches(&self, offset: u64) -> Batches {
        Batches::new(self.clone(), offset)
    }

    /// An iterator over the records from `offset` to the end offset as it is
    /// when each item is asked for. After it returns `None`, a later call to
    /// `next` returns records appended since.
    pub fn reader(&self, offset: u64) -> Reader {
        Reader {
            partition: self.clone(),
            next_offset: offset,
            cursor: None,
            records: None,
            failed: false,
        }
    }

    /// Blocks until `end_offset() > offset` or `timeout` passes; returns
    /// whether a record at `offset` (or later) is available. For tailing the
    /// log without polling.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] if the log is closed while waiting.
    pub fn wait_for(&self, offset: u64, timeout: Duration) -> Result<bool> {
        let inner = &*self.inner;
        // A timeout too long to add to now means no deadline.
        let deadline = Instant::now().checked_add(timeout);
        let mut guard = inner.tail_lock.lock();
        inner.waiters.fetch_add(1, Ordering::SeqCst);
        // Pairs with the fence in `notify_tail`: either this thread sees the
        // new end offset, or the appender sees this waiter and wakes it.
        std::sync::atomic::fence(Ordering::SeqCst);
        let result = loop {
            if self.end_offset() > offset {
                break Ok(true);
            }
            if inner.closed.load(Ordering::Acquire) {
                break Err(Error::Closed);
            }
            match deadline {
                Some(deadline) => {
                    if inner.tail.wait_until(&mut guard, deadline).timed_out() {
                        break Ok(self.end_offset() > offset);
                    }
                }
                None => inner.tail.wait(&mut guard),
            }
        };
        inner.waiters.fetch_sub(1, Ordering::SeqCst);
        result
    }

    fn notify_tail(&self) {
        let inner = &*self.inner;
        std::sync::atomic::fence(Ordering::SeqCst);
        if inner.waiters.load(Ordering::SeqCst) > 0 {
            // Taking the lock orders this wake-up after a waiter's check.
            let guard = inner.tail_lock.lock();
            inner.tail.notify_all();
            drop(guard);
            #[cfg(feature = "async")]
            inner.wakers.wake_all(&inner.waiters);
        }
    }

    /// The wakers of waiting tasks and the waiter count that appends check.
    #[cfg(feature = "async")]
    pub(crate) fn tail_wakers(&self) -> (&crate::tail::Wakers, &AtomicUsize) {
        (&self.inner.wakers, &self.inner.waiters)
    }

    /// The first offset whose record has a timestamp at or after
    /// `timestamp_ms`, or `None` if there is none.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] if a batch on the way fails its checks.
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<u64>> {
        self.check_open()?;
        let start = self.start_offset();
        for segment in self.snapshot().iter() {
            if segment.max_timestamp() < timestamp_ms || segment.next_offset() <= start {
                continue;
            }
            let mut position = segment.position_for_timestamp(timestamp_ms)?;
            let size = segment.size();
            while position < size {
                let (header, batch) = segment.read_batch(position)?;
                self.inner.counters.read(batch.len());
                if header.max_timestamp >= timestamp_ms && header.last_offset() >= start {
                    for record in Records::new(header, batch) {
                        let record = record
                            .map_err(|kind| Error::corrupt(segment.log_path(), position, kind))?;
                        if record.timestamp >= timestamp_ms && record.offset >= start {
                            return Ok(Some(record.offset));
                        }
                    }
                }
                position += u64::from(header.batch_length);
            }
        }
        Ok(None)
    }

    /// Drops every record at and after `offset`, so that `end_offset()`
    /// becomes `offset`; a batch that straddles `offset` is rewritten with
    /// its records below it. A no-op when `offset >= end_offset()`; below
    /// `start_offset()` the partition is emptied and restarts at `offset`.
    /// The truncation is durable when this returns.
    ///
    /// Replication uses this to cut a follower back to the leader's log.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] (which poisons the partition), [`Error::Poisoned`],
    /// [`Error::Closed`].
    pub fn truncate_to(&self, offset: u64) -> Result<()> {
        let inner = &*self.inner;
        let _turn = self.exclusive_sync_turn();
        let mut active = inner.writer.lock();
        self.check_writable()?;
        if offset >= inner.end_offset.load(Ordering::Acquire) {
            return Ok(());
        }
        inner
            .cleaner
            .truncate(&*inner.storage, &inner.dir, offset)
            .map_err(|e| self.poison(e))?;
        let segments = self.snapshot();
        let keep = segments.iter().filter(|s| s.base_offset() < offset).count();
        let start = self.start_offset();
        let result = if keep == 0 || offset <= start {
            self.truncate_fully(&segments, offset)
        } else {
            self.truncate_within(&segments, keep, offset)
        };
        let new_list = result.map_err(|e| self.poison_sync(e))?;
        if offset < start {
            inner.start_offset.store(offset, Ordering::Release);
        }
        self.install_truncated(&mut active, new_list, offset)
    }

    /// Publishes the segments a truncation left, ending at `end`, and
    /// rebuilds what depends on them. The caller holds the writer lock and
    /// the fsync turn.
    fn install_truncated(
        &self,
        active: &mut Arc<Segment>,
        list: Vec<Arc<Segment>>,
        end: u64,
    ) -> Result<()> {
        let inner = &*self.inner;
        let last = list.last().expect("a partition keeps a segment").clone();
        *inner.segments.write() = Arc::new(list);
        *active = last.clone();
        // The truncation left every kept byte synced.
        *inner.synced_point.lock() = (last.base_offset(), last.size());
        inner.end_offset.store(end, Ordering::Release);
        inner.durable_offset.store(end, Ordering::Release);
        inner.truncations.fetch_add(1, Ordering::AcqRel);
        self.write_checkpoint(&last, true)?;
        self.rebuild_producer_state().map_err(|e| self.poison(e))
    }

    fn truncate_fully(&self, segments: &[Arc<Segment>], offset: u64) -> Result<Vec<Arc<Segment>>> {
        let inner = &*self.inner;
        let first = segments[0].base_offset();
        // First the recovery point goes below everything; then files go.
        inner.checkpoint.lock().write(
            State {
                clean: false,
                log_start_offset: offset,
                segment: first.min(offset),
                position: 0,
                next_offset: offset,
            },
            true,
        )?;
        inner.start_offset.store(offset, Ordering::Release);
        for segment in segments.iter().rev() {
            self.remove_files(segment)?;
        }
        let fresh = Arc::new(Segment::create(
            &*inner.storage,
            &inner.dir,
            offset,
            &inner.config,
        )?);
        self.sync_dir()?;
        Ok(vec![fresh])
    }

    fn truncate_within(
        &self,
        segments: &[Arc<Segment>],
        keep: usize,
        offset: u64,
    ) -> Result<Vec<Arc<Segment>>> {
        let inner = &*self.inner;
        let cut_segment = segments[keep - 1].clone();
        let position = cut_segment.position_of(offset)?;
        {
            let mut checkpoint = inner.checkpoint.lock();
            let current = checkpoint.state();
            let synced = if current.segment == cut_segment.base_offset() {
                current.position.min(position)
            } else {
                position
            };
            checkpoint.write(
                State {
                    segment: cut_segment.base_offset(),
                    position: synced,
                    next_offset: offset.min(current.next_offset),
                    ..current
                },
                true,
            )?;
        }
        // Later segments go first, so a crash leaves a prefix of the log.
        for segment in segments[keep..].iter().rev() {
            self.remove_files(segment)?;
        }
        self.sync_dir()?;
        let mut list: Vec<Arc<Segment>> = segments[..keep - 1].to_vec();
        let cut = self.rewrite_prefix(&cut_segment, position, offset)?;
        if cut.next_offset() < offset {
            // Compaction removed the records just below `offset`: the end
            // offset would rest on nothing but memory, and a reopen would
            // give those offsets again. A segment that starts at `offset`
            // records it in its name.
            cut.seal()?;
            list.push(Arc::new(cut));
            list.push(Arc::new(Segment::create(
                &*inner.storage,
                &inner.dir,
                offset,
                &inner.config,
            )?));
            self.sync_dir()?;
        } else {
            list.push(Arc::new(cut));
        }
        Ok(list)
    }

    /// Writes a new file holding the segment's bytes below `position` plus the
    /// records below `offset` of the batch at `position`, and renames it over
    /// the segment. Readers of the old file keep their (now unlinked) copy.
    fn rewrite_prefix(&self, segment: &Segment, position: u64, offset: u64) -> Result<Segment> {
        let inner = &*self.inner;
        let path = segment.log_path().to_path_buf();
        let temp = PathBuf::from(format!("{}{}", path.display(), recovery::REWRITE_SUFFIX));
        let file = inner
            .storage
            .open(&temp, true)
            .map_err(|e| Error::io(&temp, e))?;
        file.set_len(0).map_err(|e| Error::io(&temp, e))?;
        let mut copied = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        while copied < position {
            let n = (position - copied).min(buf.len() as u64) as usize;
            crate::storage::read_exact_at(&**segment.log_file(), &mut buf[..n], copied)
                .map_err(|e| Error::io(&path, e))?;
            file.write_at(&buf[..n], copied)
                .map_err(|e| Error::io(&temp, e))?;
            copied += n as u64;
        }
        if position < segment.size() {
            let (header, batch) = segment.read_batch(position)?;
            if header.base_offset < offset
                && let Some(kept) = self.batch_prefix(segment, header, batch, position, offset)?
            {
                file.write_at(kept.bytes(), position)
                    .map_err(|e| Error::io(&temp, e))?;
            }
        }
        file.sync_data().map_err(|e| Error::io(&temp, e))?;
        drop(file);
        inner
            .storage
            .rename(&temp, &path)
            .map_err(|e| Error::io(&path, e))?;
        // Readers may still map the old indexes: unlink them (the mappings
        // keep their files alive) so the rebuild writes new files instead of
        // shrinking mapped ones under the readers.
        for index in [&segment.index_path(), &segment.time_index_path()] {
            match inner.storage.remove_file(index) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(index, e)),
            }
        }
        self.sync_dir()?;
        let len = inner
            .storage
            .open(&path, false)
            .and_then(|f| f.len())
            .map_err(|e| Error::io(&path, e))?;
        scan_segment(
            &*inner.storage,
            &inner.dir,
            &inner.config,
            segment.base_offset(),
            len,
            len,
            true,
            segment.base_offset(),
            None,
            &mut RecoveryReport::default(),
        )
    }

    /// The records of a batch below `offset`, as a batch with the same base
    /// offset, offsets, timestamps and producer; `None` when there is none
    /// (compaction may have removed a batch's first records).
    fn batch_prefix(
        &self,
        segment: &Segment,
        header: BatchHeader,
        batch: Bytes,
        position: u64,
        offset: u64,
    ) -> Result<Option<EncodedBatch>> {
        let mut records = Vec::new();
        let mut deltas = Vec::new();
        for record in Records::new(header, batch) {
            let record =
                record.map_err(|kind| Error::corrupt(segment.log_path(), position, kind))?;
            if record.offset >= offset {
                break;
            }
            deltas.push(record.offset - header.base_offset);
            records.push(Record {
                key: record.key,
                value: record.value,
                timestamp: Some(record.timestamp),
                headers: record.headers,
            });
        }
        if records.is_empty() {
            return Ok(None);
        }
        let mut kept = EncodedBatch::encode_with_deltas(
            &records,
            |i| deltas[i],
            header.first_timestamp,
            u32::MAX,
        )
        .map_err(|_| {
            Error::corrupt(
                segment.log_path(),
                position,
                CorruptKind::Record("batch cannot be rewritten"),
            )
        })?;
        kept.set_producer(ProducerStamp {
            producer_id: header.producer_id,
            producer_epoch: header.producer_epoch,
            base_sequence: header.base_sequence,
        });
        kept.set_leader_epoch(header.leader_epoch);
        // The rewritten batch keeps its codec; the level is not recorded, so
        // a zstd batch is recompressed at the default level.
        kept.compress(match header.codec() {
            crate::codec::CODEC_LZ4 => crate::Compression::Lz4,
            crate::codec::CODEC_ZSTD => crate::Compression::Zstd { level: 3 },
            _ => crate::Compression::None,
        });
        kept.seal(header.base_offset);
        Ok(Some(kept))
    }

    fn remove_files(&self, segment: &Segment) -> Result<()> {
        for path in segment.paths() {
            match self.inner.storage.remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        Ok(())
    }

    fn sync_dir(&self) -> Result<()> {
        self.inner
            .storage
            .sync_dir(&self.inner.dir)
            .map_err(|e| Error::io(&self.inner.dir, e))
    }

    /// Advances the log start offset to `offset` (Kafka's DeleteRecords):
    /// records below it can no longer be read, and segments that hold only
    /// such records are deleted. Durable when this returns.
    ///
    /// # Errors
    ///
    /// [`Error::OffsetOutOfRange`] when `offset` is above `end_offset()`.
    pub fn delete_records_before(&self, offset: u64) -> Result<()> {
        let inner = &*self.inner;
        let active = inner.writer.lock();
        self.check_writable()?;
        let end = self.end_offset();
        if offset > end {
            return Err(Error::OffsetOutOfRange {
                requested: offset,
                start: self.start_offset(),
                end,
            });
        }
        if offset <= self.start_offset() {
            return Ok(());
        }
        {
            let mut checkpoint = inner.checkpoint.lock();
            let state = State {
                log_start_offset: offset,
                ..checkpoint.state()
            };
            checkpoint.write(state, true).map_err(|e| self.poison(e))?;
        }
        inner.start_offset.store(offset, Ordering::Release);
        self.delete_old_segments(&active, now_ms(), false)?;
        Ok(())
    }

    /// Deletes old segments by the retention limits (and those wholly below
    /// the start offset); returns how many were deleted. The active segment
    /// is never deleted, and a compacted log applies no limit.
    pub(crate) fn enforce_retention_at(&self, now_ms: i64) -> Result<usize> {
        let active = self.inner.writer.lock();
        self.check_writable()?;
        let apply_limits = self.inner.config.cleanup == Cleanup::Delete;
        self.delete_old_segments(&active, now_ms, apply_limits)
    }

    fn delete_old_segments(
        &self,
        active: &Arc<Segment>,
        now_ms: i64,
        apply_limits: bool,
    ) -> Result<usize> {
        let inner = &*self.inner;
        let segments = self.snapshot();
        debug_assert!(Arc::ptr_eq(segments.last().expect("a segment"), active));
        let closed = segments.len() - 1;
        let start = self.start_offset();
        let mut delete = 0;
        while delete < closed && segments[delete + 1].base_offset() <= start {
            delete += 1;
        }
        if apply_limits {
            if let Some(age) = inner.config.retention_age {
                let age_ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
                let cutoff = now_ms.saturating_sub(age_ms);
                while delete < closed && segments[delete].max_timestamp() < cutoff {
                    delete += 1;
                }
            }
            if let Some(limit) = inner.config.retention_bytes {
                let total: u64 = segments[delete..].iter().map(|s| s.size()).sum();
                let mut excess = total.saturating_sub(limit);
                while delete < closed && excess >= segments[delete].size() {
                    excess -= segments[delete].size();
                    delete += 1;
                }
            }
        }
        if delete == 0 {
            return Ok(0);
        }
        let remaining = segments[delete..].to_vec();
        let new_start = remaining[0].base_offset().max(start);
        *inner.segments.write() = Arc::new(remaining);
        inner.start_offset.store(new_start, Ordering::Release);
        for segment in &segments[..delete] {
            self.remove_files(segment).map_err(|e| self.poison(e))?;
        }
        self.sync_dir().map_err(|e| self.poison(e))?;
        let mut checkpoint = inner.checkpoint.lock();
        let state = State {
            log_start_offset: new_start,
            ..checkpoint.state()
        };
        checkpoint.write(state, false).map_err(|e| self.poison(e))?;
        Ok(delete)
    }

    /// Syncs and seals the active segment and marks the shutdown clean, so
    /// the next open reads no segment data. Further calls are no-ops.
    pub(crate) fn close(&self) -> Result<()> {
        let inner = &*self.inner;
        let _turn = self.exclusive_sync_turn();
        let active = inner.writer.lock();
        if inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.notify_all_closed();
        if inner.poisoned.load(Ordering::Acquire) {
            // Nothing is marked clean: the next open validates what is there.
            return Err(Error::Poisoned {
                partition: inner.id,
            });
        }
        let started = Instant::now();
        active.seal().map_err(|e| self.poison_sync(e))?;
        inner.counters.fsynced(started.elapsed());
        let end = self.end_offset();
        self.write_producer_snapshot(end)?;
        self.sync_dir()?;
        self.remove_old_snapshots(end)?;
        inner
            .durable_offset
            .fetch_max(self.end_offset(), Ordering::AcqRel);
        let state = State {
            clean: true,
            log_start_offset: self.start_offset(),
            segment: active.base_offset(),
            position: active.size(),
            next_offset: active.next_offset(),
        };
        inner.checkpoint.lock().write(state, true)
    }

    fn notify_all_closed(&self) {
        let guard = self.inner.tail_lock.lock();
        self.inner.tail.notify_all();
        drop(guard);
        #[cfg(feature = "async")]
        self.inner.wakers.wake_all(&self.inner.waiters);
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub(crate) fn storage(&self) -> &Arc<dyn Storage> {
        &self.inner.storage
    }

    pub(crate) fn config(&self) -> &Config {
        &self.inner.config
    }

    pub(crate) fn cleaner(&self) -> &Cleaner {
        &self.inner.cleaner
    }

    /// Counts truncations, so that work begun before one can tell.
    pub(crate) fn truncations(&self) -> u64 {
        self.inner.truncations.load(Ordering::Acquire)
    }

    /// Takes the writer lock for the cleaner's swap (`src/cleaner`).
    pub(crate) fn lock_for_swap(&self) -> Result<SwapLock<'_>> {
        let active = self.inner.writer.lock();
        self.check_writable()?;
        Ok(SwapLock {
            partition: self,
            active,
        })
    }

    #[cfg(test)]
    #[allow(dead_code, reason = "for fault-injection tests")]
    pub(crate) fn is_poisoned(&self) -> bool {
        self.inner.poisoned.load(Ordering::Acquire)
    }
}

/// What the replication module needs of a partition: appends stamped with
/// a leader epoch, batches read and appended as they are stored, and the
/// files of the partition's directory.
#[cfg(feature = "replication")]
impl Partition {
    /// The partition's durability policy.
    pub(crate) fn durability(&self) -> Durability {
        self.inner.config.durability
    }

    /// Drops every record and starts the partition again, empty, at
    /// `offset` (which may lie past the end), with its producer state
    /// forgotten: for a follower whose leader no longer holds the records
    /// it lacks (Kafka's truncate-fully-and-start-at).
    pub(crate) fn reset_to(&self, offset: u64) -> Result<()> {
        let inner = &*self.inner;
        let _turn = self.exclusive_sync_turn();
        let mut active = inner.writer.lock();
        self.check_writable()?;
        if offset >= u64::MAX - 1 {
            return Err(Error::OffsetOutOfRange {
                requested: offset,
                start: self.start_offset(),
                end: self.end_offset(),
            });
        }
        inner
            .cleaner
            .truncate(&*inner.storage, &inner.dir, 0)
            .map_err(|e| self.poison(e))?;
        for snapshot in self.snapshot_offsets()? {
            self.remove_snapshot(snapshot)?;
        }
        let segments = self.snapshot();
        let list = self
            .truncate_fully(&segments, offset)
            .map_err(|e| self.poison_sync(e))?;
        self.install_truncated(&mut active, list, offset)
    }

    /// Appends `records` as one batch stamped with `leader_epoch` (and a
    /// producer, for idempotence) without waiting for durability. A
    /// producer's retry is answered with the original offsets.
    pub(crate) fn write_stamped(
        &self,
        records: &[Record],
        producer: Option<ProducerStamp>,
        leader_epoch: i32,
    ) -> Result<Appended> {
        let (batch, uncompressed) = self.encode(records, producer, Some(leader_epoch))?;
        self.write_encoded(batch, uncompressed)
    }

    /// Returns once every offset below `offset` is durable, if the
    /// partition's durability is [`Durability::Sync`]; at once otherwise.
    pub(crate) fn sync_for_durability(&self, offset: u64) -> Result<()> {
        if self.inner.config.durability == Durability::Sync {
            self.sync_to(offset.min(self.end_offset()))?;
        }
        Ok(())
    }

    /// Whole stored batches, verified, from the one holding `offset`: at
    /// most `max_bytes` together but at least one.
    pub(crate) fn read_batches(&self, offset: u64, max_bytes: usize) -> Result<Vec<Bytes>> {
        self.check_open()?;
        let mut cursor = BatchCursor::seek(self, offset)?;
        let mut batches = Vec::new();
        let mut bytes = 0usize;
        while let Some((_, batch, _)) = cursor.next_batch()? {
            if !batches.is_empty() && bytes + batch.len() > max_bytes {
                break;
            }
            bytes += batch.len();
            batches.push(batch);
            if bytes >= max_bytes {
                break;
            }
        }
        Ok(batches)
    }

    /// Appends batches as another replica stored them, keeping their
    /// offsets, then waits for the configured durability. Each batch is
    /// verified and must start at the end offset; a batch that ends at or
    /// below the end offset is already here and skipped. Returns the
    /// headers of the batches appended.
    pub(crate) fn append_replicated(&self, batches: &[Bytes]) -> Result<Vec<BatchHeader>> {
        let inner = &*self.inner;
        let max = inner.config.max_batch_bytes;
        let mut appended = Vec::with_capacity(batches.len());
        {
            let mut active = inner.writer.lock();
            self.check_writable()?;
            for bytes in batches {
                let header = crate::record::batch::verify_batch(bytes, max).map_err(|kind| {
                    Error::Corrupt {
                        path: inner.dir.clone(),
                        position: 0,
                        kind,
                    }
                })?;
                let end = inner.end_offset.load(Ordering::Relaxed);
                if header.next_offset() <= end {
                    continue;
                }
                if header.base_offset != end || header.last_offset() == u64::MAX {
                    return Err(Error::Corrupt {
                        path: inner.dir.clone(),
                        position: 0,
                        kind: CorruptKind::OffsetOrder {
                            expected_at_least: end,
                            found: header.base_offset,
                        },
                    });
                }
                self.put_sealed(&mut active, bytes, header)?;
                inner.counters.appended(
                    u64::from(header.record_count),
                    bytes.len() as u64,
                    bytes.len() as u64,
                );
                appended.push(header);
            }
        }
        if !appended.is_empty() {
            self.notify_tail();
            self.sync_for_durability(self.end_offset())?;
        }
        Ok(appended)
    }
}

/// A partition under its writer lock, for the cleaner's swap: nothing
/// appends, rolls, truncates or deletes segments while it is held.
pub(crate) struct SwapLock<'a> {
    partition: &'a Partition,
    active: parking_lot::MutexGuard<'a, Arc<Segment>>,
}

impl SwapLock<'_> {
    pub(crate) fn segments(&self) -> Arc<Vec<Arc<Segment>>> {
        self.partition.snapshot()
    }

    /// Makes the checkpoint durable with its recovery point in the active
    /// segment, so that no open looks for synced bytes in a closed segment
    /// the swap replaces (the durable recovery point may still name the
    /// segment that was active before the last roll).
    pub(crate) fn pin_recovery_point(&self) -> Result<()> {
        let base = self.active.base_offset();
        let mut checkpoint = self.partition.inner.checkpoint.lock();
        let current = checkpoint.state();
        let state = if current.segment >= base {
            current
        } else {
            State {
                segment: base,
                position: 0,
                next_offset: base,
                ..current
            }
        };
        checkpoint
            .write(state, true)
            .map_err(|e| self.partition.poison(e))
    }

    /// Publishes a new segment list to readers; the active segment stays.
    pub(crate) fn install(self, list: Vec<Arc<Segment>>) {
        assert!(
            list.last()
                .is_some_and(|last| Arc::ptr_eq(last, &self.active)),
            "a swap keeps the active segment"
        );
        *self.partition.inner.segments.write() = Arc::new(list);
    }

    pub(crate) fn poison(&self, error: Error) -> Error {
        self.partition.poison(error)
    }
}

/// Row 11 of the recovery table: a partition that failed a write or an
/// fsync left a marker of where its data was last known good. Cut the named
/// segment there and remove later segments, before anything else looks at
/// the files; bytes past the cut may be readable now yet never reach the
/// disk.
fn apply_poison_marker(
    storage: &dyn Storage,
    dir: &Path,
    report: &mut RecoveryReport,
) -> Result<()> {
    let Some((segment, position)) = poison::read(storage, dir).map_err(|e| Error::io(dir, e))?
    else {
        let marker = dir.join(poison::FILE_NAME);
        if storage.exists(&marker).map_err(|e| Error::io(&marker, e))? {
            storage
                .remove_file(&marker)
                .map_err(|e| Error::io(&marker, e))?;
        }
        return Ok(());
    };
    let names = storage.list_dir(dir).map_err(|e| Error::io(dir, e))?;
    for name in &names {
        let base = match recovery::classify(name) {
            recovery::Entry::Log(base) | recovery::Entry::Index(base) => base,
            _ => continue,
        };
        if base > segment {
            let path = dir.join(name);
            if name.ends_with(segment::LOG_SUFFIX) {
                let len = storage
                    .open(&path, false)
                    .and_then(|f| f.len())
                    .map_err(|e| Error::io(&path, e))?;
                report.truncated_bytes += len;
            }
            storage
                .remove_file(&path)
                .map_err(|e| Error::io(&path, e))?;
        }
    }
    let path = dir.join(segment::file_name(segment, segment::LOG_SUFFIX));
    if storage.exists(&path).map_err(|e| Error::io(&path, e))? {
        let file = storage
            .open(&path, false)
            .map_err(|e| Error::io(&path, e))?;
        let len = file.len().map_err(|e| Error::io(&path, e))?;
        // Cut and sync even when the file already looks cut: the length it
        // shows may be one whose fsync failed, which need not be on disk.
        file.set_len(position).map_err(|e| Error::io(&path, e))?;
        file.sync_data().map_err(|e| Error::io(&path, e))?;
        report.truncated_bytes += len.saturating_sub(position);
    }
    let marker = dir.join(poison::FILE_NAME);
    storage.sync_dir(dir).map_err(|e| Error::io(dir, e))?;
    storage
        .remove_file(&marker)
        .map_err(|e| Error::io(&marker, e))?;
    storage.sync_dir(dir).map_err(|e| Error::io(dir, e))
}

/// Opens one segment at startup by the recovery table.
#[allow(clippy::too_many_arguments)]
fn open_segment(
    storage: &dyn Storage,
    dir: &Path,
    config: &Config,
    base: u64,
    is_last: bool,
    next_base: Option<u64>,
    previous_next: Option<u64>,
    point: Option<RecoveryPoint>,
    state: Option<State>,
    report: &mut RecoveryReport,
) -> Result<Segment> {
    let SegmentFiles {
        log,
        log_path,
        index,
        time_index,
    } = Segment::open_files(storage, dir, base, config)?;
    let file_len = log.len().map_err(|e| Error::io(&log_path, e))?;
    let min_offset = previous_next.unwrap_or(base).max(base);
    let mut plan = recovery::plan_segment(base, is_last, file_len, point);
    // A clean mark whose next offset lies below its segment's base cannot be
    // true: the segment is scanned instead.
    if plan == SegmentPlan::TrustClean && state.is_some_and(|s| s.next_offset < base) {
        plan = SegmentPlan::Scan {
            synced_position: 0,
            is_last,
        };
    }
    let (size, next_offset) = match plan {
        SegmentPlan::TrustClean => {
            report.clean = true;
            (
                file_len,
                state.expect("a clean plan has a checkpoint").next_offset,
            )
        }
        SegmentPlan::TrustSynced => (file_len, next_base.unwrap_or(base).max(base)),
        SegmentPlan::Scan {
            synced_position,
            is_last,
        } => {
            if !recovery::synced_bytes_present(file_len, synced_position) {
                return Err(Error::corrupt(
                    &log_path,
                    file_len,
                    CorruptKind::Truncated {
                        needed: synced_position,
                        available: file_len,
                    },
                ));
            }
            drop((log, index, time_index));
            return scan_segment(
                storage,
                dir,
                config,
                base,
                file_len,
                synced_position,
                is_last,
                min_offset,
                next_base,
                report,
            );
        }
    };
    if let (Some(index), Some(time_index)) = (index, time_index)
        && indexes_check_out(&index, &time_index, base, size, next_offset)
    {
        return Segment::from_parts(
            log_path,
            log,
            base,
            size,
            next_offset,
            index,
            time_index,
            config,
        );
    }
    // Row 3: a trusted segment whose indexes do not check out is scanned
    // like synced data.
    report.indexes_rebuilt += 1;
    scan_segment(
        storage, dir, config, base, file_len, file_len, is_last, min_offset, next_base, report,
    )
}

/// Reads every batch of a segment, rebuilding its indexes, and applies rows
/// 5 and 6 of the recovery table to the first invalid batch.
#[allow(clippy::too_many_arguments)]
fn scan_segment(
    storage: &dyn Storage,
    dir: &Path,
    config: &Config,
    base: u64,
    file_len: u64,
    synced_position: u64,
    is_last: bool,
    min_offset: u64,
    next_base: Option<u64>,
    report: &mut RecoveryReport,
) -> Result<Segment> {
    report.segments_scanned += 1;
    let SegmentFiles { log, log_path, .. } = Segment::open_files(storage, dir, base, config)?;
    let (index, time_index): (Index<OffsetEntry>, Index<TimeEntry>) =
        Segment::create_indexes(storage, dir, base, config)?;
    let segment = Segment::from_parts(
        log_path.clone(),
        log.clone(),
        base,
        0,
        base,
        index,
        time_index,
        config,
    )?;
    let mut position = 0;
    let mut expected = min_offset;
    while position < file_len {
        // Below the synced position the bytes were made durable before the
        // checkpoint said so: only the headers are walked, to rebuild the
        // indexes. Their checksums are verified by the first read of each
        // batch, as every read's are, and by `durable-log verify`. The last
        // batch below it, whose header gives the offset the segment ends
        // at, and every batch after it are verified in full (after it, to
        // find where a torn tail starts).
        let checked = segment
            .read_header_within(position, file_len)
            .and_then(|header| {
                if position + u64::from(header.batch_length) < synced_position {
                    Ok(header)
                } else {
                    segment
                        .read_batch_within(position, file_len)
                        .map(|(header, _)| header)
                }
            })
            .and_then(|header| {
                if header.base_offset < expected {
                    Err(Error::corrupt(
                        &log_path,
                        position,
                        CorruptKind::OffsetOrder {
                            expected_at_least: expected,
                            found: header.base_offset,
                        },
                    ))
                } else if !segment.offsets_fit(header.last_offset()) {
                    Err(Error::corrupt(
                        &log_path,
                        position,
                        CorruptKind::Record("offset too far from the segment base"),
                    ))
                } else if next_base.is_some_and(|next| header.next_offset() > next) {
                    // A segment ends before the next one begins.
                    Err(Error::corrupt(
                        &log_path,
                        position,
                        CorruptKind::Record("batch runs into the next segment's offsets"),
                    ))
                } else {
                    Ok(header)
                }
            });
        match checked {
            Ok(header) => {
                segment.append_meta(BatchMeta { header, position }, config.index_interval_bytes)?;
                position += u64::from(header.batch_length);
                expected = header.next_offset();
            }
            Err(error @ Error::Corrupt { .. }) => {
                match recovery::invalid_batch(is_last, position, synced_position) {
                    BatchDecision::Fail => return Err(error),
                    BatchDecision::TruncateTail => {
                        // Nothing but zeros after the last batch is space
                        // written ahead for appends, not torn data: cut, but
                        // not counted.
                        let zeros = end_of_nonzero(&*log, position, file_len)
                            .map_err(|e| Error::io(&log_path, e))?
                            == position;
                        log.set_len(position).map_err(|e| Error::io(&log_path, e))?;
                        log.sync_data().map_err(|e| Error::io(&log_path, e))?;
                        if !zeros {
                            report.truncated_bytes += file_len - position;
                        }
                        break;
                    }
                }
            }
            Err(other) => return Err(other),
        }
    }
    if !is_last {
        segment.seal()?;
    }
    Ok(segment)
}

/// The position after the last non-zero byte of `file` in
/// `position..end`, or `position` if they are all zero. Holes (space never
/// written, as reserved ahead of appends) are skipped without reading them.
fn end_of_nonzero(
    file: &dyn crate::storage::StorageFile,
    position: u64,
    end: u64,
) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut last = position;
    let mut from = position;
    while from < end {
        let Some(data) = file.data_after(from)?.filter(|data| data.end > from) else {
            break;
        };
        let mut at = data.start.max(from);
        let stop = data.end.min(end);
        while at < stop {
            let n = (stop - at).min(buf.len() as u64) as usize;
            crate::storage::read_exact_at(file, &mut buf[..n], at)?;
            // Usually all zeros (space written ahead): checked a word at a
            // time before any byte is looked for.
            if !all_zero(&buf[..n])
                && let Some(i) = buf[..n].iter().rposition(|&b| b != 0)
            {
                last = at + i as u64 + 1;
            }
            at += n as u64;
        }
        from = data.end.max(at);
    }
    Ok(last)
}

/// True when every byte of `bytes` is zero. Folds whole words without
/// stopping early, which the compiler turns into vector instructions: many
/// times faster than a byte-by-byte search on the zeros written ahead.
fn all_zero(bytes: &[u8]) -> bool {
    let mut words = bytes.chunks_exact(16);
    let folded = words.by_ref().fold(0u128, |acc, word| {
        acc | u128::from_ne_bytes(word.try_into().expect("16 bytes"))
    });
    folded == 0 && words.remainder().iter().all(|&b| b == 0)
}

/// Rows 2 and 3: an index checks out when its entries increase, point
/// inside the segment and stay within its offsets; a non-empty segment must
/// have both indexes non-empty (the first batch is always indexed and a
/// sealed segment always has a time entry).
fn indexes_check_out(
    index: &Index<OffsetEntry>,
    time_index: &Index<TimeEntry>,
    base: u64,
    size: u64,
    next_offset: u64,
) -> bool {
    let span = next_offset.saturating_sub(base);
    if size > 0 && (index.len() == 0 || time_index.len() == 0) {
        return false;
    }
    let mut previous: Option<OffsetEntry> = None;
    for i in 0..index.len() {
        let Ok(entry) = index.get(i) else {
            return false;
        };
        let increasing = previous.is_none_or(|p| {
            entry.relative_offset > p.relative_offset && entry.position > p.position
        });
        let first_at_zero = previous.is_some() || entry.position == 0;
        if !increasing
            || !first_at_zero
            || u64::from(entry.position) >= size
            || u64::from(entry.relative_offset) >= span
        {
            return false;
        }
        previous = Some(entry);
    }
    let mut previous: Option<TimeEntry> = None;
    for i in 0..time_index.len() {
        let Ok(entry) = time_index.get(i) else {
            return false;
        };
        let increasing = previous.is_none_or(|p| {
            entry.timestamp > p.timestamp && entry.relative_offset >= p.relative_offset
        });
        if !increasing || u64::from(entry.relative_offset) >= span {
            return false;
        }
        previous = Some(entry);
    }
    true
}

/// The right to run an fsync (or to change files under the syncers). When
/// it ends, every thread waiting for an fsync wakes: those it covered
/// return, and one of the others takes the next turn.
struct SyncTurn<'a>(&'a Partition);

impl Drop for SyncTurn<'_> {
    fn drop(&mut self) {
        let inner = &*self.0.inner;
        *inner.syncing.lock() = false;
        inner.sync_done.notify_all();
    }
}

/// Walks batches across segments, following rolls, truncations and
/// retention.
pub(crate) struct BatchCursor {
    partition: Partition,
    pub(crate) segment: Arc<Segment>,
    position: u64,
    /// The next offset the reader wants.
    pub(crate) next_offset: u64,
    /// The offset after the last batch returned: no later batch may start
    /// below it.
    floor: u64,
    truncations: u64,
}

impl BatchCursor {
    pub(crate) fn seek(partition: &Partition, offset: u64) -> Result<BatchCursor> {
        let inner = &*partition.inner;
        let truncations = inner.truncations.load(Ordering::Acquire);
        let start = partition.start_offset();
        let end = partition.end_offset();
        if offset < start || offset > end {
            return Err(Error::OffsetOutOfRange {
                requested: offset,
                start,
                end,
            });
        }
        // Under the read lock rather than from a snapshot: a point read
        // seeks every time, and this takes two reference counts fewer.
        let segment = {
            let segments = inner.segments.read();
            let index = segments
                .partition_point(|s| s.base_offset() <= offset)
                .saturating_sub(1);
            segments[index].clone()
        };
        let position = segment.position_of(offset)?;
        Ok(BatchCursor {
            partition: partition.clone(),
            segment,
            position,
            next_offset: offset,
            floor: 0,
            truncations,
        })
    }

    fn path(&self) -> &Path {
        self.segment.log_path()
    }

    /// The next batch holding offsets at or after the wanted one, with its
    /// position; `None` at the end offset.
    pub(crate) fn next_batch(&mut self) -> Result<Option<(BatchHeader, Bytes, u64)>> {
        loop {
            let inner = &*self.partition.inner;
            if inner.truncations.load(Ordering::Acquire) != self.truncations {
                *self = BatchCursor::seek(&self.partition, self.next_offset)?;
            }
            if self.next_offset >= self.partition.end_offset() {
                return Ok(None);
            }
            if self.position < self.segment.size() {
                let position = self.position;
                let (header, batch) = self.segment.read_batch(position)?;
                self.partition.inner.counters.read(batch.len());
                let corrupt = |found| {
                    Error::corrupt(
                        self.segment.log_path(),
                        position,
                        CorruptKind::OffsetOrder {
                            expected_at_least: self.floor,
                            found,
                        },
                    )
                };
                // Batches never go back: one that starts below where the
                // last returned one ended is damage, not data.
                if header.base_offset < self.floor {
                    return Err(corrupt(header.base_offset));
                }
                let end = self.partition.end_offset();
                if header.base_offset >= end {
                    // Not published yet (or bytes past the end): stop here.
                    return Ok(None);
                }
                if header.last_offset() >= end {
                    // A truncation may have cut this batch while it was
                    // read: look again from where the log now ends.
                    if self.partition.inner.truncations.load(Ordering::Acquire) != self.truncations
                    {
                        continue;
                    }
                    return Err(corrupt(header.base_offset));
                }
                self.position += u64::from(header.batch_length);
                if header.last_offset() < self.next_offset {
                    continue;
                }
                self.next_offset = header.next_offset();
                self.floor = self.next_offset;
                return Ok(Some((header, batch, position)));
            }
            let segments = self.partition.snapshot();
            let base = self.segment.base_offset();
            // A compaction may have replaced this segment meanwhile: the
            // segment that now holds the wanted offset goes on from it.
            let holder = &segments[segments
                .partition_point(|s| s.base_offset() <= self.next_offset)
                .saturating_sub(1)];
            if !Arc::ptr_eq(holder, &self.segment) && holder.base_offset() <= self.next_offset {
                self.position = holder.position_of(self.next_offset)?;
                self.segment = holder.clone();
                continue;
            }
            match segments.iter().find(|s| s.base_offset() > base) {
                // Offsets run on from one segment into the next; a segment
                // that starts later means records are missing, which is
                // reported, never skipped — unless compaction left the gap.
                Some(next)
                    if next.base_offset() > self.next_offset
                        && !self
                            .partition
                            .inner
                            .cleaner
                            .gap_allowed_before(next.base_offset()) =>
                {
                    return Err(Error::corrupt(
                        next.log_path(),
                        0,
                        CorruptKind::OffsetOrder {
                            expected_at_least: self.next_offset,
                            found: next.base_offset(),
                        },
                    ));
                }
                Some(next) => {
                    // Across a gap, the wanted offset is the first there is.
                    self.next_offset = self.next_offset.max(next.base_offset());
                    self.segment = next.clone();
                    self.position = next.position_of(self.next_offset)?;
                }
                None => return Ok(None),
            }
        }
    }
}

/// Iterator over a partition's records; see [`Partition::reader`].
///
/// Each item is a record or an error; after an error the iterator ends.
pub struct Reader {
    partition: Partition,
    next_offset: u64,
    cursor: Option<BatchCursor>,
    records: Option<(Records, u64)>,
    failed: bool,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("partition", &self.partition.id())
            .field("next_offset", &self.next_offset)
            .finish_non_exhaustive()
    }
}

impl Reader {
    /// The offset of the next record this reader returns.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    fn fail(&mut self, error: Error) -> Option<Result<StoredRecord>> {
        self.failed = true;
        self.records = None;
        Some(Err(error))
    }

    /// Everything [`Reader::next`] does but hand out the next record of the
    /// batch at hand: errors, the end of a batch, truncations, the next
    /// batch.
    #[inline(never)]
    fn next_slow(&mut self) -> Option<Result<StoredRecord>> {
        if self.failed {
            return None;
        }
        if let Err(e) = self.partition.check_open() {
            return self.fail(e);
        }
        loop {
            // Records buffered from before a truncation may have been cut:
            // drop them and find `next_offset` again.
            let truncations = self.partition.inner.truncations.load(Ordering::Acquire);
            if self
                .cursor
                .as_ref()
                .is_some_and(|c| c.truncations != truncations)
            {
                self.records = None;
                self.cursor = None;
            }
            if let Some((records, position)) = &mut self.records {
                match records.next() {
                    Some(Ok(record)) if record.offset < self.next_offset => continue,
                    Some(Ok(record)) => {
                        self.next_offset = record.offset + 1;
                        return Some(Ok(record));
                    }
                    Some(Err(kind)) => {
                        let position = *position;
                        let path = self
                            .cursor
                            .as_ref()
                            .map_or_else(PathBuf::new, |c| c.path().to_path_buf());
                        return self.fail(Error::corrupt(path, position, kind));
                    }
                    None => self.records = None,
                }
            }
            if self.cursor.is_none() {
                match BatchCursor::seek(&self.partition, self.next_offset) {
                    Ok(cursor) => self.cursor = Some(cursor),
                    Err(e) => return self.fail(e),
                }
            }
            let cursor = self.cursor.as_mut().expect("set above");
            match cursor.next_batch() {
                Ok(Some((header, batch, position))) => {
                    // A batch's first wanted offset may lie in a gap after
                    // compaction or truncation: skip to it.
                    let records =
                        cursor
                            .segment
                            .records_from(position, header, batch, self.next_offset);
                    self.records = Some((records, position));
                }
                Ok(None) => {
                    // Come back from the same place next time.
                    if cursor.next_offset < self.next_offset {
                        cursor.next_offset = self.next_offset;
                    }
                    return None;
                }
                Err(e) => return self.fail(e),
            }
        }
    }
}

impl Iterator for Reader {
    type Item = Result<StoredRecord>;

    /// The common case is kept small enough to be inlined into the caller's
    /// loop (a record of the batch at hand, while the partition is open and
    /// was not truncated); everything else is in `next_slow`, which does
    /// every check again.
    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let inner = &*self.partition.inner;
        if let Some((records, _)) = &mut self.records
            && self
                .cursor
                .as_ref()
                .is_some_and(|c| c.truncations == inner.truncations.load(Ordering::Acquire))
            && !inner.closed.load(Ordering::Acquire)
            && let Some(record) = records.next_record()
            && record.offset >= self.next_offset
        {
            self.next_offset = record.offset + 1;
            return Some(Ok(record));
        }
        self.next_slow()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use crate::storage::sim::SimStorage;
    use crate::{Config, Log, Producer, ProducerConfig, Record};

    /// Row 5's zero check skips holes but still finds a byte past them.
    #[test]
    fn the_zero_check_skips_holes_and_finds_bytes_past_them() {
        use crate::storage::{Storage, Stores};
        let dir = tempfile::tempdir().unwrap();
        let file = crate::storage::FsStorage
            .open(&dir.path().join("f"), true)
            .unwrap();
        file.set_len(64 << 20).unwrap();
        file.reserve(8 << 20, Stores::Streaming).unwrap();
        file.write_at(&[1; 100], 0).unwrap();
        assert_eq!(super::end_of_nonzero(&*file, 100, 64 << 20).unwrap(), 100);
        assert_eq!(super::end_of_nonzero(&*file, 50, 64 << 20).unwrap(), 100);
        file.write_at(&[2], 40 << 20).unwrap();
        file.write_at(&[3], (4 << 20) + 7).unwrap();
        assert_eq!(
            super::end_of_nonzero(&*file, 100, 64 << 20).unwrap(),
            (40 << 20) + 1
        );
        assert_eq!(
            super::end_of_nonzero(&*file, 100, 20 << 20).unwrap(),
            (4 << 20) + 8
        );
    }

    /// Every single non-zero byte is seen, in the words and in the tail.
    #[test]
    fn all_zero_sees_any_byte() {
        for len in [0, 1, 15, 16, 17, 100, 4096] {
            let mut bytes = vec![0u8; len];
            assert!(super::all_zero(&bytes));
            for at in 0..len {
                bytes[at] = 0x80;
                assert!(!super::all_zero(&bytes), "{len} {at}");
                bytes[at] = 0;
            }
        }
    }

    /// Row 11: after an fsync fails, the failed batch stays readable in the
    /// page cache yet may never reach the disk. The next open (in the same
    /// boot, so those bytes are still there) must cut it, so that later
    /// acknowledged appends do not sit behind a hole after a power loss.
    #[test]
    fn row11_a_failed_fsync_is_cut_at_the_next_open() {
        use crate::storage::sim::Fault;
        for seed in 0..16 {
            let sim = SimStorage::new(seed);
            let dir = Path::new("/log");
            let config = Config::default().max_index_bytes(1024);
            let open =
                || Log::open_with_storage(dir, config.clone(), Arc::new(sim.clone())).unwrap();
            let log = open();
            let p = log.partition(0).unwrap();
            for i in 0..5 {
                p.append(&[Record::new(format!("acked {i}"))]).unwrap();
            }
            sim.fail_after(1, Fault::SyncFails);
            assert!(p.append(&[Record::new("failed")]).is_err());
            assert!(matches!(
                p.append(&[Record::new("refused")]),
                Err(crate::Error::Poisoned { .. })
            ));
            drop(log);
            // Reopen without a crash: the failed batch is still readable.
            let log = open();
            let p = log.partition(0).unwrap();
            assert_eq!(p.end_offset(), 5, "seed {seed}: the failed batch is cut");
            for i in 5..8 {
                p.append(&[Record::new(format!("acked {i}"))]).unwrap();
            }
            sim.crash();
            drop(log);
            let log = open();
            let p = log.partition(0).unwrap();
            let values: Vec<_> = p.reader(0).map(|r| r.unwrap().value.unwrap()).collect();
            let expected: Vec<_> = (0..8)
                .map(|i| bytes::Bytes::from(format!("acked {i}")))
                .collect();
            assert_eq!(values, expected, "seed {seed}");
        }
    }

    /// Readers that hold the segment list from before a truncation keep
    /// using the old index files; rebuilding the indexes of the cut segment
    /// must not shrink those files under them (that was a SIGBUS).
    #[test]
    fn truncation_never_shrinks_files_readers_have_mapped() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(
            dir.path(),
            Config::default().durability(crate::Durability::None),
        )
        .unwrap();
        let p = log.partition(0).unwrap();
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            for _ in 0..2 {
                scope.spawn(|| {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        // Errors (an offset cut meanwhile) are fine; a fault is not.
                        let _ = p.read(p.end_offset() / 2, 64);
                    }
                });
            }
            for _ in 0..40 {
                for _ in 0..5 {
                    let batch: Vec<_> = (0..200).map(|i| Record::new(format!("r{i}"))).collect();
                    p.append(&batch).unwrap();
                }
                p.truncate_to(p.end_offset() - 150).unwrap();
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        assert_eq!(p.end_offset(), 40 * 850);
    }

    /// A clean open trusts the checkpoint and the indexes: it reads no byte
    /// of any batch. Garbling every batch byte after a clean close proves it,
    /// as the open still succeeds and only reads find the damage.
    #[test]
    fn a_clean_open_reads_no_batch_bytes() {
        let sim = SimStorage::new(1);
        let dir = Path::new("/log");
        let config = Config::default()
            .segment_bytes(512)
            .max_index_bytes(4096)
            .partitions(2);
        let log = Log::open_with_storage(dir, config.clone(), Arc::new(sim.clone())).unwrap();
        let producer = Producer::new(&log, ProducerConfig::default().batch_bytes(256)).unwrap();
        for i in 0..400 {
            producer
                .send(Record::new(format!("record {i}")).with_key(format!("{}", i % 5)))
                .unwrap();
        }
        producer.close().unwrap();
        let segments: u64 = (0..2)
            .map(|p| log.partition(p).unwrap().stats().segments)
            .sum();
        assert!(segments > 4);
        log.close().unwrap();
        for p in 0..2 {
            let pdir = dir.join(p.to_string());
            for name in crate::storage::Storage::list_dir(&sim, &pdir).unwrap() {
                if name.ends_with(".log") {
                    let path = pdir.join(&name);
                    let len = sim.file_contents(&path).unwrap().len();
                    sim.write_raw(&path, 0, &vec![0xA5; len]).unwrap();
                }
            }
        }
        let log = Log::open_with_storage(dir, config, Arc::new(sim.clone())).unwrap();
        for p in 0..2 {
            assert!(log.recovery_reports()[p as usize].clean);
            let partition = log.partition(p).unwrap();
            assert!(partition.end_offset() > 0);
            let err = partition.read(0, 1).unwrap_err();
            assert!(err.is_corruption(), "{err}");
        }
    }
}
