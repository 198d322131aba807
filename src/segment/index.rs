//! Sparse indexes of a segment: fixed-size entries appended in key order,
//! looked up by binary search.
//!
//! An index file is preallocated to its maximum size while its segment is
//! active (so appending an entry never changes the file's length) and is
//! trimmed to its entries when the segment rolls or the log closes. Indexes
//! are derived data: the log rebuilds one from its segment whenever it is
//! missing or does not check out.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::storage::{Storage, StorageFile, Stores, read_exact_at};

/// How many bytes of an index file are readied for entries at a time.
const RESERVE_BYTES: u64 = 64 << 10;

/// One entry kind of an index file.
pub(crate) trait Entry: Copy + std::fmt::Debug {
    /// Size of an encoded entry in bytes.
    const BYTES: usize;
    /// Writes the entry into the first [`Entry::BYTES`] bytes of `out`.
    fn encode_into(&self, out: &mut [u8]);
    fn decode(bytes: &[u8]) -> Self;
}

/// Offset index entry: the batch that starts at `relative_offset` (from the
/// segment's base offset) begins at byte `position` of the log file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

impl Entry for OffsetEntry {
    const BYTES: usize = 8;

    fn encode_into(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&self.relative_offset.to_le_bytes());
        out[4..8].copy_from_slice(&self.position.to_le_bytes());
    }

    fn decode(bytes: &[u8]) -> Self {
        OffsetEntry {
            relative_offset: u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes")),
            position: u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes")),
        }
    }
}

/// Time index entry: every record before the batch at `relative_offset`,
/// and that batch, have timestamps at most `timestamp`, and that batch holds
/// a record with exactly `timestamp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

impl Entry for TimeEntry {
    const BYTES: usize = 12;

    fn encode_into(&self, out: &mut [u8]) {
        out[0..8].copy_from_slice(&self.timestamp.to_le_bytes());
        out[8..12].copy_from_slice(&self.relative_offset.to_le_bytes());
    }

    fn decode(bytes: &[u8]) -> Self {
        TimeEntry {
            timestamp: i64::from_le_bytes(bytes[0..8].try_into().expect("8 bytes")),
            relative_offset: u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")),
        }
    }
}

/// An index file. Entries are appended by the partition's single writer and
/// read by any thread; `len` is published after the entry's bytes.
pub(crate) struct Index<E: Entry> {
    path: PathBuf,
    file: Arc<dyn StorageFile>,
    view: Option<Bytes>,
    len: AtomicU64,
    max_entries: u64,
    /// Bytes of the file readied for entries with [`StorageFile::reserve`]
    /// (writer only).
    reserved: AtomicU64,
    _entry: std::marker::PhantomData<E>,
}

/// Printed without the mapping, which reaches past the file's end.
impl<E: Entry> std::fmt::Debug for Index<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("path", &self.path)
            .field("entries", &self.len())
            .finish_non_exhaustive()
    }
}

impl<E: Entry> Index<E> {
    /// Creates (or empties) the index file and preallocates it to
    /// `max_bytes`, rounded down to whole entries.
    pub(crate) fn create(storage: &dyn Storage, path: &Path, max_bytes: u64) -> io::Result<Self> {
        let file = storage.open(path, true)?;
        let max_entries = max_bytes / E::BYTES as u64;
        file.set_len(0)?;
        file.set_len(max_entries * E::BYTES as u64)?;
        Self::with_file(path, file, 0, max_entries)
    }

    /// Opens an existing index whose entries fill the whole file; refuses a
    /// length that is not a whole number of entries.
    pub(crate) fn open(
        storage: &dyn Storage,
        path: &Path,
        max_bytes: u64,
    ) -> io::Result<Option<Self>> {
        let file = storage.open(path, false)?;
        let bytes = file.len()?;
        if bytes % E::BYTES as u64 != 0 {
            return Ok(None);
        }
        let len = bytes / E::BYTES as u64;
        let max_entries = (max_bytes / E::BYTES as u64).max(len);
        Ok(Some(Self::with_file(path, file, len, max_entries)?))
    }

    fn with_file(
        path: &Path,
        file: Arc<dyn StorageFile>,
        len: u64,
        max_entries: u64,
    ) -> io::Result<Self> {
        let view = file.map(max_entries * E::BYTES as u64)?;
        Ok(Index {
            path: path.to_path_buf(),
            file,
            view,
            len: AtomicU64::new(len),
            max_entries,
            reserved: AtomicU64::new(0),
            _entry: std::marker::PhantomData,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }

    pub(crate) fn is_full(&self) -> bool {
        self.len() >= self.max_entries
    }

    /// Entries that can still be appended.
    pub(crate) fn free(&self) -> u64 {
        self.max_entries.saturating_sub(self.len())
    }

    /// Appends an entry. The caller keeps keys increasing and checks
    /// `is_full` first.
    pub(crate) fn push(&self, entry: E) -> io::Result<()> {
        let len = self.len.load(Ordering::Relaxed);
        assert!(
            len < self.max_entries,
            "index {} is full",
            self.path.display()
        );
        let position = len * E::BYTES as u64;
        let end = position + E::BYTES as u64;
        // Entries are stored into space readied a chunk at a time, so that
        // most cost no system call. A reopened index file may be shorter
        // than its maximum: growing it is covered by the mapping made for
        // `max_entries`.
        if end > self.reserved.load(Ordering::Relaxed) {
            let to = (end + RESERVE_BYTES).min(self.max_entries * E::BYTES as u64);
            self.file.reserve(to, Stores::Small)?;
            self.reserved.store(to, Ordering::Relaxed);
        }
        let mut bytes = [0u8; 16];
        entry.encode_into(&mut bytes);
        self.file.write_at(&bytes[..E::BYTES], position)?;
        self.len.store(len + 1, Ordering::Release);
        Ok(())
    }

    /// Entry number `i`, which must be below `len()`.
    pub(crate) fn get(&self, i: u64) -> io::Result<E> {
        debug_assert!(i < self.len());
        let at = (i * E::BYTES as u64) as usize;
        if let Some(view) = &self.view
            && at + E::BYTES <= view.len()
        {
            return Ok(E::decode(&view[at..at + E::BYTES]));
        }
        let mut buf = vec![0u8; E::BYTES];
        read_exact_at(&*self.file, &mut buf, at as u64)?;
        Ok(E::decode(&buf))
    }

    /// The last entry, if any.
    pub(crate) fn last(&self) -> io::Result<Option<E>> {
        match self.len() {
            0 => Ok(None),
            n => self.get(n - 1).map(Some),
        }
    }

    /// The last entry whose key is at most `target`, with its number, by
    /// binary search over entries whose keys never decrease.
    pub(crate) fn floor<K: Ord>(
        &self,
        target: K,
        key: impl Fn(&E) -> K,
    ) -> io::Result<Option<(u64, E)>> {
        let len = self.len();
        if let Some(entries) = self.view.as_ref().and_then(|view| {
            let bytes = usize::try_from(len).ok()?.checked_mul(E::BYTES)?;
            view.get(..bytes)
        }) {
            return Ok(floor_in(entries, target, key));
        }
        let (mut lo, mut hi) = (0u64, len);
        let mut found = None;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let entry = self.get(mid)?;
            if key(&entry) <= target {
                found = Some((mid, entry));
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(found)
    }

    /// Shrinks the file to its entries (on roll and close).
    pub(crate) fn trim(&self) -> io::Result<()> {
        let len = self.len() * E::BYTES as u64;
        self.reserved.fetch_min(len, Ordering::Relaxed);
        self.file.set_len(len)
    }

    pub(crate) fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// [`Index::floor`] over entries that lie in memory: the last entry whose
/// key is at most `target`. The search halves a window without leaving the
/// loop early, so that the next probe does not wait on a branch the CPU
/// cannot predict.
fn floor_in<E: Entry, K: Ord>(
    entries: &[u8],
    target: K,
    key: impl Fn(&E) -> K,
) -> Option<(u64, E)> {
    let entry = |i: usize| E::decode(&entries[i * E::BYTES..(i + 1) * E::BYTES]);
    let mut size = entries.len() / E::BYTES;
    if size == 0 {
        return None;
    }
    // Invariant: if any entry's key is at most `target`, the last such
    // entry is in `base..base + size`.
    let mut base = 0;
    while size > 1 {
        let half = size / 2;
        let mid = base + half;
        if key(&entry(mid)) <= target {
            base = mid;
        }
        size -= half;
    }
    let found = entry(base);
    (key(&found) <= target).then_some((base as u64, found))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The in-memory search agrees with the definition (the last entry
    /// whose key is at most the target) on every target, with repeated
    /// keys as a time index may have, and for every length.
    #[test]
    fn floor_in_finds_the_last_entry_at_or_below_the_target() {
        let keys = [3i64, 5, 5, 5, 8, 13, 13, 21];
        for len in 0..=keys.len() {
            let mut bytes = vec![0u8; len * TimeEntry::BYTES];
            for (i, &timestamp) in keys[..len].iter().enumerate() {
                let entry = TimeEntry {
                    timestamp,
                    relative_offset: i as u32,
                };
                entry.encode_into(&mut bytes[i * TimeEntry::BYTES..]);
            }
            for target in 0..25 {
                let expected = keys[..len].iter().rposition(|&k| k <= target);
                let found = floor_in(&bytes, target, |e: &TimeEntry| e.timestamp);
                assert_eq!(
                    found.map(|(i, e)| (i, e.relative_offset as usize)),
                    expected.map(|i| (i as u64, i)),
                    "len {len}, target {target}"
                );
            }
        }
    }
}
