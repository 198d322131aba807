//! The poison marker: what a partition that failed a write or an fsync
//! leaves for the next open.
//!
//! After an fsync fails, Linux may mark the dirty pages clean without having
//! written them: they stay readable until evicted, so a later open in the
//! same boot would find those batches valid and build on bytes that a power
//! loss can still take away. The marker records where the partition's data
//! was last known good, and the next open cuts the log there before
//! recovering.
//!
//! File `poisoned` (24 bytes, little-endian):
//!
//! ```text
//! crc:u32 magic:"DLPZ" segment:u64 position:u64
//! ```
//!
//! `crc` is CRC-32 of the 20 bytes after it; `segment` is the base offset of
//! the segment to cut and `position` the byte where to cut it. Segments after
//! it are removed.

use std::path::Path;

use crate::storage::{Storage, read_exact_at};

pub(crate) const FILE_NAME: &str = "poisoned";
const MAGIC: [u8; 4] = *b"DLPZ";
const BYTES: usize = 24;

/// Writes the marker, synced into the directory. Best effort: the partition
/// is already failing, and the caller reports the original error.
pub(crate) fn write(storage: &dyn Storage, dir: &Path, segment: u64, position: u64) {
    let mut buf = [0u8; BYTES];
    buf[4..8].copy_from_slice(&MAGIC);
    buf[8..16].copy_from_slice(&segment.to_le_bytes());
    buf[16..24].copy_from_slice(&position.to_le_bytes());
    let crc = crc32fast::hash(&buf[4..]);
    buf[..4].copy_from_slice(&crc.to_le_bytes());
    let path = dir.join(FILE_NAME);
    let _ = storage.open(&path, true).and_then(|file| {
        file.set_len(0)?;
        file.write_at(&buf, 0)?;
        file.sync_data()?;
        storage.sync_dir(dir)
    });
}

/// Reads the marker: `Some((segment, position))` if there is a valid one.
/// A torn marker (only possible with a power loss, which also took the
/// page cache it guards against) is ignored.
pub(crate) fn read(storage: &dyn Storage, dir: &Path) -> std::io::Result<Option<(u64, u64)>> {
    let path = dir.join(FILE_NAME);
    if !storage.exists(&path)? {
        return Ok(None);
    }
    let file = storage.open(&path, false)?;
    if file.len()? != BYTES as u64 {
        return Ok(None);
    }
    let mut buf = [0u8; BYTES];
    read_exact_at(&*file, &mut buf, 0)?;
    let stored = u32::from_le_bytes(buf[..4].try_into().expect("4 bytes"));
    if stored != crc32fast::hash(&buf[4..]) || buf[4..8] != MAGIC {
        return Ok(None);
    }
    let segment = u64::from_le_bytes(buf[8..16].try_into().expect("8 bytes"));
    let position = u64::from_le_bytes(buf[16..24].try_into().expect("8 bytes"));
    Ok(Some((segment, position)))
}
