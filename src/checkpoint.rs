//! The partition checkpoint: where recovery may start, whether the last
//! shutdown was clean, and the log start offset.
//!
//! The file holds two 64-byte slots, each with its own checksum and a
//! sequence number; the valid slot with the higher sequence wins. One slot
//! holds the latest synced state and is never written over until a newer
//! synced state is in the other one, so a torn write can only damage a state
//! that was not promised durable.
//!
//! Most updates are written without an fsync: a checkpoint only ever
//! records data that was already synced, so if it is lost the older one
//! stays true (recovery then scans more than it had to). Updates whose loss
//! would be wrong — the clean-shutdown mark being cleared at open, a lowered
//! recovery point before a truncation, a raised log start offset — are
//! synced before the log goes on.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::storage::{Storage, StorageFile};

pub(crate) const FILE_NAME: &str = "checkpoint";
const MAGIC: [u8; 4] = *b"DLCP";
const VERSION: u8 = 1;

const CRC_OFFSET: usize = 0;
const MAGIC_OFFSET: usize = CRC_OFFSET + 4;
const VERSION_OFFSET: usize = MAGIC_OFFSET + 4;
const CLEAN_OFFSET: usize = VERSION_OFFSET + 1;
const RESERVED_OFFSET: usize = CLEAN_OFFSET + 1;
const SEQUENCE_OFFSET: usize = RESERVED_OFFSET + 6;
const LOG_START_OFFSET: usize = SEQUENCE_OFFSET + 8;
const SEGMENT_OFFSET: usize = LOG_START_OFFSET + 8;
const POSITION_OFFSET: usize = SEGMENT_OFFSET + 8;
const NEXT_OFFSET_OFFSET: usize = POSITION_OFFSET + 8;
const TAIL_OFFSET: usize = NEXT_OFFSET_OFFSET + 8;
/// Size of one slot.
pub(crate) const SLOT_BYTES: usize = TAIL_OFFSET + 8;
const _: () = assert!(SLOT_BYTES == 64);

/// The state a checkpoint records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct State {
    /// The log was closed cleanly and nothing was written since.
    pub clean: bool,
    /// The partition's log start offset.
    pub log_start_offset: u64,
    /// Base offset of the segment that holds the recovery point.
    pub segment: u64,
    /// Every byte of that segment below this position is synced.
    pub position: u64,
    /// The offset that follows the synced bytes.
    pub next_offset: u64,
}

impl State {
    fn encode(&self, sequence: u64) -> [u8; SLOT_BYTES] {
        let mut slot = [0u8; SLOT_BYTES];
        slot[MAGIC_OFFSET..MAGIC_OFFSET + 4].copy_from_slice(&MAGIC);
        slot[VERSION_OFFSET] = VERSION;
        slot[CLEAN_OFFSET] = u8::from(self.clean);
        for (at, value) in [
            (SEQUENCE_OFFSET, sequence),
            (LOG_START_OFFSET, self.log_start_offset),
            (SEGMENT_OFFSET, self.segment),
            (POSITION_OFFSET, self.position),
            (NEXT_OFFSET_OFFSET, self.next_offset),
        ] {
            slot[at..at + 8].copy_from_slice(&value.to_le_bytes());
        }
        let crc = crc32fast::hash(&slot[MAGIC_OFFSET..]);
        slot[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
        slot
    }

    /// Decodes a slot; `None` if it does not check out (never written, torn
    /// or damaged).
    fn decode(slot: &[u8]) -> Option<(u64, State)> {
        let slot = slot.get(..SLOT_BYTES)?;
        let stored = u32::from_le_bytes(slot[CRC_OFFSET..CRC_OFFSET + 4].try_into().ok()?);
        if stored != crc32fast::hash(&slot[MAGIC_OFFSET..])
            || slot[MAGIC_OFFSET..MAGIC_OFFSET + 4] != MAGIC
            || slot[VERSION_OFFSET] != VERSION
            || slot[CLEAN_OFFSET] > 1
        {
            return None;
        }
        let u64_at = |at: usize| u64::from_le_bytes(slot[at..at + 8].try_into().expect("8 bytes"));
        Some((
            u64_at(SEQUENCE_OFFSET),
            State {
                clean: slot[CLEAN_OFFSET] == 1,
                log_start_offset: u64_at(LOG_START_OFFSET),
                segment: u64_at(SEGMENT_OFFSET),
                position: u64_at(POSITION_OFFSET),
                next_offset: u64_at(NEXT_OFFSET_OFFSET),
            },
        ))
    }
}

/// The open checkpoint file of a partition.
#[derive(Debug)]
pub(crate) struct Checkpoint {
    path: PathBuf,
    file: Arc<dyn StorageFile>,
    sequence: u64,
    /// The slot (0 or 1) holding the latest synced state.
    durable_slot: usize,
    created: bool,
    state: State,
}

impl Checkpoint {
    /// Opens (or creates) the checkpoint of the partition in `dir` and reads
    /// the latest valid state, if any. When the file was created, the
    /// caller syncs the directory (see [`Checkpoint::created`]).
    pub(crate) fn open(storage: &dyn Storage, dir: &Path) -> Result<(Checkpoint, Option<State>)> {
        let path = dir.join(FILE_NAME);
        let created = !storage.exists(&path).map_err(|e| Error::io(&path, e))?;
        let file = storage.open(&path, true).map_err(|e| Error::io(&path, e))?;
        let mut buf = vec![0u8; 2 * SLOT_BYTES];
        let read = read_up_to(&*file, &mut buf).map_err(|e| Error::io(&path, e))?;
        buf.truncate(read);
        let best = buf
            .chunks(SLOT_BYTES)
            .enumerate()
            .filter_map(|(slot, bytes)| State::decode(bytes).map(|(seq, state)| (seq, slot, state)))
            .max_by_key(|(sequence, _, _)| *sequence);
        // The slot read from is the one that may be durable; writes go to
        // the other until a synced write makes that one durable.
        let (sequence, durable_slot, state) = match best {
            Some((sequence, slot, state)) => (sequence, slot, Some(state)),
            None => (0, 1, None),
        };
        let placeholder = State {
            clean: false,
            log_start_offset: 0,
            segment: 0,
            position: 0,
            next_offset: 0,
        };
        let checkpoint = Checkpoint {
            path,
            file,
            sequence,
            durable_slot,
            created,
            state: state.unwrap_or(placeholder),
        };
        Ok((checkpoint, state))
    }

    /// True if `open` created the file: its name is durable only once the
    /// directory is synced.
    pub(crate) fn created(&self) -> bool {
        self.created
    }

    pub(crate) fn state(&self) -> State {
        self.state
    }

    /// Writes a new state. `sync` makes it durable.
    ///
    /// Every write goes to the slot that does not hold the latest synced
    /// state, so a write torn by a power loss can only cost states that were
    /// never promised durable: the synced one is still in the other slot. A
    /// synced write then becomes the durable slot.
    pub(crate) fn write(&mut self, state: State, sync: bool) -> Result<()> {
        let sequence = self.sequence + 1;
        let slot = 1 - self.durable_slot;
        let position = (slot * SLOT_BYTES) as u64;
        self.file
            .write_at(&state.encode(sequence), position)
            .map_err(|e| Error::io(&self.path, e))?;
        if sync {
            self.file
                .sync_data()
                .map_err(|e| Error::io(&self.path, e))?;
            self.durable_slot = slot;
        }
        self.sequence = sequence;
        self.state = state;
        Ok(())
    }
}

fn read_up_to(file: &dyn StorageFile, buf: &mut [u8]) -> io::Result<usize> {
    let mut read = 0;
    while read < buf.len() {
        match file.read_at(&mut buf[read..], read as u64)? {
            0 => break,
            n => read += n,
        }
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_round_trips_and_rejects_damage() {
        let state = State {
            clean: true,
            log_start_offset: 3,
            segment: 100,
            position: 4096,
            next_offset: 150,
        };
        let slot = state.encode(7);
        assert_eq!(State::decode(&slot), Some((7, state)));
        for byte in 0..SLOT_BYTES {
            let mut bad = slot;
            bad[byte] ^= 0x10;
            assert_eq!(State::decode(&bad), None, "flip in byte {byte} passed");
        }
        assert_eq!(State::decode(&[0u8; SLOT_BYTES]), None);
    }
}
