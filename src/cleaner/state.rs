//! The cleaner's state file, `cleaner-state` (see `FORMAT.md`): how far the
//! partition is compacted, when its tombstones were first seen, and the swap
//! of cleaned segments that is committed but may not be finished.
//!
//! ```text
//! crc:u32 magic:"DLCS" version:u8 reserved:[u8;3]
//! dirty_offset:u64 expired_below:u64 mark_count:u32 swap_count:u32
//! mark_count × (below:u64 seen_ms:i64)
//! swap_count × (base_offset:u64 end_offset:u64 log_bytes:u64)
//! ```
//!
//! `crc` is CRC-32 of every byte after it. The file is replaced whole: a new
//! one is written to `cleaner-state.tmp`, fdatasynced and renamed over it,
//! so it is always one complete state or the previous one.

use std::path::Path;

use crate::error::{CorruptKind, Error, Result};
use crate::storage::{Storage, read_exact_at};

pub(crate) const FILE_NAME: &str = "cleaner-state";
pub(crate) const TEMP_FILE_NAME: &str = "cleaner-state.tmp";

const MAGIC: [u8; 4] = *b"DLCS";
const VERSION: u8 = 1;

const CRC_OFFSET: usize = 0;
const MAGIC_OFFSET: usize = CRC_OFFSET + 4;
const VERSION_OFFSET: usize = MAGIC_OFFSET + 4;
const RESERVED_OFFSET: usize = VERSION_OFFSET + 1;
const DIRTY_OFFSET_OFFSET: usize = RESERVED_OFFSET + 3;
const EXPIRED_BELOW_OFFSET: usize = DIRTY_OFFSET_OFFSET + 8;
const MARK_COUNT_OFFSET: usize = EXPIRED_BELOW_OFFSET + 8;
const SWAP_COUNT_OFFSET: usize = MARK_COUNT_OFFSET + 4;
const HEADER_BYTES: usize = SWAP_COUNT_OFFSET + 4;
const MARK_BYTES: usize = 8 + 8;
const SWAP_BYTES: usize = 8 + 8 + 8;
const _: () = assert!(HEADER_BYTES == 36);

/// Tombstone marks kept at most; beyond it the two oldest that are still
/// waiting merge, which only keeps some tombstones longer.
pub(crate) const MARKS_MAX: usize = 256;
/// A state file larger than this is not read (it could hold every segment
/// of a huge partition in its swap and still be far below it).
const FILE_BYTES_MAX: u64 = 64 << 20;

/// Tombstones below `below` (and at or above the previous mark's `below`)
/// were first seen by a clean at `seen_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TombstoneMark {
    pub below: u64,
    pub seen_ms: i64,
}

/// One group of a committed swap: the cleaned files `<base_offset>.*.cleaned`
/// replace every segment whose base offset is in `base_offset..end_offset`;
/// the new `.log` is `log_bytes` long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SwapGroup {
    pub base_offset: u64,
    pub end_offset: u64,
    pub log_bytes: u64,
}

/// What `cleaner-state` holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CleanerState {
    /// Every offset below it has been through a clean: there, no key has
    /// more than one record, and a gap between segments is compaction's.
    pub dirty_offset: u64,
    /// Tombstones below it have been removed: their retention was over.
    pub expired_below: u64,
    /// Increasing in both fields.
    pub marks: Vec<TombstoneMark>,
    /// Non-empty only between a swap's commit and its end.
    pub swap: Vec<SwapGroup>,
}

impl CleanerState {
    /// Tombstones below the returned offset may be removed at `now_ms`:
    /// their first clean was at least `retention_ms` before.
    pub(crate) fn removable_below(&self, now_ms: i64, retention_ms: i64) -> u64 {
        self.marks
            .iter()
            .filter(|m| m.seen_ms.saturating_add(retention_ms) <= now_ms)
            .map(|m| m.below)
            .fold(self.expired_below, u64::max)
    }

    /// Records a clean at `now_ms` that went up to `cleaned_to` and removed
    /// the tombstones below `removed_below`.
    pub(crate) fn record_clean(&mut self, cleaned_to: u64, now_ms: i64, removed_below: u64) {
        self.expired_below = self.expired_below.max(removed_below);
        let expired = self.expired_below;
        self.marks.retain(|m| m.below > expired);
        self.dirty_offset = self.dirty_offset.max(cleaned_to);
        let last = self.marks.last().copied();
        if cleaned_to > last.map_or(expired, |m| m.below) {
            // A clock that went back must not date tombstones earlier than
            // a clean that came before.
            let seen_ms = last.map_or(now_ms, |m| m.seen_ms.max(now_ms));
            self.marks.push(TombstoneMark {
                below: cleaned_to,
                seen_ms,
            });
        }
        while self.marks.len() > MARKS_MAX {
            // The tombstones of the oldest mark take the next one's (later)
            // time: kept longer, never removed early.
            self.marks.remove(0);
        }
    }

    /// Forgets what it knew of offsets at and after `offset`, which a
    /// truncation is about to cut (new records will take those offsets).
    /// Returns whether anything changed.
    pub(crate) fn truncate(&mut self, offset: u64) -> bool {
        let before = self.clone();
        self.dirty_offset = self.dirty_offset.min(offset);
        self.expired_below = self.expired_below.min(offset);
        // The tombstones below `offset` of the first mark past it keep its
        // time; the later marks cover only offsets that go.
        if let Some(first_past) = self.marks.iter().position(|m| m.below > offset) {
            self.marks[first_past].below = offset;
            self.marks.truncate(first_past + 1);
            if first_past > 0 && self.marks[first_past - 1].below == offset {
                self.marks.pop();
            }
            let expired = self.expired_below;
            self.marks.retain(|m| m.below > expired);
        }
        *self != before
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let marks = u32::try_from(self.marks.len()).expect("at most MARKS_MAX marks");
        let swap = u32::try_from(self.swap.len()).expect("one group per segment");
        let mut out = vec![0u8; HEADER_BYTES];
        out[MAGIC_OFFSET..MAGIC_OFFSET + 4].copy_from_slice(&MAGIC);
        out[VERSION_OFFSET] = VERSION;
        out[DIRTY_OFFSET_OFFSET..DIRTY_OFFSET_OFFSET + 8]
            .copy_from_slice(&self.dirty_offset.to_le_bytes());
        out[EXPIRED_BELOW_OFFSET..EXPIRED_BELOW_OFFSET + 8]
            .copy_from_slice(&self.expired_below.to_le_bytes());
        out[MARK_COUNT_OFFSET..MARK_COUNT_OFFSET + 4].copy_from_slice(&marks.to_le_bytes());
        out[SWAP_COUNT_OFFSET..SWAP_COUNT_OFFSET + 4].copy_from_slice(&swap.to_le_bytes());
        for mark in &self.marks {
            out.extend_from_slice(&mark.below.to_le_bytes());
            out.extend_from_slice(&mark.seen_ms.to_le_bytes());
        }
        for group in &self.swap {
            out.extend_from_slice(&group.base_offset.to_le_bytes());
            out.extend_from_slice(&group.end_offset.to_le_bytes());
            out.extend_from_slice(&group.log_bytes.to_le_bytes());
        }
        let crc = crc32fast::hash(&out[MAGIC_OFFSET..]);
        out[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes a whole file; the error says what is wrong and where.
    pub(crate) fn decode(bytes: &[u8]) -> Result<CleanerState, (u64, CorruptKind)> {
        let truncated = |needed: usize| {
            (
                0,
                CorruptKind::Truncated {
                    needed: needed as u64,
                    available: bytes.len() as u64,
                },
            )
        };
        if bytes.len() < HEADER_BYTES {
            return Err(truncated(HEADER_BYTES));
        }
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4"));
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8"));
        let stored = u32_at(CRC_OFFSET);
        let computed = crc32fast::hash(&bytes[MAGIC_OFFSET..]);
        if stored != computed {
            return Err((
                CRC_OFFSET as u64,
                CorruptKind::Checksum { stored, computed },
            ));
        }
        if bytes[MAGIC_OFFSET..MAGIC_OFFSET + 4] != MAGIC {
            return Err((
                MAGIC_OFFSET as u64,
                CorruptKind::Metadata("cleaner state has the wrong magic"),
            ));
        }
        if bytes[VERSION_OFFSET] != VERSION {
            return Err((
                VERSION_OFFSET as u64,
                CorruptKind::Version(bytes[VERSION_OFFSET]),
            ));
        }
        let marks = u32_at(MARK_COUNT_OFFSET) as usize;
        let swap = u32_at(SWAP_COUNT_OFFSET) as usize;
        let needed = marks
            .checked_mul(MARK_BYTES)
            .and_then(|m| swap.checked_mul(SWAP_BYTES).and_then(|s| m.checked_add(s)))
            .and_then(|body| body.checked_add(HEADER_BYTES));
        match needed {
            Some(needed) if needed == bytes.len() => {}
            Some(needed) if needed > bytes.len() => return Err(truncated(needed)),
            _ => {
                return Err((
                    MARK_COUNT_OFFSET as u64,
                    CorruptKind::Metadata("cleaner state counts do not match its length"),
                ));
            }
        }
        let mut state = CleanerState {
            dirty_offset: u64_at(DIRTY_OFFSET_OFFSET),
            expired_below: u64_at(EXPIRED_BELOW_OFFSET),
            marks: Vec::with_capacity(marks),
            swap: Vec::with_capacity(swap),
        };
        let mut at = HEADER_BYTES;
        for _ in 0..marks {
            let mark = TombstoneMark {
                below: u64_at(at),
                seen_ms: u64_at(at + 8) as i64,
            };
            let increasing = state
                .marks
                .last()
                .is_none_or(|p| mark.below > p.below && mark.seen_ms >= p.seen_ms);
            if !increasing {
                return Err((
                    at as u64,
                    CorruptKind::Metadata("tombstone marks out of order"),
                ));
            }
            state.marks.push(mark);
            at += MARK_BYTES;
        }
        for _ in 0..swap {
            let group = SwapGroup {
                base_offset: u64_at(at),
                end_offset: u64_at(at + 8),
                log_bytes: u64_at(at + 16),
            };
            let ordered = group.base_offset < group.end_offset
                && state
                    .swap
                    .last()
                    .is_none_or(|p| group.base_offset >= p.end_offset);
            if !ordered {
                return Err((at as u64, CorruptKind::Metadata("swap groups out of order")));
            }
            state.swap.push(group);
            at += SWAP_BYTES;
        }
        Ok(state)
    }
}

/// Reads `cleaner-state`; `None` when there is none (the partition was
/// never compacted).
///
/// # Errors
///
/// [`Error::Corrupt`] when the file does not check out: it is only ever
/// replaced whole by a rename, so damage is not a torn write, and guessing
/// could mix old and new segments.
pub(crate) fn load(storage: &dyn Storage, dir: &Path) -> Result<Option<CleanerState>> {
    let path = dir.join(FILE_NAME);
    if !storage.exists(&path).map_err(|e| Error::io(&path, e))? {
        return Ok(None);
    }
    let file = storage
        .open(&path, false)
        .map_err(|e| Error::io(&path, e))?;
    let len = file.len().map_err(|e| Error::io(&path, e))?;
    if len > FILE_BYTES_MAX {
        return Err(Error::corrupt(
            &path,
            0,
            CorruptKind::Length { length: len },
        ));
    }
    let mut bytes = vec![0u8; len as usize];
    read_exact_at(&*file, &mut bytes, 0).map_err(|e| Error::io(&path, e))?;
    CleanerState::decode(&bytes)
        .map(Some)
        .map_err(|(position, kind)| Error::corrupt(&path, position, kind))
}

/// Writes `state` to `cleaner-state.tmp` and fdatasyncs it: the first half
/// of [`store`]. Nothing is committed yet.
pub(crate) fn write_temp(storage: &dyn Storage, dir: &Path, state: &CleanerState) -> Result<()> {
    let temp = dir.join(TEMP_FILE_NAME);
    let file = storage.open(&temp, true).map_err(|e| Error::io(&temp, e))?;
    file.set_len(0).map_err(|e| Error::io(&temp, e))?;
    file.write_at(&state.encode(), 0)
        .map_err(|e| Error::io(&temp, e))?;
    file.sync_data().map_err(|e| Error::io(&temp, e))
}

/// Renames `cleaner-state.tmp` over `cleaner-state` and fsyncs the
/// directory: the second half of [`store`], where the new state takes
/// effect.
pub(crate) fn publish(storage: &dyn Storage, dir: &Path) -> Result<()> {
    let temp = dir.join(TEMP_FILE_NAME);
    let path = dir.join(FILE_NAME);
    storage
        .rename(&temp, &path)
        .map_err(|e| Error::io(&path, e))?;
    storage.sync_dir(dir).map_err(|e| Error::io(dir, e))
}

/// Replaces `cleaner-state` with `state`, durably.
pub(crate) fn store(storage: &dyn Storage, dir: &Path, state: &CleanerState) -> Result<()> {
    write_temp(storage, dir, state)?;
    publish(storage, dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(below: u64, seen_ms: i64) -> TombstoneMark {
        TombstoneMark { below, seen_ms }
    }

    #[test]
    fn round_trips_and_every_damage_is_caught() {
        let state = CleanerState {
            dirty_offset: 900,
            expired_below: 100,
            marks: vec![mark(300, 5), mark(900, 7)],
            swap: vec![
                SwapGroup {
                    base_offset: 0,
                    end_offset: 400,
                    log_bytes: 1234,
                },
                SwapGroup {
                    base_offset: 400,
                    end_offset: 900,
                    log_bytes: 0,
                },
            ],
        };
        let bytes = state.encode();
        assert_eq!(bytes.len(), HEADER_BYTES + 2 * MARK_BYTES + 2 * SWAP_BYTES);
        assert_eq!(CleanerState::decode(&bytes), Ok(state));
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            assert!(CleanerState::decode(&bad).is_err(), "flip at {at}");
        }
        for len in 0..bytes.len() {
            assert!(CleanerState::decode(&bytes[..len]).is_err(), "cut at {len}");
        }
    }

    /// The example in FORMAT.md.
    #[test]
    fn encodes_as_format_md_shows() {
        let state = CleanerState {
            dirty_offset: 300,
            expired_below: 0,
            marks: vec![mark(300, 1_700_000_000_000)],
            swap: vec![SwapGroup {
                base_offset: 0,
                end_offset: 200,
                log_bytes: 1234,
            }],
        };
        let expected: Vec<u8> = [
            "c2 5c 04 3c 44 4c 43 53 01 00 00 00 2c 01 00 00",
            "00 00 00 00 00 00 00 00 00 00 00 00 01 00 00 00",
            "01 00 00 00 2c 01 00 00 00 00 00 00 00 68 e5 cf",
            "8b 01 00 00 00 00 00 00 00 00 00 00 c8 00 00 00",
            "00 00 00 00 d2 04 00 00 00 00 00 00",
        ]
        .iter()
        .flat_map(|line| line.split(' '))
        .map(|byte| u8::from_str_radix(byte, 16).expect("hex"))
        .collect();
        assert_eq!(state.encode(), expected);
    }

    #[test]
    fn a_tombstone_is_removable_once_its_first_clean_is_old_enough() {
        let mut state = CleanerState::default();
        state.record_clean(100, 1_000, 0);
        assert_eq!(state.marks, vec![mark(100, 1_000)]);
        state.record_clean(250, 2_000, state.removable_below(2_000, 5_000));
        assert_eq!(state.removable_below(5_999, 5_000), 0);
        assert_eq!(state.removable_below(6_000, 5_000), 100);
        assert_eq!(state.removable_below(7_000, 5_000), 250);
        state.record_clean(300, 6_500, state.removable_below(6_500, 5_000));
        assert_eq!(state.expired_below, 100);
        assert_eq!(state.marks, vec![mark(250, 2_000), mark(300, 6_500)]);
        assert_eq!(state.dirty_offset, 300);
        // A clean that reached no further adds no mark.
        state.record_clean(300, 6_600, 100);
        assert_eq!(state.marks.len(), 2);
    }

    #[test]
    fn a_clock_that_goes_back_never_dates_a_mark_earlier() {
        let mut state = CleanerState::default();
        state.record_clean(100, 5_000, 0);
        state.record_clean(200, 1_000, 0);
        assert_eq!(state.marks, vec![mark(100, 5_000), mark(200, 5_000)]);
    }

    #[test]
    fn too_many_marks_merge_into_later_ones() {
        let mut state = CleanerState::default();
        for i in 1..=(MARKS_MAX as u64 + 10) {
            state.record_clean(i * 10, i as i64, 0);
        }
        assert_eq!(state.marks.len(), MARKS_MAX);
        // Offsets below the first kept mark take its (later) time.
        assert_eq!(state.marks[0], mark(110, 11));
        assert_eq!(state.removable_below(10 + 1_000, 1_000), 0);
        assert_eq!(state.removable_below(11 + 1_000, 1_000), 110);
    }

    #[test]
    fn truncation_forgets_the_offsets_it_cuts() {
        let mut state = CleanerState {
            dirty_offset: 300,
            expired_below: 50,
            marks: vec![mark(100, 1), mark(200, 2), mark(300, 3)],
            swap: Vec::new(),
        };
        assert!(!state.truncate(400));
        assert!(state.truncate(150));
        assert_eq!(state.dirty_offset, 150);
        assert_eq!(state.marks, vec![mark(100, 1), mark(150, 2)]);
        assert!(state.truncate(100));
        assert_eq!(state.marks, vec![mark(100, 1)]);
        assert!(state.truncate(20));
        assert_eq!((state.dirty_offset, state.expired_below), (20, 20));
        assert!(state.marks.is_empty());
    }
}
