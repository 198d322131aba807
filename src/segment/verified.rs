//! The batches of one segment whose checksum this process has verified.
//!
//! A read verifies a batch's CRC before handing out any of its records.
//! Checking the same batch again on every read (a point read checks the
//! whole batch to return one record of it) buys nothing while its bytes
//! cannot have changed, and published batch bytes are never rewritten in
//! place: the writer only appends past them, and a truncation or a
//! compaction writes a new file, renames it over the old one and opens it
//! as a new [`Segment`](super::Segment), whose memo starts empty. So once a
//! batch has passed its checksum, its bytes are trusted for as long as the
//! segment object lives, the way a block cache trusts the blocks it holds
//! (RocksDB checks a block's checksum when it reads the block from the file,
//! not on every cache hit).
//!
//! What that gives up: bytes that change under a batch already verified —
//! written into the file by another program, or a disk that returns
//! something else for the same block later — are caught by the next read
//! that verifies again, which is the first read after a reopen, or every
//! read with [`Config::verify_every_read`](crate::Config::verify_every_read).
//! After a failed fsync the partition stops trusting the memo (see
//! [`VerifiedBatches::forget`]): pages whose write-back failed may be
//! dropped from the page cache and read back stale.
//!
//! The memo is a direct-mapped table of entries of four `AtomicU64`s, lock
//! free and bounded.
//! The entry for a batch is chosen by the 4 KiB block its position falls
//! in, modulo the table's length, and holds the batch's position and CRC:
//! a lookup matches only the same position with the same stored checksum,
//! and a batch that takes another's entry just evicts it. Batches of 4 KiB
//! or more never share an entry with a batch less than a table's span
//! away; smaller ones may, and cost little to verify again.
//!
//! Each entry also keeps the [`Marks`] of its batch, where six of its
//! records start, so that a point read into the batch steps over fewer
//! records; they are learned by reads and stay right for as long as the
//! batch's bytes do.
//!
//! Memory: a table has at most [`MAX_SLOTS`] entries (1 MiB, spanning
//! 128 MiB of a segment), fewer for smaller segments, and is allocated on
//! the first verified read of its segment. All tables of the process
//! together take at most [`PROCESS_BYTES_MAX`]; a segment that finds no room
//! verifies every read, as with the memo switched off, and tries again with
//! each read until a dropped segment has given room back.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::record::batch::Marks;

/// Each 4 KiB block of a segment has a slot (modulo the table's length).
const BLOCK_SHIFT: u32 = 12;
/// Smallest table.
const MIN_SLOTS: usize = 16;
/// Largest table: 1 MiB, for segments of 128 MiB or more.
pub(crate) const MAX_SLOTS: usize = 1 << 15;
/// What the tables of all segments of the process may take together.
pub(crate) const PROCESS_BYTES_MAX: usize = 64 << 20;

/// Words of a slot holding marks, two marks each.
const MARK_WORDS: usize = Marks::COUNT / 2;
const SLOT_BYTES: usize = size_of::<Slot>();
const _: () = assert!(MIN_SLOTS.is_power_of_two() && MAX_SLOTS.is_power_of_two());
const _: () = assert!(MAX_SLOTS * SLOT_BYTES <= PROCESS_BYTES_MAX);

/// Bytes that tables may take, and how many they take now.
struct Budget {
    taken: AtomicUsize,
    max: usize,
}

impl Budget {
    /// Takes `bytes` if they fit.
    fn take(&self, bytes: usize) -> bool {
        self.taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |taken| {
                taken.checked_add(bytes).filter(|&total| total <= self.max)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: usize) {
        self.taken.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// The tables of every live segment of the process.
static PROCESS_BUDGET: Budget = Budget {
    taken: AtomicUsize::new(0),
    max: PROCESS_BYTES_MAX,
};

/// One entry of the table: four words, each naming the batch it is about,
/// so that each is right on its own whatever the others hold.
#[derive(Default)]
struct Slot {
    /// `(position + 1) << 32 | crc`: the batch at `position` with this
    /// stored checksum passed it. Zero is an empty slot.
    verified: AtomicU64,
    /// `(position + 1) << 32 | mark[2i + 1] << 16 | mark[2i]`: two of the
    /// [`Marks`] of the batch at `position` each. Marks come from the bytes
    /// of a verified batch, which never change, so they stay right for that
    /// position whichever batch `verified` names now.
    marks: [AtomicU64; MARK_WORDS],
}

/// The memo of one segment; see the module documentation.
pub(crate) struct VerifiedBatches {
    slots: OnceLock<Box<[Slot]>>,
    /// Length of the table once allocated; zero when the memo is off.
    slot_count: usize,
    /// Set when the memo must no longer be trusted.
    forgotten: AtomicBool,
    budget: &'static Budget,
}

impl VerifiedBatches {
    /// A memo for a segment of up to `capacity_bytes`; `enabled` false gives
    /// one that never remembers anything.
    pub(crate) fn new(capacity_bytes: u64, enabled: bool) -> VerifiedBatches {
        Self::with_budget(capacity_bytes, enabled, &PROCESS_BUDGET)
    }

    fn with_budget(capacity_bytes: u64, enabled: bool, budget: &'static Budget) -> Self {
        let blocks = usize::try_from(capacity_bytes >> BLOCK_SHIFT).unwrap_or(usize::MAX);
        let slot_count = if enabled {
            blocks.clamp(MIN_SLOTS, MAX_SLOTS).next_power_of_two()
        } else {
            0
        };
        VerifiedBatches {
            slots: OnceLock::new(),
            slot_count,
            forgotten: AtomicBool::new(false),
            budget,
        }
    }

    /// The slot of a batch at `position` and the word naming it with
    /// `low` below, or `None` for a position a segment cannot have
    /// (segments stay below 4 GiB).
    #[inline]
    fn entry(position: u64, low: u32) -> Option<(usize, u64)> {
        let key = u32::try_from(position.checked_add(1)?).ok()?;
        let block = usize::try_from(position >> BLOCK_SHIFT).ok()?;
        Some((block, u64::from(key) << 32 | u64::from(low)))
    }

    /// The table, when it is allocated and may be trusted.
    #[inline]
    fn table(&self) -> Option<&[Slot]> {
        let slots = self.slots.get()?;
        (!self.forgotten.load(Ordering::Relaxed)).then_some(&**slots)
    }

    /// True when the batch at `position` whose header stores `crc` has been
    /// verified by this process.
    #[inline]
    pub(crate) fn contains(&self, position: u64, crc: u32) -> bool {
        let (Some(slots), Some((block, entry))) = (self.table(), Self::entry(position, crc)) else {
            return false;
        };
        // Relaxed is enough: the entry says only that these bytes passed
        // their checksum; the bytes themselves were published to readers
        // through the segment's size.
        slots[block & (slots.len() - 1)]
            .verified
            .load(Ordering::Relaxed)
            == entry
    }

    /// Starts loading the entry for the batch at `position` into the CPU's
    /// caches, for a [`contains`](Self::contains) and [`marks`](Self::marks)
    /// soon after: a point read issues it before it reads the batch's
    /// header, so that the two misses overlap instead of following each
    /// other. Only a speed-up: nothing depends on the value loaded.
    #[inline]
    pub(crate) fn prefetch(&self, position: u64) {
        if let (Some(slots), Some((block, _))) = (self.slots.get(), Self::entry(position, 0)) {
            let slot = &slots[block & (slots.len() - 1)];
            std::hint::black_box(slot.verified.load(Ordering::Relaxed));
        }
    }

    /// Remembers that the batch at `position` whose header stores `crc`
    /// passed its checksum.
    pub(crate) fn insert(&self, position: u64, crc: u32) {
        if self.slot_count == 0 || self.forgotten.load(Ordering::Relaxed) {
            return;
        }
        let Some((block, entry)) = Self::entry(position, crc) else {
            return;
        };
        let Some(slots) = self.slots.get().map(|s| &**s).or_else(|| self.allocate()) else {
            return;
        };
        slots[block & (slots.len() - 1)]
            .verified
            .store(entry, Ordering::Relaxed);
    }

    /// The marks known for the batch at `position` (none when unknown).
    #[inline]
    pub(crate) fn marks(&self, position: u64) -> Marks {
        let (Some(slots), Some((block, key))) = (self.table(), Self::entry(position, 0)) else {
            return Marks::default();
        };
        let slot = &slots[block & (slots.len() - 1)];
        let mut marks = Marks::default();
        for (word, at) in slot.marks.iter().zip(marks.at.chunks_exact_mut(2)) {
            let word = word.load(Ordering::Relaxed);
            if word >> 32 == key >> 32 {
                at[0] = word as u16;
                at[1] = (word >> 16) as u16;
            }
        }
        marks
    }

    /// Keeps the marks of the batch at `position`, a batch that passed its
    /// checksum.
    pub(crate) fn set_marks(&self, position: u64, marks: Marks) {
        let (Some(slots), Some((block, key))) = (self.table(), Self::entry(position, 0)) else {
            return;
        };
        let slot = &slots[block & (slots.len() - 1)];
        for (word, at) in slot.marks.iter().zip(marks.at.chunks_exact(2)) {
            word.store(
                key | u64::from(at[1]) << 16 | u64::from(at[0]),
                Ordering::Relaxed,
            );
        }
    }

    /// Allocates the table if the process has room for it.
    #[cold]
    fn allocate(&self) -> Option<&[Slot]> {
        let bytes = self.slot_count * SLOT_BYTES;
        if !self.budget.take(bytes) {
            return None;
        }
        let mut mine = false;
        let slots = self.slots.get_or_init(|| {
            mine = true;
            (0..self.slot_count).map(|_| Slot::default()).collect()
        });
        if !mine {
            // Another thread allocated it first, with its own reservation.
            self.budget.give_back(bytes);
        }
        Some(slots)
    }

    /// Stops trusting the memo: every later read of the segment verifies.
    pub(crate) fn forget(&self) {
        self.forgotten.store(true, Ordering::Relaxed);
    }
}

impl Drop for VerifiedBatches {
    fn drop(&mut self) {
        if let Some(slots) = self.slots.get() {
            self.budget.give_back(slots.len() * SLOT_BYTES);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_a_position_with_its_checksum_only() {
        let memo = VerifiedBatches::new(1 << 20, true);
        assert!(!memo.contains(0, 7));
        memo.insert(0, 7);
        assert!(memo.contains(0, 7));
        assert!(!memo.contains(0, 8), "another checksum at the same place");
        assert!(!memo.contains(1, 7), "another place");
        memo.insert(4096, 9);
        assert!(memo.contains(4096, 9));
        assert!(memo.contains(0, 7), "the next block has its own entry");
    }

    #[test]
    fn a_batch_in_the_same_entry_evicts_the_last_one() {
        let memo = VerifiedBatches::new(1 << 20, true);
        let span = (memo.slot_count as u64) << BLOCK_SHIFT;
        memo.insert(100, 1);
        memo.insert(100 + span, 2);
        assert!(!memo.contains(100, 1));
        assert!(memo.contains(100 + span, 2));
        memo.insert(200, 3);
        assert!(!memo.contains(100 + span, 2), "same block as 100");
        assert!(memo.contains(200, 3));
    }

    #[test]
    fn position_zero_with_checksum_zero_is_not_an_empty_slot() {
        let memo = VerifiedBatches::new(1 << 20, true);
        memo.insert(4096, 1);
        assert!(!memo.contains(0, 0), "an empty slot matches nothing");
        memo.insert(0, 0);
        assert!(memo.contains(0, 0));
    }

    #[test]
    fn switched_off_or_forgotten_it_remembers_nothing() {
        let off = VerifiedBatches::new(1 << 30, false);
        off.insert(0, 1);
        assert!(!off.contains(0, 1));
        assert!(off.slots.get().is_none(), "nothing allocated");
        let memo = VerifiedBatches::new(1 << 30, true);
        memo.insert(0, 1);
        memo.forget();
        assert!(!memo.contains(0, 1));
        memo.insert(8192, 2);
        assert!(!memo.contains(8192, 2));
    }

    #[test]
    fn tables_are_sized_by_the_segment_and_bounded() {
        assert_eq!(VerifiedBatches::new(0, true).slot_count, MIN_SLOTS);
        assert_eq!(VerifiedBatches::new(512, true).slot_count, MIN_SLOTS);
        assert_eq!(VerifiedBatches::new(1 << 20, true).slot_count, 256);
        assert_eq!(VerifiedBatches::new(3 << 20, true).slot_count, 1024);
        assert_eq!(VerifiedBatches::new(1 << 30, true).slot_count, MAX_SLOTS);
        assert_eq!(VerifiedBatches::new(u64::MAX, true).slot_count, MAX_SLOTS);
        assert!(!VerifiedBatches::new(1 << 30, true).contains(u64::MAX, 0));
    }

    #[test]
    fn a_memo_without_room_verifies_every_read_until_room_is_given_back() {
        let table = MIN_SLOTS * SLOT_BYTES;
        let budget: &'static Budget = Box::leak(Box::new(Budget {
            taken: AtomicUsize::new(0),
            max: table,
        }));
        let first = VerifiedBatches::with_budget(0, true, budget);
        let second = VerifiedBatches::with_budget(0, true, budget);
        first.insert(0, 1);
        assert!(first.contains(0, 1));
        assert_eq!(budget.taken.load(Ordering::Acquire), table);
        second.insert(0, 1);
        assert!(!second.contains(0, 1), "no room for a second table");
        drop(first);
        assert_eq!(budget.taken.load(Ordering::Acquire), 0);
        second.insert(0, 1);
        assert!(second.contains(0, 1));
        drop(second);
        assert_eq!(budget.taken.load(Ordering::Acquire), 0);
    }
}
