//! Committed offsets per (group, partition), kept in an internal log.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use parking_lot::{Condvar, Mutex};

use crate::config::{Cleanup, Config, Durability};
use crate::error::{Error, Result};
use crate::log::Log;
use crate::partition::Partition;
use crate::record::Record;
use crate::storage::{FsStorage, Storage};

use super::config::check_group_id;
use super::encoding::{
    MAX_ENTRY_BYTES, MAX_METADATA_BYTES, Malformed, decode_key, decode_value, encode_key,
    encode_value,
};

/// Name of the offset store's directory inside the log's directory.
///
/// The log itself only looks at its numbered partition directories, and
/// checks a directory for foreign entries only while it has no `meta` file,
/// which it writes before [`Log::open`] returns; so this directory never
/// makes the log refuse to open.
pub(crate) const OFFSETS_DIR: &str = "__consumer_offsets";

/// The internal log's segments: the part not yet compacted is at most one
/// segment, so this bounds what an open reads beyond the live commits.
const INTERNAL_SEGMENT_BYTES: u64 = 1 << 20;
const INTERNAL_MAX_BATCH_BYTES: u32 = 4 << 20;
const INTERNAL_MAX_INDEX_BYTES: u32 = 64 << 10;
/// Room for a record's own framing (lengths, deltas, attributes) on top of
/// its key and value.
const RECORD_OVERHEAD_BYTES: usize = 32;
const _: () =
    assert!((MAX_ENTRY_BYTES + RECORD_OVERHEAD_BYTES) * 2 < INTERNAL_MAX_BATCH_BYTES as usize);

/// A committed offset: the next offset the group reads in the partition,
/// with a string the application may attach (Kafka's commit metadata).
///
/// ```
/// use durable_log::offsets::OffsetAndMetadata;
///
/// let c = OffsetAndMetadata::new(42).with_metadata("host-3");
/// assert_eq!((c.offset, c.metadata.as_str()), (42, "host-3"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OffsetAndMetadata {
    /// The next offset to read: every record below it counts as consumed.
    pub offset: u64,
    /// Free text for the application, at most 4096 bytes; empty by default.
    pub metadata: String,
}

impl OffsetAndMetadata {
    /// A commit of `offset` with no metadata.
    pub fn new(offset: u64) -> OffsetAndMetadata {
        OffsetAndMetadata {
            offset,
            metadata: String::new(),
        }
    }

    /// Sets the metadata.
    #[must_use]
    pub fn with_metadata(mut self, metadata: impl Into<String>) -> OffsetAndMetadata {
        self.metadata = metadata.into();
        self
    }
}

/// The committed offsets of every consumer group of one [`Log`], stored
/// durably in an internal log in `<log dir>/__consumer_offsets/`.
///
/// Each commit is one batch of keyed records (key: group and partition;
/// value: offset and metadata) appended with [`Durability::Sync`], so it
/// survives a crash as any synced record does, and a commit of several
/// partitions is atomic. The latest record of a key wins; a record without
/// a value deletes the key. The store keeps the current commits in memory
/// and rebuilds them at open by reading its log.
///
/// **Growth.** The internal log is compacted (`Cleanup::Compact`): each time
/// a segment (1 MiB) fills, the commit that rolled it compacts the closed
/// segments down to the latest record of each key, so the log, and the time
/// to read it at open, stay proportional to the live commits plus one
/// segment, not to the commits ever made. A deleted commit's tombstone is
/// kept for the log's `delete_retention` (24 h). Compaction's swap is
/// crash-safe, and a failed compaction never fails the commit that ran it
/// (the commit is durable before it starts).
///
/// A handle is cheap to clone. Every [`OffsetStore::open`] of the same log
/// directory in one process shares one store (the internal log can be open
/// only once); it is closed when its last handle is dropped.
///
/// ```
/// use durable_log::{Config, Log};
/// use durable_log::offsets::{OffsetAndMetadata, OffsetStore};
///
/// # fn main() -> durable_log::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let log = Log::open(dir.path(), Config::default().partitions(2))?;
/// let store = OffsetStore::open(&log)?;
/// store.commit("billing", &[(0, OffsetAndMetadata::new(10)), (1, OffsetAndMetadata::new(3))])?;
/// assert_eq!(store.committed("billing", 0).map(|c| c.offset), Some(10));
/// assert_eq!(store.committed("audit", 0), None);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct OffsetStore {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for OffsetStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OffsetStore")
            .field("dir", &self.shared.dir)
            .finish_non_exhaustive()
    }
}

/// Identifies a log directory whatever path names it: device and inode.
type DirKey = (u64, u64);

/// The stores open in this process, by log directory.
static STORES: Mutex<BTreeMap<DirKey, Weak<Shared>>> = parking_lot::const_mutex(BTreeMap::new());
/// Signalled when a store has been closed and left `STORES`.
static STORE_CLOSED: Condvar = Condvar::new();

struct Shared {
    registered: Option<DirKey>,
    dir: PathBuf,
    /// Taken and closed on drop.
    log: Option<Log>,
    partition: Partition,
    state: Mutex<State>,
    /// The segment count after the last compaction; held while compacting.
    compacted_segments: Mutex<usize>,
    /// Compact once this many segments were added since the last time.
    compact_every: usize,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Every commit is already synced; closing only marks the shutdown
        // clean, so its error is not worth more than a recovery scan.
        if let Some(log) = self.log.take() {
            let _ = log.close();
        }
        if let Some(key) = self.registered {
            let mut stores = STORES.lock();
            if stores.get(&key).is_some_and(|w| w.strong_count() == 0) {
                stores.remove(&key);
            }
            STORE_CLOSED.notify_all();
        }
    }
}

/// The current commits.
#[derive(Debug, Default)]
struct State {
    groups: BTreeMap<String, BTreeMap<u32, Slot>>,
    /// Slots that hold a commit (not a deletion).
    live: u64,
}

/// The latest record of one key: the internal log offset it was written at,
/// so that commits that finish out of order still leave the later one.
#[derive(Debug)]
struct Slot {
    log_offset: u64,
    value: Option<OffsetAndMetadata>,
}

impl State {
    fn get(&self, group: &str, partition: u32) -> Option<&OffsetAndMetadata> {
        self.groups.get(group)?.get(&partition)?.value.as_ref()
    }

    fn apply(
        &mut self,
        group: &str,
        partition: u32,
        log_offset: u64,
        value: Option<OffsetAndMetadata>,
    ) {
        let slots = match self.groups.get_mut(group) {
            Some(slots) => slots,
            None => self.groups.entry(group.to_owned()).or_default(),
        };
        let slot = slots.entry(partition).or_insert(Slot {
            log_offset,
            value: None,
        });
        if slot.log_offset > log_offset {
            return;
        }
        let was_live = slot.value.is_some();
        let is_live = value.is_some();
        slot.log_offset = log_offset;
        slot.value = value;
        match (was_live, is_live) {
            (false, true) => self.live += 1,
            (true, false) => self.live -= 1,
            _ => {}
        }
    }
}

impl OffsetStore {
    /// The offset store of `log`, opening it (and creating it on first use)
    /// or sharing the one already open in this process.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] for damage in the store's synced data;
    /// [`Error::NotALog`] for a record the store cannot read (written by a
    /// newer version); [`Error::Locked`] when another process has the
    /// store open; [`Error::Io`].
    pub fn open(log: &Log) -> Result<OffsetStore> {
        let dir = log.dir();
        let metadata = std::fs::metadata(dir).map_err(|e| Error::io(dir, e))?;
        let key = (metadata.dev(), metadata.ino());
        let mut stores = STORES.lock();
        loop {
            match stores.get(&key).map(Weak::upgrade) {
                Some(Some(shared)) => return Ok(OffsetStore { shared }),
                // The last handle is being dropped: wait until its log is
                // closed, or opening it again would find it locked.
                Some(None) => STORE_CLOSED.wait(&mut stores),
                None => break,
            }
        }
        let shared = Arc::new(Shared::open(
            &dir.join(OFFSETS_DIR),
            Arc::new(FsStorage),
            Some(key),
            INTERNAL_SEGMENT_BYTES,
            1,
        )?);
        stores.insert(key, Arc::downgrade(&shared));
        Ok(OffsetStore { shared })
    }

    /// A store on `storage` in `dir` with segments of `segment_bytes`,
    /// compacting after every `compact_every` rolls, shared with no one
    /// (for simulated disks).
    #[cfg(test)]
    pub(crate) fn open_on(
        dir: &Path,
        storage: Arc<dyn Storage>,
        segment_bytes: u64,
        compact_every: usize,
    ) -> Result<OffsetStore> {
        let shared = Shared::open(dir, storage, None, segment_bytes, compact_every)?;
        Ok(OffsetStore {
            shared: Arc::new(shared),
        })
    }

    /// The directory of the store's internal log.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Commits `offsets` for `group`: one atomic batch, durable (fsynced)
    /// when this returns. When a partition appears more than once, its last
    /// entry counts. Entries equal to what is already committed are not
    /// written again.
    ///
    /// The store does not check the partitions against a log: a
    /// [`Consumer`](super::Consumer) does.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a group id that is empty or longer than
    /// 255 bytes; [`Error::OffsetMetadataTooLarge`] for metadata over 4096
    /// bytes; [`Error::RecordTooLarge`] when the commit does not fit one
    /// batch of the internal log (4 MiB: thousands of partitions); and the
    /// errors of [`Partition::append`] — after an I/O failure the store
    /// refuses commits until every handle is dropped and it is opened again.
    pub fn commit(&self, group: &str, offsets: &[(u32, OffsetAndMetadata)]) -> Result<()> {
        check_group_id(group)?;
        for (_, commit) in offsets {
            if commit.metadata.len() > MAX_METADATA_BYTES {
                return Err(Error::OffsetMetadataTooLarge {
                    size: commit.metadata.len() as u64,
                    max: MAX_METADATA_BYTES as u64,
                });
            }
        }
        let latest: BTreeMap<u32, &OffsetAndMetadata> =
            offsets.iter().map(|(p, c)| (*p, c)).collect();
        self.write(group, latest.into_iter().map(|(p, c)| (p, Some(c))))
    }

    /// Deletes `group`'s commits for `partitions` (durably, as a commit);
    /// the group then starts those partitions by its reset policy.
    ///
    /// # Errors
    ///
    /// As [`OffsetStore::commit`].
    pub fn delete(&self, group: &str, partitions: &[u32]) -> Result<()> {
        check_group_id(group)?;
        let partitions: std::collections::BTreeSet<u32> = partitions.iter().copied().collect();
        self.write(group, partitions.into_iter().map(|p| (p, None)))
    }

    /// What `group` last committed for `partition`, if anything.
    pub fn committed(&self, group: &str, partition: u32) -> Option<OffsetAndMetadata> {
        self.shared.state.lock().get(group, partition).cloned()
    }

    /// Every commit of `group`, by partition.
    pub fn group_offsets(&self, group: &str) -> BTreeMap<u32, OffsetAndMetadata> {
        let state = self.shared.state.lock();
        state.groups.get(group).map_or_else(BTreeMap::new, |slots| {
            slots
                .iter()
                .filter_map(|(p, slot)| Some((*p, slot.value.clone()?)))
                .collect()
        })
    }

    /// The groups that have at least one commit, in order.
    pub fn groups(&self) -> Vec<String> {
        let state = self.shared.state.lock();
        state
            .groups
            .iter()
            .filter(|(_, slots)| slots.values().any(|s| s.value.is_some()))
            .map(|(group, _)| group.clone())
            .collect()
    }

    /// Appends one record per entry whose value differs from the current
    /// one (`None` deletes), then applies them.
    fn write<'a>(
        &self,
        group: &str,
        entries: impl Iterator<Item = (u32, Option<&'a OffsetAndMetadata>)>,
    ) -> Result<()> {
        let shared = &*self.shared;
        let changed: Vec<(u32, Option<&OffsetAndMetadata>)> = {
            let state = shared.state.lock();
            entries
                .filter(|(p, value)| state.get(group, *p) != *value)
                .collect()
        };
        if changed.is_empty() {
            return Ok(());
        }
        let records: Vec<Record> = changed
            .iter()
            .map(|(p, value)| {
                let key = encode_key(group, *p);
                match value {
                    Some(c) => Record::new(encode_value(c.offset, &c.metadata)).with_key(key),
                    None => Record::tombstone(key),
                }
            })
            .collect();
        let appended = shared.partition.append(&records)?;
        {
            let mut state = shared.state.lock();
            for (log_offset, (p, value)) in (appended.base_offset..).zip(changed) {
                state.apply(group, p, log_offset, value.cloned());
            }
        }
        // The commit is durable whatever happens now. A compaction that
        // fails on I/O poisons the internal log, and the next commit
        // reports it.
        let _ = shared.compact_if_due();
        Ok(())
    }

    /// Records stored in the internal log (for tests of its growth).
    #[cfg(test)]
    fn log_records(&self) -> u64 {
        let p = &self.shared.partition;
        p.reader(p.start_offset()).count() as u64
    }

    /// Compacts the internal log now (for tests of crashes inside it).
    #[cfg(test)]
    fn compact_now(&self) -> Result<()> {
        self.shared.partition.compact().map(|_| ())
    }
}

impl Shared {
    fn open(
        dir: &Path,
        storage: Arc<dyn Storage>,
        registered: Option<DirKey>,
        segment_bytes: u64,
        compact_every: usize,
    ) -> Result<Shared> {
        let config = Config::default()
            .partitions(1)
            .durability(Durability::Sync)
            .cleanup(Cleanup::Compact)
            .retention_age(None)
            .retention_bytes(None)
            .segment_bytes(segment_bytes)
            .max_batch_bytes(INTERNAL_MAX_BATCH_BYTES)
            .max_index_bytes(INTERNAL_MAX_INDEX_BYTES);
        let log = Log::open_with_storage(dir, config, storage)?;
        let partition = log.partition(0)?;
        let state = load(&partition, dir)?;
        Ok(Shared {
            registered,
            dir: dir.to_path_buf(),
            log: Some(log),
            partition,
            state: Mutex::new(state),
            compacted_segments: Mutex::new(0),
            compact_every,
        })
    }

    /// Compacts the closed segments once a segment has rolled since the
    /// last compaction.
    fn compact_if_due(&self) -> Result<()> {
        let mut compacted = self.compacted_segments.lock();
        let segments = self.partition.segment_count();
        if segments < 2 || segments < compacted.saturating_add(self.compact_every) {
            return Ok(());
        }
        self.partition.compact()?;
        *compacted = self.partition.segment_count();
        Ok(())
    }
}

/// Reads the internal log from its start and keeps the latest record of
/// each key.
fn load(partition: &Partition, dir: &Path) -> Result<State> {
    let unreadable = |offset: u64, what: Malformed| Error::NotALog {
        path: dir.to_path_buf(),
        reason: format!("offset store record at offset {offset}: {what}"),
    };
    let mut state = State::default();
    for record in partition.reader(partition.start_offset()) {
        let record = record?;
        let key = record
            .key
            .as_deref()
            .ok_or_else(|| unreadable(record.offset, Malformed::Length))?;
        let (group, p) = decode_key(key).map_err(|m| unreadable(record.offset, m))?;
        let value = match record.value.as_deref() {
            Some(value) => {
                let (offset, metadata) =
                    decode_value(value).map_err(|m| unreadable(record.offset, m))?;
                Some(OffsetAndMetadata { offset, metadata })
            }
            None => None,
        };
        state.apply(&group, p, record.offset, value);
    }
    // Deletions matter only against commits still in flight; at open there
    // are none.
    for slots in state.groups.values_mut() {
        slots.retain(|_, slot| slot.value.is_some());
    }
    state.groups.retain(|_, slots| !slots.is_empty());
    Ok(state)
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::storage::sim::SimStorage;

    fn commit(offset: u64) -> OffsetAndMetadata {
        OffsetAndMetadata::new(offset)
    }

    fn open(sim: &SimStorage, segment_bytes: u64) -> OffsetStore {
        open_compacting_every(sim, segment_bytes, 1)
    }

    fn open_compacting_every(sim: &SimStorage, segment_bytes: u64, rolls: usize) -> OffsetStore {
        OffsetStore::open_on(
            Path::new("/offsets"),
            Arc::new(sim.clone()),
            segment_bytes,
            rolls,
        )
        .expect("open")
    }

    #[test]
    fn acknowledged_commits_survive_power_loss() {
        for seed in 0..20 {
            let sim = SimStorage::new(seed);
            let store = open(&sim, INTERNAL_SEGMENT_BYTES);
            for i in 0..10u64 {
                store
                    .commit("g", &[(0, commit(i)), (1, commit(i * 2))])
                    .expect("commit");
            }
            store
                .commit("other", &[(0, commit(7).with_metadata("m"))])
                .expect("commit");
            sim.crash();
            drop(store);
            let store = open(&sim, INTERNAL_SEGMENT_BYTES);
            assert_eq!(store.committed("g", 0), Some(commit(9)), "seed {seed}");
            assert_eq!(store.committed("g", 1), Some(commit(18)), "seed {seed}");
            assert_eq!(
                store.committed("other", 0),
                Some(commit(7).with_metadata("m"))
            );
            assert_eq!(store.groups(), ["g", "other"]);
        }
    }

    #[test]
    fn a_commit_cut_by_a_crash_is_all_or_nothing() {
        // The commit's batch is torn at every possible write; the store
        // reopens with either all of it or none of it.
        let mut failed = 0;
        for n in 1..6 {
            let sim = SimStorage::new(n);
            let store = open(&sim, INTERNAL_SEGMENT_BYTES);
            store
                .commit("g", &[(0, commit(1)), (1, commit(1))])
                .expect("commit");
            sim.fail_after(n, crate::storage::sim::Fault::SyncFails);
            let result = store.commit("g", &[(0, commit(2)), (1, commit(2))]);
            sim.crash();
            drop(store);
            let store = open(&sim, INTERNAL_SEGMENT_BYTES);
            let offsets = store.group_offsets("g");
            let values: Vec<u64> = offsets.values().map(|c| c.offset).collect();
            assert!(
                values == [1, 1] || values == [2, 2],
                "n {n}: {values:?} after {result:?}"
            );
            if result.is_ok() {
                assert_eq!(values, [2, 2], "n {n}: an acknowledged commit was lost");
            } else {
                failed += 1;
            }
        }
        assert!(failed > 0, "no commit failed: the test tests nothing");
    }

    #[test]
    fn deletes_and_duplicates() {
        let sim = SimStorage::new(1);
        let store = open(&sim, INTERNAL_SEGMENT_BYTES);
        store
            .commit("g", &[(0, commit(5)), (0, commit(3)), (2, commit(1))])
            .expect("commit");
        assert_eq!(store.committed("g", 0), Some(commit(3)));
        let records = store.log_records();
        store.commit("g", &[(0, commit(3))]).expect("commit");
        assert_eq!(
            store.log_records(),
            records,
            "an unchanged commit was written"
        );
        store.delete("g", &[0, 9]).expect("delete");
        assert_eq!(store.committed("g", 0), None);
        assert_eq!(
            store.group_offsets("g").keys().copied().collect::<Vec<_>>(),
            [2]
        );
        store.delete("g", &[2]).expect("delete");
        assert!(store.groups().is_empty());
        drop(store);
        let store = open(&sim, INTERNAL_SEGMENT_BYTES);
        assert!(store.groups().is_empty());
        assert_eq!(store.committed("g", 2), None);
        store.commit("g", &[(2, commit(4))]).expect("commit");
        assert_eq!(store.committed("g", 2), Some(commit(4)));
    }

    #[test]
    fn bad_input_is_refused() {
        let sim = SimStorage::new(1);
        let store = open(&sim, INTERNAL_SEGMENT_BYTES);
        assert!(matches!(
            store.commit("", &[(0, commit(1))]),
            Err(Error::InvalidConfig {
                field: "group_id",
                ..
            })
        ));
        let metadata = "m".repeat(MAX_METADATA_BYTES + 1);
        assert!(matches!(
            store.commit("g", &[(0, commit(1).with_metadata(metadata))]),
            Err(Error::OffsetMetadataTooLarge {
                size: 4097,
                max: 4096
            })
        ));
        assert_eq!(store.committed("g", 0), None);
        let metadata = "m".repeat(MAX_METADATA_BYTES);
        store
            .commit("g", &[(0, commit(1).with_metadata(metadata.clone()))])
            .expect("the largest metadata");
        assert_eq!(store.committed("g", 0).map(|c| c.metadata), Some(metadata));
    }

    /// Each commit here is one batch of about 100 bytes, so a segment
    /// holds about six.
    const SMALL_SEGMENT: u64 = 600;

    #[test]
    fn compaction_bounds_the_log_and_keeps_every_commit() {
        let sim = SimStorage::new(3);
        let store = open(&sim, SMALL_SEGMENT);
        let mut max_records = 0;
        for i in 0..400u64 {
            store
                .commit("a", &[((i % 5) as u32, commit(i))])
                .expect("commit");
            if i % 7 == 0 {
                store.commit("b", &[(0, commit(i))]).expect("commit");
            }
            if i == 200 {
                store.delete("a", &[4]).expect("delete");
            }
            max_records = max_records.max(store.log_records());
        }
        // Six live keys and a tombstone in the compacted part, at most a
        // segment's worth of commits after it.
        assert!(max_records <= 30, "the log grew to {max_records} records");
        let expected = store.group_offsets("a");
        assert_eq!(expected.len(), 5);
        assert_eq!(expected[&0], commit(395));
        assert_eq!(expected[&4], commit(399));
        assert_eq!(store.committed("b", 0), Some(commit(399)));
        sim.crash();
        drop(store);
        let store = open(&sim, SMALL_SEGMENT);
        assert_eq!(store.group_offsets("a"), expected);
        assert_eq!(store.committed("b", 0), Some(commit(399)));
        assert!(store.log_records() <= 30);
    }

    #[test]
    fn a_failure_inside_a_compaction_loses_no_commit() {
        let mut failed = 0;
        for n in 1..16 {
            let sim = SimStorage::new(n);
            // Commits that fill segments without compacting them.
            let store = open_compacting_every(&sim, SMALL_SEGMENT, usize::MAX);
            for i in 0..40u64 {
                store
                    .commit("g", &[((i % 3) as u32, commit(i))])
                    .expect("commit");
            }
            store.commit("g", &[(0, commit(100))]).expect("commit");
            let before = store.group_offsets("g");
            let records = store.log_records();
            sim.fail_after(n, crate::storage::sim::Fault::Eio);
            if store.compact_now().is_err() {
                failed += 1;
            }
            sim.crash();
            drop(store);
            let store = open(&sim, SMALL_SEGMENT);
            assert_eq!(store.group_offsets("g"), before, "n {n}");
            assert!(store.log_records() <= records, "n {n}");
        }
        assert!(failed > 0, "no compaction met the fault");
    }
}
