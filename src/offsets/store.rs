//! Committed offsets per (group, partition), kept in an internal log.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use parking_lot::{Condvar, Mutex, RwLock};

use crate::config::{Config, Durability};
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

/// The internal log rewrites its live commits and drops the rest once it
/// holds at least this many records...
const REWRITE_MIN_RECORDS: u64 = 10_000;
/// ...and this many times as many records as live commits.
const REWRITE_FACTOR: u64 = 4;

const INTERNAL_SEGMENT_BYTES: u64 = 16 << 20;
const INTERNAL_MAX_BATCH_BYTES: u32 = 4 << 20;
const INTERNAL_MAX_INDEX_BYTES: u32 = 64 << 10;
/// Room for a record's own framing (lengths, deltas, attributes) on top of
/// its key and value, when splitting a rewrite into batches.
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
/// **Growth.** The log has no compaction yet, so every commit adds a record.
/// To keep the log, and the time to read it at open, proportional to the
/// number of live commits rather than to the number of commits ever made,
/// the store rewrites itself: once its log holds at least 10 000 records and
/// four times as many records as live commits, it appends every live commit
/// again and advances its log start offset past everything older (closed
/// segments below it are deleted). A crash in the middle leaves the old
/// records in place, which read back to the same state. This stands in for
/// compaction and is to be replaced by it (`Cleanup::Compact`) when the log
/// supports it.
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
    /// Commits and deletes hold it shared; a rewrite holds it alone, so
    /// that it sees every commit made before it and none made during it.
    gate: RwLock<()>,
    state: Mutex<State>,
    rewrite_min_records: u64,
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
            REWRITE_MIN_RECORDS,
        )?);
        stores.insert(key, Arc::downgrade(&shared));
        Ok(OffsetStore { shared })
    }

    /// A store on `storage` in `dir`, shared with no one (for simulated
    /// disks).
    #[cfg(test)]
    pub(crate) fn open_on(
        dir: &Path,
        storage: Arc<dyn Storage>,
        rewrite_min_records: u64,
    ) -> Result<OffsetStore> {
        let shared = Shared::open(dir, storage, None, rewrite_min_records)?;
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
        let gate = shared.gate.read();
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
        drop(gate);
        // The commit is durable whatever happens now. A rewrite that fails
        // on I/O poisons the internal log, and the next commit reports it.
        let _ = shared.rewrite_if_due();
        Ok(())
    }

    /// Records in the internal log (for tests of the rewrite).
    #[cfg(test)]
    fn log_records(&self) -> u64 {
        let p = &self.shared.partition;
        p.end_offset() - p.start_offset()
    }
}

impl Shared {
    fn open(
        dir: &Path,
        storage: Arc<dyn Storage>,
        registered: Option<DirKey>,
        rewrite_min_records: u64,
    ) -> Result<Shared> {
        let config = Config::default()
            .partitions(1)
            .durability(Durability::Sync)
            .retention_age(None)
            .retention_bytes(None)
            .segment_bytes(INTERNAL_SEGMENT_BYTES)
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
            gate: RwLock::new(()),
            state: Mutex::new(state),
            rewrite_min_records,
        })
    }

    fn rewrite_due(&self) -> bool {
        let records = self.partition.end_offset() - self.partition.start_offset();
        let live = self.state.lock().live;
        records
            >= self
                .rewrite_min_records
                .max(live.saturating_mul(REWRITE_FACTOR))
    }

    /// Appends every live commit again, then moves the log start offset to
    /// the first of those records.
    fn rewrite_if_due(&self) -> Result<()> {
        if !self.rewrite_due() {
            return Ok(());
        }
        let _gate = self.gate.write();
        if !self.rewrite_due() {
            return Ok(());
        }
        let live: Vec<(String, u32, OffsetAndMetadata)> = {
            let state = self.state.lock();
            state
                .groups
                .iter()
                .flat_map(|(group, slots)| {
                    slots
                        .iter()
                        .filter_map(|(p, slot)| Some((group.clone(), *p, slot.value.clone()?)))
                })
                .collect()
        };
        let limit = INTERNAL_MAX_BATCH_BYTES as usize / 2;
        let mut new_state = State::default();
        let mut new_start = None;
        let mut rest = &live[..];
        while !rest.is_empty() {
            let mut bytes = 0;
            let mut records = Vec::new();
            for (group, p, commit) in rest {
                if bytes >= limit {
                    break;
                }
                let key = encode_key(group, *p);
                let value = encode_value(commit.offset, &commit.metadata);
                bytes += key.len() + value.len() + RECORD_OVERHEAD_BYTES;
                records.push(Record::new(value).with_key(key));
            }
            let appended = self.partition.append(&records)?;
            new_start.get_or_insert(appended.base_offset);
            let (chunk, after) = rest.split_at(records.len());
            for (log_offset, (group, p, commit)) in (appended.base_offset..).zip(chunk) {
                new_state.apply(group, *p, log_offset, Some(commit.clone()));
            }
            rest = after;
        }
        // With no live commit, everything goes.
        let new_start = new_start.unwrap_or_else(|| self.partition.end_offset());
        self.partition.delete_records_before(new_start)?;
        *self.state.lock() = new_state;
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

    fn open(sim: &SimStorage, rewrite_min_records: u64) -> OffsetStore {
        OffsetStore::open_on(
            Path::new("/offsets"),
            Arc::new(sim.clone()),
            rewrite_min_records,
        )
        .expect("open")
    }

    #[test]
    fn acknowledged_commits_survive_power_loss() {
        for seed in 0..20 {
            let sim = SimStorage::new(seed);
            let store = open(&sim, REWRITE_MIN_RECORDS);
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
            let store = open(&sim, REWRITE_MIN_RECORDS);
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
            let store = open(&sim, REWRITE_MIN_RECORDS);
            store
                .commit("g", &[(0, commit(1)), (1, commit(1))])
                .expect("commit");
            sim.fail_after(n, crate::storage::sim::Fault::SyncFails);
            let result = store.commit("g", &[(0, commit(2)), (1, commit(2))]);
            sim.crash();
            drop(store);
            let store = open(&sim, REWRITE_MIN_RECORDS);
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
        let store = open(&sim, REWRITE_MIN_RECORDS);
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
        let store = open(&sim, REWRITE_MIN_RECORDS);
        assert!(store.groups().is_empty());
        assert_eq!(store.committed("g", 2), None);
        store.commit("g", &[(2, commit(4))]).expect("commit");
        assert_eq!(store.committed("g", 2), Some(commit(4)));
    }

    #[test]
    fn bad_input_is_refused() {
        let sim = SimStorage::new(1);
        let store = open(&sim, REWRITE_MIN_RECORDS);
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

    #[test]
    fn the_rewrite_bounds_the_log_and_keeps_every_commit() {
        let sim = SimStorage::new(3);
        let store = open(&sim, 50);
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
        assert!(max_records <= 50, "the log grew to {max_records} records");
        let expected = store.group_offsets("a");
        assert_eq!(expected.len(), 5);
        assert_eq!(expected[&0], commit(395));
        assert_eq!(expected[&4], commit(399));
        assert_eq!(store.committed("b", 0), Some(commit(399)));
        sim.crash();
        drop(store);
        let store = open(&sim, 50);
        assert_eq!(store.group_offsets("a"), expected);
        assert_eq!(store.committed("b", 0), Some(commit(399)));
        assert!(store.log_records() <= 50);
    }

    #[test]
    fn a_crash_inside_a_rewrite_loses_nothing() {
        let (mut commit_failed, mut rewrite_failed) = (0, 0);
        for n in 1..8 {
            let sim = SimStorage::new(n);
            let store = open(&sim, 20);
            for i in 0..19u64 {
                store
                    .commit("g", &[((i % 3) as u32, commit(i))])
                    .expect("commit");
            }
            let before = store.group_offsets("g");
            // The 20th record triggers the rewrite; fail a write inside it.
            sim.fail_after(n, crate::storage::sim::Fault::Eio);
            let result = store.commit("g", &[(0, commit(100))]);
            match &result {
                Err(_) => commit_failed += 1,
                // A rewrite leaves the three live commits alone.
                Ok(()) if store.log_records() > 3 => rewrite_failed += 1,
                Ok(()) => {}
            }
            sim.crash();
            drop(store);
            let store = open(&sim, 20);
            let after = store.group_offsets("g");
            if result.is_ok() {
                assert_eq!(after[&0], commit(100), "n {n}");
            } else {
                assert!(after[&0] == commit(100) || after[&0] == before[&0], "n {n}");
            }
            assert_eq!(after[&1], before[&1], "n {n}");
            assert_eq!(after[&2], before[&2], "n {n}");
        }
        assert!(
            commit_failed > 0 && rewrite_failed > 0,
            "{commit_failed} {rewrite_failed}"
        );
    }
}
