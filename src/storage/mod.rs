//! The storage seam: every file and directory operation of the log goes
//! through [`Storage`] and [`StorageFile`], so that tests can substitute a
//! simulated disk that loses unsynced writes and injects faults.
//!
//! The seam is deliberately small: positional reads and writes, length
//! changes, data sync, and the directory operations whose durability needs a
//! directory sync. `map` is an optimisation: an implementation that returns
//! `None` is read through `read_at`.

use std::fmt;
use std::io;
use std::os::fd::BorrowedFd;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

mod fs;
#[cfg(any(test, feature = "internals"))]
pub mod sim;

pub(crate) use fs::FsStorage;
#[cfg(target_os = "linux")]
pub(crate) use fs::data_after;

/// A file system as the log sees it.
pub trait Storage: Send + Sync + fmt::Debug {
    /// Creates a directory and its parents. Not durable until the parent
    /// directory is synced.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Opens a file for reading and writing; creates it (empty) when `create`
    /// is set and it does not exist. A created file's name is not durable
    /// until its directory is synced.
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>>;
    /// Removes a file. Not durable until the directory is synced.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Renames a file, replacing `to` if it exists. Not durable until the
    /// directory is synced.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Names of the entries of a directory (files and directories).
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// True if the path exists.
    fn exists(&self, path: &Path) -> io::Result<bool>;
    /// True if the path is a directory.
    fn is_dir(&self, path: &Path) -> io::Result<bool>;
    /// Makes creations, renames and removals in a directory durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Takes an exclusive lock on a lock file, created if missing. Returns
    /// `None` when another holder has it. The lock is released when the
    /// returned guard is dropped.
    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>>;
}

/// An open file.
#[allow(
    clippy::len_without_is_empty,
    reason = "a file's length is not a collection's"
)]
pub trait StorageFile: Send + Sync + fmt::Debug {
    /// Reads up to `buf.len()` bytes at `position`; returns how many were
    /// read (fewer only at the end of the file).
    fn read_at(&self, buf: &mut [u8], position: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `position`, growing the file if needed.
    fn write_at(&self, buf: &[u8], position: u64) -> io::Result<()>;
    /// The file's length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Sets the file's length: zeros are read past the old end when it grows.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes the written data durable (fdatasync).
    fn sync_data(&self) -> io::Result<()>;
    /// Readies the file's first `len` bytes for writes: the file grows to
    /// at least `len` bytes (reading as zeros past its old end) with that
    /// space allocated, so that a later write below `len` changes neither
    /// the file's length nor can fail for want of space. An implementation
    /// may then take such writes by copying them into a shared mapping of
    /// the file, which costs no system call; they reach the disk with the
    /// next [`sync_data`](StorageFile::sync_data), like any write. Shrinking
    /// the file with [`set_len`](StorageFile::set_len) ends the reservation
    /// above the new length.
    ///
    /// `stores` says what the writes into the reservation will be like.
    ///
    /// The default grows the file with `set_len` and nothing more.
    fn reserve(&self, len: u64, stores: Stores) -> io::Result<()> {
        let _ = stores;
        if self.len()? < len {
            self.set_len(len)?;
        }
        Ok(())
    }
    /// The first stretch at or after `position` that may hold bytes other
    /// than zeros, as `start..end`: every byte from `position` to `start` is
    /// known to read as zero (a hole, or space allocated but never written).
    /// `None` when nothing from `position` to the end may. The default knows
    /// of no holes and answers `position..len`.
    fn data_after(&self, position: u64) -> io::Result<Option<std::ops::Range<u64>>> {
        let len = self.len()?;
        Ok((position < len).then_some(position..len))
    }
    /// A read-only view of the first `len` bytes of the file, which may
    /// extend past its current end so that it can grow into the view. Only
    /// bytes below the file's length may be touched; the caller never shrinks
    /// the file below a position it has read through the view.
    fn map(&self, len: u64) -> io::Result<Option<Bytes>>;
    /// Copies `len` bytes at `position` to `out` inside the kernel
    /// (`sendfile`), all of them or an error; `Ok(false)` where that is not
    /// possible, and the caller copies the bytes itself.
    fn send_to(&self, position: u64, len: u64, out: BorrowedFd<'_>) -> io::Result<bool> {
        let _ = (position, len, out);
        Ok(false)
    }
}

/// What the writes into a [reservation](StorageFile::reserve) will be like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stores {
    /// Large writes one after the other (batches): the first store into a
    /// page may prepare the pages after it too.
    Streaming,
    /// Small writes (index entries): a store prepares only its own page, as
    /// preparing pages ahead would cost more than the write.
    Small,
}

/// Holds a directory lock until dropped.
pub trait LockGuard: Send + Sync + fmt::Debug {}

/// Reads exactly `buf.len()` bytes at `position`.
pub(crate) fn read_exact_at(
    file: &dyn StorageFile,
    mut buf: &mut [u8],
    mut position: u64,
) -> io::Result<()> {
    while !buf.is_empty() {
        match file.read_at(buf, position) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                position += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
