//! Log compaction ([`Cleanup::Compact`]): the cleaner rewrites a partition's
//! closed segments to keep only the latest record of each key, without
//! changing any offset.
//!
//! # One clean
//!
//! 1. **Map.** From the *dirty offset* (where the last clean stopped) to the
//!    active segment's base offset, read every record and remember, for
//!    each key, the offset of its latest record. Keys of the active segment
//!    are not mapped (as in Kafka): the active segment is never cleaned, and
//!    a record in a closed segment is superseded only by one that is closed
//!    too. Below the dirty offset each key has at most one record already,
//!    so only the dirty part needs mapping.
//! 2. **Decide.** A record of a closed segment below the offset the map
//!    reaches (the *cleaned offset*) goes when its key's latest record is
//!    later, and when it is a tombstone whose first clean was at least
//!    [`Config::delete_retention`](crate::Config::delete_retention) ago.
//!    Records without a key (written before the log was compacted) stay.
//! 3. **Write.** A group starts at a closed segment and takes the next
//!    ones while what it holds after cleaning, plus the next segment's size
//!    before cleaning, stays within `segment_bytes` (and its indexes have
//!    room): small segments left by earlier cleans merge. A group is written
//!    as one new segment at its first base offset, under the `.cleaned`
//!    suffix. A batch that
//!    keeps all its records is copied as it is; one that keeps some is
//!    re-encoded with them, keeping its base offset, its offset span, its
//!    producer fields and its codec; one that keeps none disappears. A group
//!    of one segment that loses nothing is not rewritten.
//! 4. **Swap** (under the writer lock, see [`swap`]): commit with a new
//!    `cleaner-state` (the new dirty offset, the tombstone marks and the
//!    groups), then remove the old files, rename the new ones into place
//!    and publish the new segment list.
//!
//! # Memory
//!
//! The map stores each key in full with its latest offset, so two keys
//! never share an entry and no latest record is ever lost to a collision.
//! Its size is bounded by [`MAP_BYTES_MAX`] (counted as the key's length
//! plus [`ENTRY_OVERHEAD_BYTES`] per key): when it is full, mapping stops
//! after the batch that filled it, the clean goes only that far (records at
//! and after the cleaned offset are kept as they are) and the next clean
//! goes on from there. A single batch is always mapped whole, so a clean
//! may go over the bound by one batch's keys. Nothing else grows with the
//! log: segments are read one batch at a time.
//!
//! # Tombstones
//!
//! `cleaner-state` keeps *marks* — "tombstones below offset `o` were first
//! seen by the clean at time `t`" — one per clean, so a tombstone's
//! retention runs from the first clean that saw it, across restarts.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::config::{Cleanup, Compression, MAX_SEGMENT_BYTES};
use crate::error::{CorruptKind, Error, Result};
use crate::partition::{Partition, now_ms};
use crate::record::batch::{BatchHeader, EncodedBatch, ProducerStamp, Records};
use crate::record::{Record, StoredRecord};
use crate::segment::{BatchMeta, Segment};
use crate::storage::Storage;

pub(crate) mod state;
pub(crate) mod swap;

#[cfg(test)]
mod tests;

use state::{CleanerState, SwapGroup};

/// The most bytes the key map of one clean takes (see the module docs).
pub(crate) const MAP_BYTES_MAX: usize = 64 << 20;
/// What one key costs the map besides its bytes: the hash table's slot, the
/// offset and the allocation of the key.
pub(crate) const ENTRY_OVERHEAD_BYTES: usize = 48;

/// What a clean did; see [`Partition::compact`].
/// [`Log::compact`](crate::Log::compact) adds up its partitions'.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompactionReport {
    /// Closed segments that were rewritten and replaced.
    pub segments_cleaned: u64,
    /// Segments written to replace them: fewer when small neighbours were
    /// merged into one.
    pub segments_written: u64,
    /// Records removed: superseded by a later record of their key, or
    /// tombstones whose `delete_retention` was over.
    pub records_removed: u64,
    /// Of `records_removed`, how many were tombstones.
    pub tombstones_removed: u64,
    /// Bytes of the segments that were rewritten.
    pub bytes_before: u64,
    /// Bytes of the segments that replaced them.
    pub bytes_after: u64,
}

impl std::ops::AddAssign for CompactionReport {
    fn add_assign(&mut self, other: CompactionReport) {
        self.segments_cleaned += other.segments_cleaned;
        self.segments_written += other.segments_written;
        self.records_removed += other.records_removed;
        self.tombstones_removed += other.tombstones_removed;
        self.bytes_before += other.bytes_before;
        self.bytes_after += other.bytes_after;
    }
}

/// The cleaner of one partition: its state and the lock that lets one clean
/// run at a time.
#[derive(Debug)]
pub(crate) struct Cleaner {
    running: Mutex<()>,
    state: Mutex<CleanerState>,
    /// The dirty offset, for readers: a gap before a segment whose base
    /// offset is at or below it was left by compaction, not by damage.
    gap_floor: AtomicU64,
}

impl Cleaner {
    /// Finishes or undoes a swap a crash interrupted (rows 12 and 13 of the
    /// recovery table) and loads the state. Runs before the partition looks
    /// at its segments.
    pub(crate) fn open(storage: &dyn Storage, dir: &Path) -> Result<Cleaner> {
        let names = storage.list_dir(dir).map_err(|e| Error::io(dir, e))?;
        let mut state = state::load(storage, dir)?.unwrap_or_default();
        swap::execute(storage, dir, &swap::plan(&names, &state.swap))?;
        if !state.swap.is_empty() {
            // Before anything can change the segments again: a later open
            // must not replay this swap over new segments.
            state.swap.clear();
            state::store(storage, dir, &state)?;
        }
        Ok(Cleaner {
            running: Mutex::new(()),
            gap_floor: AtomicU64::new(state.dirty_offset),
            state: Mutex::new(state),
        })
    }

    /// Whether a reader may find no records between the end of one segment
    /// and the start of the next one, which starts at `base_offset`.
    pub(crate) fn gap_allowed_before(&self, base_offset: u64) -> bool {
        base_offset <= self.gap_floor.load(Ordering::Acquire)
    }

    /// Forgets, durably, what the state says about offsets at and after
    /// `offset`, which a truncation is about to cut. Called under the
    /// writer lock, before the truncation changes any file.
    pub(crate) fn truncate(&self, storage: &dyn Storage, dir: &Path, offset: u64) -> Result<()> {
        let mut current = self.state.lock();
        let mut state = current.clone();
        if !state.truncate(offset) {
            return Ok(());
        }
        state::store(storage, dir, &state)?;
        self.gap_floor.store(state.dirty_offset, Ordering::Release);
        *current = state;
        Ok(())
    }
}

/// The map from each key to the offset of its latest record.
#[derive(Default)]
struct KeyMap {
    latest: HashMap<Box<[u8]>, u64>,
    bytes: usize,
}

impl KeyMap {
    fn insert(&mut self, key: &[u8], offset: u64) {
        match self.latest.get_mut(key) {
            Some(latest) => *latest = offset,
            None => {
                self.bytes += key.len() + ENTRY_OVERHEAD_BYTES;
                self.latest.insert(key.into(), offset);
            }
        }
    }

    /// Maps the records of `closed` from offset `from` on, up to `to` (the
    /// active segment's base offset) or until the map holds `bytes_max`;
    /// returns the map and the offset it reaches.
    fn build(
        closed: &[Arc<Segment>],
        from: u64,
        to: u64,
        bytes_max: usize,
    ) -> Result<(KeyMap, u64)> {
        let mut map = KeyMap::default();
        for (i, segment) in closed.iter().enumerate() {
            let next_base = closed.get(i + 1).map_or(to, |s| s.base_offset());
            if next_base <= from {
                continue;
            }
            let mut position = segment.position_of(from)?;
            while position < segment.size() {
                let (header, batch) = segment.read_batch(position)?;
                let at = position;
                position += u64::from(header.batch_length);
                if header.last_offset() < from {
                    continue;
                }
                for record in Records::new(header, batch).skip_before(from) {
                    let record =
                        record.map_err(|kind| Error::corrupt(segment.log_path(), at, kind))?;
                    if let Some(key) = &record.key
                        && record.offset >= from
                    {
                        map.insert(key, record.offset);
                    }
                }
                if map.bytes >= bytes_max {
                    return Ok((map, header.next_offset().min(to)));
                }
            }
        }
        Ok((map, to))
    }
}

/// Which records a clean keeps.
struct Rules<'a> {
    map: &'a KeyMap,
    /// Records at and after it were not mapped: all kept.
    cleaned_to: u64,
    /// Tombstones below it have had their retention.
    removable_below: u64,
}

impl Rules<'_> {
    fn keeps(&self, record: &StoredRecord) -> bool {
        if record.offset >= self.cleaned_to {
            return true;
        }
        let Some(key) = &record.key else {
            return true;
        };
        if self
            .map
            .latest
            .get(&key[..])
            .is_some_and(|&latest| latest > record.offset)
        {
            return false;
        }
        record.value.is_some() || record.offset >= self.removable_below
    }

    /// Whether the clean would remove anything from `segment`.
    fn changes(&self, segment: &Segment) -> Result<bool> {
        let mut position = 0;
        while position < segment.size() {
            let (header, batch) = segment.read_batch(position)?;
            if header.base_offset < self.cleaned_to {
                for record in Records::new(header, batch) {
                    let record = record
                        .map_err(|kind| Error::corrupt(segment.log_path(), position, kind))?;
                    if !self.keeps(&record) {
                        return Ok(true);
                    }
                }
            }
            position += u64::from(header.batch_length);
        }
        Ok(false)
    }
}

/// A group's new segment, written and synced under the cleaned suffix.
struct Written {
    /// The old segments it replaces.
    old: Vec<Arc<Segment>>,
    group: SwapGroup,
    /// Open until the swap.
    temp: Option<Segment>,
}

impl Written {
    fn temp(&self) -> &Segment {
        self.temp.as_ref().expect("open until the swap")
    }

    /// Whether the cleaned segment's indexes can take an entry for every
    /// batch of `segment`, and the time index its final entry too.
    fn has_room_for(&self, segment: &Segment) -> Result<bool> {
        let batches = batch_count(segment)?;
        let temp = self.temp();
        Ok(temp.index.free() > batches && temp.time_index.free() > batches + 1)
    }
}

/// The number of batches of a closed segment, from their headers.
fn batch_count(segment: &Segment) -> Result<u64> {
    let mut batches = 0;
    let mut position = 0;
    while position < segment.size() {
        position += u64::from(segment.read_header(position)?.batch_length);
        batches += 1;
    }
    Ok(batches)
}

/// The zstd level of rewritten batches: the configured one, or zstd's
/// default when the log is configured otherwise (the level is not stored).
fn zstd_level(configured: Compression) -> i32 {
    match configured {
        Compression::Zstd { level } => level,
        _ => 3,
    }
}

/// The records `kept` of a batch, re-encoded as a batch with the same base
/// offset, offset span, timestamps, producer fields and leader epoch.
fn rewrite_batch(
    header: BatchHeader,
    kept: Vec<StoredRecord>,
    zstd_level: i32,
) -> std::result::Result<EncodedBatch, u64> {
    let deltas: Vec<u64> = kept.iter().map(|r| r.offset - header.base_offset).collect();
    let records: Vec<Record> = kept
        .into_iter()
        .map(|r| Record {
            key: r.key,
            value: r.value,
            timestamp: Some(r.timestamp),
            headers: r.headers,
        })
        .collect();
    let mut batch = EncodedBatch::encode_with_deltas(
        &records,
        |i| deltas[i],
        header.first_timestamp,
        u32::MAX,
    )?;
    batch.set_last_offset_delta(header.last_offset_delta);
    batch.set_producer(ProducerStamp {
        producer_id: header.producer_id,
        producer_epoch: header.producer_epoch,
        base_sequence: header.base_sequence,
    });
    batch.set_leader_epoch(header.leader_epoch);
    batch.compress(match header.codec() {
        crate::codec::CODEC_LZ4 => Compression::Lz4,
        crate::codec::CODEC_ZSTD => Compression::Zstd { level: zstd_level },
        _ => Compression::None,
    });
    batch.seal(header.base_offset);
    Ok(batch)
}

impl Partition {
    /// Compacts the partition now: rewrites its closed segments to keep only
    /// the latest record of each key and returns what was done. See
    /// [`Cleanup::Compact`] for the rules. The background thread does this
    /// every `retention_check_interval`; one clean of a partition runs at a
    /// time (a second call waits for the first).
    ///
    /// Offsets never change, nor do the start and end offsets. Appends,
    /// reads and syncs go on while the cleaned segments are written; appends
    /// wait only for the swap at the end, a few fsyncs long. A reader inside
    /// a segment that is replaced finishes it from the old file, then goes on
    /// in the new segments. The swap is durable when this returns, and a
    /// crash at any moment leaves either the old segments or the new ones,
    /// never a mix.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] naming `cleanup` when the log's cleanup is
    /// not [`Cleanup::Compact`]; [`Error::Corrupt`] for a batch that fails
    /// its checks (nothing is changed); [`Error::Io`]; [`Error::Poisoned`]
    /// and [`Error::Closed`]. A failure once the swap is committed poisons
    /// the partition, and the next open finishes the swap.
    pub fn compact(&self) -> Result<CompactionReport> {
        self.compact_at(now_ms())
    }

    /// [`Partition::compact`] as if the time were `now_ms`: tombstone
    /// retention is measured with it.
    pub(crate) fn compact_at(&self, now_ms: i64) -> Result<CompactionReport> {
        self.compact_with(now_ms, MAP_BYTES_MAX)
    }

    /// [`Partition::compact_at`] with a key map of at most `map_bytes_max`.
    pub(crate) fn compact_with(
        &self,
        now_ms: i64,
        map_bytes_max: usize,
    ) -> Result<CompactionReport> {
        let config = self.config();
        if config.cleanup != Cleanup::Compact {
            return Err(Error::config(
                "cleanup",
                "only a log with Cleanup::Compact is compacted",
            ));
        }
        let cleaner = self.cleaner();
        let _running = cleaner.running.lock();
        self.check_writable()?;
        let truncations = self.truncations();
        let segments = self.snapshot();
        let Some((active, closed)) = segments.split_last() else {
            return Ok(CompactionReport::default());
        };
        if closed.is_empty() {
            return Ok(CompactionReport::default());
        }
        let state = cleaner.state.lock().clone();
        let retention_ms = i64::try_from(config.delete_retention.as_millis()).unwrap_or(i64::MAX);
        let removable_below = state.removable_below(now_ms, retention_ms);
        let dirty = state.dirty_offset.max(closed[0].base_offset());
        let active_base = active.base_offset();
        if dirty >= active_base && removable_below <= state.expired_below {
            return Ok(CompactionReport::default());
        }
        let (map, cleaned_to) = KeyMap::build(closed, dirty, active_base, map_bytes_max)?;
        let rules = Rules {
            map: &map,
            cleaned_to: cleaned_to.max(dirty),
            removable_below,
        };
        let count = closed
            .iter()
            .take_while(|s| s.base_offset() < rules.cleaned_to)
            .count();
        let next_base = |i: usize| segments[i + 1].base_offset();
        let mut report = CompactionReport::default();
        let mut written: Vec<Written> = Vec::new();
        let outcome = (|| {
            let mut i = 0;
            while i < count {
                let first = &closed[i];
                let base = first.base_offset();
                // Whether segment `j` may join a group of `bytes` so far:
                // the group stays within `segment_bytes` (counting `j` at its
                // size before cleaning) and within 32-bit relative offsets.
                let joins = |bytes: u64, j: usize| {
                    j < count
                        && bytes + closed[j].size() <= config.segment_bytes
                        && next_base(j) - 1 - base <= u64::from(u32::MAX)
                };
                if !joins(first.size(), i + 1) && !rules.changes(first)? {
                    i += 1;
                    continue;
                }
                written.push(self.start_group(first)?);
                let group = written.last_mut().expect("just pushed");
                self.add_to_group(group, first, &rules, &mut report)?;
                let mut j = i + 1;
                while joins(group.temp().size(), j) && group.has_room_for(&closed[j])? {
                    self.add_to_group(group, &closed[j], &rules, &mut report)?;
                    j += 1;
                }
                self.finish_group(group, next_base(j - 1), &mut report)?;
                i = j;
            }
            if !written.is_empty() {
                // The cleaned files' names are durable before the commit
                // names them.
                let dir = self.dir();
                self.storage()
                    .sync_dir(dir)
                    .map_err(|e| Error::io(dir, e))?;
            }
            Ok(())
        })();
        if let Err(e) = outcome {
            self.discard(&mut written);
            return Err(e);
        }
        match self.swap_in(
            written,
            truncations,
            now_ms,
            rules.cleaned_to,
            removable_below,
        ) {
            Ok(true) => Ok(report),
            Ok(false) => Ok(CompactionReport::default()),
            Err(e) => Err(e),
        }
    }

    /// Creates the cleaned files of a group that starts with `first`.
    fn start_group(&self, first: &Arc<Segment>) -> Result<Written> {
        let temp = Segment::create_with_suffix(
            &**self.storage(),
            self.dir(),
            first.base_offset(),
            swap::CLEANED_SUFFIX,
            batch_count(first)?,
            self.config(),
        )?;
        Ok(Written {
            old: Vec::new(),
            group: SwapGroup {
                base_offset: first.base_offset(),
                end_offset: first.base_offset(),
                log_bytes: 0,
            },
            temp: Some(temp),
        })
    }

    /// Appends what the clean keeps of `segment` to the group.
    fn add_to_group(
        &self,
        group: &mut Written,
        segment: &Arc<Segment>,
        rules: &Rules<'_>,
        report: &mut CompactionReport,
    ) -> Result<()> {
        let config = self.config();
        let level = zstd_level(config.compression);
        let temp = group.temp();
        let mut position = 0;
        while position < segment.size() {
            let (header, batch) = segment.read_batch(position)?;
            let at = position;
            position += u64::from(header.batch_length);
            let mut kept = Vec::new();
            let mut removed = 0u32;
            if header.base_offset < rules.cleaned_to {
                for record in Records::new(header, batch.clone()) {
                    let record =
                        record.map_err(|kind| Error::corrupt(segment.log_path(), at, kind))?;
                    if rules.keeps(&record) {
                        kept.push(record);
                    } else {
                        removed += 1;
                        report.records_removed += 1;
                        report.tombstones_removed += u64::from(record.value.is_none());
                    }
                }
            }
            if kept.is_empty() && removed > 0 {
                continue;
            }
            let rewritten;
            let (bytes, header): (&[u8], BatchHeader) = if removed == 0 {
                (&batch[..], header)
            } else {
                rewritten = rewrite_batch(header, kept, level).map_err(|_| {
                    Error::corrupt(
                        segment.log_path(),
                        at,
                        CorruptKind::Record("batch cannot be rewritten"),
                    )
                })?;
                (rewritten.bytes(), rewritten.header())
            };
            // Room was checked before the segment joined; a cleaned segment
            // past these limits would be a bug, refused rather than written.
            if temp.size() + bytes.len() as u64 > MAX_SEGMENT_BYTES || temp.indexes_full() {
                return Err(Error::io(
                    temp.log_path(),
                    std::io::Error::other("a cleaned segment outgrew its limits"),
                ));
            }
            let written_at = temp.write(bytes)?;
            temp.append_meta(
                BatchMeta {
                    header,
                    position: written_at,
                },
                config.index_interval_bytes,
            )?;
        }
        report.bytes_before += segment.size();
        group.old.push(segment.clone());
        Ok(())
    }

    /// Seals the group's cleaned files; its old segments end before `end`.
    fn finish_group(
        &self,
        group: &mut Written,
        end: u64,
        report: &mut CompactionReport,
    ) -> Result<()> {
        let temp = group.temp();
        temp.seal()?;
        let log_bytes = temp.size();
        group.group.end_offset = end;
        group.group.log_bytes = log_bytes;
        report.segments_cleaned += group.old.len() as u64;
        report.segments_written += 1;
        report.bytes_after += log_bytes;
        Ok(())
    }

    /// Removes the cleaned files of a clean that does not commit. A file
    /// that cannot be removed now is removed by the next open (row 13).
    fn discard(&self, written: &mut Vec<Written>) {
        for mut w in written.drain(..) {
            drop(w.temp.take());
            for path in swap::cleaned_paths(self.dir(), w.group.base_offset) {
                let _ = self.storage().remove_file(&path);
            }
        }
    }

    /// Commits the clean and swaps its segments in, under the writer lock.
    /// Returns `false`, having changed nothing, when the segments changed
    /// under the clean (a truncation, or retention deleting one of them).
    fn swap_in(
        &self,
        mut written: Vec<Written>,
        truncations: u64,
        now_ms: i64,
        cleaned_to: u64,
        removable_below: u64,
    ) -> Result<bool> {
        let storage = &**self.storage();
        let dir = self.dir();
        let lock = match self.lock_for_swap() {
            Ok(lock) => lock,
            Err(e) => {
                self.discard(&mut written);
                return Err(e);
            }
        };
        let current = lock.segments();
        let present: HashSet<*const Segment> = current.iter().map(Arc::as_ptr).collect();
        let unchanged = self.truncations() == truncations
            && written
                .iter()
                .flat_map(|w| &w.old)
                .all(|s| present.contains(&Arc::as_ptr(s)));
        if !unchanged {
            drop(lock);
            self.discard(&mut written);
            return Ok(false);
        }
        let cleaner = self.cleaner();
        let mut state = cleaner.state.lock().clone();
        state.record_clean(cleaned_to, now_ms, removable_below);
        state.swap = written.iter().map(|w| w.group).collect();
        // No open may look for synced bytes in a segment this swap replaces.
        let prepared = lock
            .pin_recovery_point()
            .and_then(|()| state::write_temp(storage, dir, &state));
        if let Err(e) = prepared {
            drop(lock);
            self.discard(&mut written);
            return Err(e);
        }
        for w in &mut written {
            drop(w.temp.take());
        }
        let finish = || -> Result<Vec<Arc<Segment>>> {
            // The commit: from here on the new segments are the partition's,
            // now or after the next open.
            state::publish(storage, dir)?;
            let names = storage.list_dir(dir).map_err(|e| Error::io(dir, e))?;
            swap::execute(storage, dir, &swap::plan(&names, &state.swap))?;
            let mut opened = HashMap::new();
            for w in &written {
                let files = Segment::open_files(storage, dir, w.group.base_offset, self.config())?;
                let (Some(index), Some(time_index)) = (files.index, files.time_index) else {
                    return Err(Error::corrupt(
                        &files.log_path,
                        0,
                        CorruptKind::Index { entry: 0 },
                    ));
                };
                let segment = Segment::from_parts(
                    files.log_path,
                    files.log,
                    w.group.base_offset,
                    w.group.log_bytes,
                    w.group.end_offset,
                    index,
                    time_index,
                    self.config(),
                )?;
                opened.insert(Arc::as_ptr(&w.old[0]), Arc::new(segment));
            }
            let replaced: HashSet<*const Segment> = written
                .iter()
                .flat_map(|w| &w.old)
                .map(Arc::as_ptr)
                .collect();
            let list = current
                .iter()
                .filter_map(|s| match opened.remove(&Arc::as_ptr(s)) {
                    Some(new) => Some(new),
                    None if replaced.contains(&Arc::as_ptr(s)) => None,
                    None => Some(s.clone()),
                })
                .collect();
            let mut finished = state.clone();
            finished.swap.clear();
            state::store(storage, dir, &finished)?;
            Ok(list)
        };
        let list = finish().map_err(|e| lock.poison(e))?;
        state.swap.clear();
        // Readers must allow the new gaps before they can see them.
        cleaner
            .gap_floor
            .store(state.dirty_offset, Ordering::Release);
        *cleaner.state.lock() = state;
        lock.install(list);
        Ok(true)
    }
}
