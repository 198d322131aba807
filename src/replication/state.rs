//! What a replica keeps on disk besides its log: the leader epoch cache
//! (each epoch with the offset where it starts), the highest leader epoch
//! it has accepted, and its high watermark.
//!
//! The file `replica-state` in the partition's directory is replaced as a
//! whole: written to `replica-state.tmp`, synced, renamed over the old one,
//! and the directory synced. A crash leaves the old file or the new one.

use std::path::{Path, PathBuf};

use crate::error::{CorruptKind, Error, Result};
use crate::partition::Partition;

pub(crate) const FILE_NAME: &str = "replica-state";
const TMP_NAME: &str = "replica-state.tmp";
const MAGIC: [u8; 4] = *b"DLRS";
const VERSION: u8 = 1;
const HEADER_BYTES: usize = 32;
const ENTRY_BYTES: usize = 16;
/// More epochs than any real partition sees; a file claiming more is damaged.
const MAX_ENTRIES: usize = 1 << 20;

/// The leader epochs of a log: epoch `e` covers the offsets from its start
/// up to the start of the next epoch (the last one up to the log end).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EpochCache {
    /// (epoch, start offset), both strictly increasing.
    entries: Vec<(i32, u64)>,
}

impl EpochCache {
    /// The newest epoch with its start offset.
    pub(crate) fn latest(&self) -> Option<(i32, u64)> {
        self.entries.last().copied()
    }

    /// Records that `epoch` starts at `start`. An epoch not newer than the
    /// latest is ignored; a start below the latest one's is refused by
    /// returning false (it would mean offsets went backwards).
    pub(crate) fn assign(&mut self, epoch: i32, start: u64) -> bool {
        match self.entries.last() {
            Some(&(latest, _)) if epoch <= latest => true,
            Some(&(_, latest_start)) if start < latest_start => false,
            _ => {
                self.entries.push((epoch, start));
                true
            }
        }
    }

    /// The largest epoch at or below `epoch` and the offset where it ends
    /// (the start of the next epoch, or `log_end` for the newest). `None`
    /// when every epoch known is newer than `epoch`.
    pub(crate) fn end_offset_for(&self, epoch: i32, log_end: u64) -> Option<(i32, u64)> {
        let at = self.entries.partition_point(|&(e, _)| e <= epoch);
        if at == 0 {
            return None;
        }
        let (found, _) = self.entries[at - 1];
        let end = self.entries.get(at).map_or(log_end, |&(_, start)| start);
        Some((found, end.min(log_end)))
    }

    /// The start offset of the first epoch known.
    pub(crate) fn first_start(&self) -> Option<u64> {
        self.entries.first().map(|&(_, start)| start)
    }

    /// Forgets the epochs that start at or after `end` (the log was cut
    /// there). Returns whether anything changed.
    pub(crate) fn truncate_from(&mut self, end: u64) -> bool {
        let keep = self.entries.partition_point(|&(_, start)| start < end);
        let changed = keep < self.entries.len();
        self.entries.truncate(keep);
        changed
    }

    /// The epochs with their start offsets, oldest first.
    pub(crate) fn to_vec(&self) -> Vec<(i32, u64)> {
        self.entries.clone()
    }

    #[cfg(test)]
    pub(crate) fn entries(&self) -> &[(i32, u64)] {
        &self.entries
    }
}

/// The contents of `replica-state`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ReplicaState {
    /// The highest leader epoch this replica has accepted (as leader or
    /// follower). A replica never leads an epoch at or below it that it did
    /// not lead in this incarnation, so that a restarted leader cannot
    /// rewrite an epoch whose records followers already copied.
    pub max_epoch: i32,
    /// The high watermark when last checkpointed; never above the log end.
    pub high_watermark: u64,
    pub epochs: EpochCache,
}

impl ReplicaState {
    fn encode(&self) -> Vec<u8> {
        let mut buf = vec![0u8; HEADER_BYTES + self.epochs.entries.len() * ENTRY_BYTES];
        buf[4..8].copy_from_slice(&MAGIC);
        buf[8] = VERSION;
        buf[12..16].copy_from_slice(&self.max_epoch.to_le_bytes());
        buf[16..24].copy_from_slice(&self.high_watermark.to_le_bytes());
        let count = u32::try_from(self.epochs.entries.len()).expect("bounded by MAX_ENTRIES");
        buf[24..28].copy_from_slice(&count.to_le_bytes());
        for (i, &(epoch, start)) in self.epochs.entries.iter().enumerate() {
            let at = HEADER_BYTES + i * ENTRY_BYTES;
            buf[at..at + 4].copy_from_slice(&epoch.to_le_bytes());
            buf[at + 8..at + 16].copy_from_slice(&start.to_le_bytes());
        }
        let crc = crc32fast::hash(&buf[4..]);
        buf[0..4].copy_from_slice(&crc.to_le_bytes());
        buf
    }

    fn decode(buf: &[u8]) -> Result<ReplicaState, CorruptKind> {
        let bad = CorruptKind::Metadata;
        if buf.len() < HEADER_BYTES {
            return Err(CorruptKind::Truncated {
                needed: HEADER_BYTES as u64,
                available: buf.len() as u64,
            });
        }
        let stored = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes"));
        let computed = crc32fast::hash(&buf[4..]);
        if stored != computed {
            return Err(CorruptKind::Checksum { stored, computed });
        }
        if buf[4..8] != MAGIC {
            return Err(bad("replica-state: bad magic"));
        }
        if buf[8] != VERSION {
            return Err(CorruptKind::Version(buf[8]));
        }
        let max_epoch = i32::from_le_bytes(buf[12..16].try_into().expect("4 bytes"));
        let high_watermark = u64::from_le_bytes(buf[16..24].try_into().expect("8 bytes"));
        let count = u32::from_le_bytes(buf[24..28].try_into().expect("4 bytes")) as usize;
        if count > MAX_ENTRIES || buf.len() != HEADER_BYTES + count * ENTRY_BYTES {
            return Err(bad("replica-state: entry count does not match the length"));
        }
        let mut epochs = EpochCache::default();
        for i in 0..count {
            let at = HEADER_BYTES + i * ENTRY_BYTES;
            let epoch = i32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"));
            let start = u64::from_le_bytes(buf[at + 8..at + 16].try_into().expect("8 bytes"));
            let newer = epochs.latest().is_none_or(|(e, s)| epoch > e && start >= s);
            if epoch < 0 || !newer {
                return Err(bad("replica-state: epochs out of order"));
            }
            epochs.entries.push((epoch, start));
        }
        if epochs.latest().is_some_and(|(e, _)| e > max_epoch) {
            return Err(bad("replica-state: an epoch above the maximum"));
        }
        Ok(ReplicaState {
            max_epoch,
            high_watermark,
            epochs,
        })
    }

    /// Reads the state of `partition`, fitted to its log: epochs that start
    /// at or past the log end are dropped (their records were lost in a
    /// crash) and the high watermark is cut to the log end; a state that
    /// needed fitting is stored again at once, so that an epoch dropped
    /// here cannot come back once the log grows past its start. A missing
    /// file is an empty state.
    pub(crate) fn load(partition: &Partition) -> Result<ReplicaState> {
        let storage = partition.storage();
        let path = partition.dir().join(FILE_NAME);
        let mut state = if storage.exists(&path).map_err(|e| Error::io(&path, e))? {
            let file = storage
                .open(&path, false)
                .map_err(|e| Error::io(&path, e))?;
            let len = file.len().map_err(|e| Error::io(&path, e))?;
            let max = (HEADER_BYTES + MAX_ENTRIES * ENTRY_BYTES) as u64;
            if len > max {
                return Err(Error::corrupt(
                    &path,
                    0,
                    CorruptKind::Length { length: len },
                ));
            }
            let mut buf = vec![0u8; len as usize];
            crate::storage::read_exact_at(&*file, &mut buf, 0).map_err(|e| Error::io(&path, e))?;
            ReplicaState::decode(&buf).map_err(|kind| Error::corrupt(&path, 0, kind))?
        } else {
            ReplicaState {
                max_epoch: -1,
                ..ReplicaState::default()
            }
        };
        let end = partition.end_offset();
        let fitted = state.epochs.truncate_from(end) || state.high_watermark > end;
        state.high_watermark = state.high_watermark.min(end);
        if fitted {
            state.store(partition)?;
        }
        Ok(state)
    }

    /// Replaces the file with this state, durably.
    pub(crate) fn store(&self, partition: &Partition) -> Result<()> {
        let storage = partition.storage();
        let dir = partition.dir();
        let tmp = dir.join(TMP_NAME);
        let path = dir.join(FILE_NAME);
        let io = |path: &Path| {
            let path: PathBuf = path.to_path_buf();
            move |e| Error::io(path, e)
        };
        let bytes = self.encode();
        let file = storage.open(&tmp, true).map_err(io(&tmp))?;
        file.set_len(0).map_err(io(&tmp))?;
        file.write_at(&bytes, 0).map_err(io(&tmp))?;
        file.sync_data().map_err(io(&tmp))?;
        drop(file);
        storage.rename(&tmp, &path).map_err(io(&path))?;
        storage.sync_dir(dir).map_err(io(dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, u64)]) -> EpochCache {
        let mut cache = EpochCache::default();
        for &(e, s) in entries {
            assert!(cache.assign(e, s));
        }
        cache
    }

    #[test]
    fn end_offsets_follow_the_next_epoch_start() {
        let c = cache(&[(1, 0), (3, 10), (4, 25)]);
        assert_eq!(c.end_offset_for(0, 40), None);
        assert_eq!(c.end_offset_for(1, 40), Some((1, 10)));
        assert_eq!(c.end_offset_for(2, 40), Some((1, 10)));
        assert_eq!(c.end_offset_for(3, 40), Some((3, 25)));
        assert_eq!(c.end_offset_for(4, 40), Some((4, 40)));
        assert_eq!(c.end_offset_for(9, 40), Some((4, 40)));
    }

    #[test]
    fn assign_ignores_old_epochs_and_refuses_going_back() {
        let mut c = cache(&[(2, 5)]);
        assert!(c.assign(1, 9));
        assert!(c.assign(2, 9));
        assert_eq!(c.entries(), &[(2, 5)]);
        assert!(!c.assign(3, 4));
        assert!(c.assign(3, 5));
        assert_eq!(c.entries(), &[(2, 5), (3, 5)]);
    }

    #[test]
    fn truncation_drops_epochs_starting_at_or_after_the_cut() {
        let mut c = cache(&[(1, 0), (2, 10), (3, 20)]);
        assert!(c.truncate_from(20));
        assert_eq!(c.entries(), &[(1, 0), (2, 10)]);
        assert!(!c.truncate_from(15));
        assert!(c.truncate_from(0));
        assert!(c.entries().is_empty());
    }

    #[test]
    fn the_file_round_trips_and_every_damage_is_caught() {
        let state = ReplicaState {
            max_epoch: 7,
            high_watermark: 1234,
            epochs: cache(&[(1, 0), (5, 100), (7, 900)]),
        };
        let bytes = state.encode();
        assert_eq!(ReplicaState::decode(&bytes).unwrap(), state);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(
                ReplicaState::decode(&bad).is_err(),
                "flip at {i} not caught"
            );
        }
        for len in 0..bytes.len() {
            assert!(ReplicaState::decode(&bytes[..len]).is_err());
        }
    }
}
