//! The real file system.

#![allow(unsafe_code)]

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
#[cfg(target_os = "linux")]
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use super::{LockGuard, Storage, StorageFile};

/// The operating system's file system.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FsStorage;

#[derive(Debug)]
struct FsFile(File);

#[derive(Debug)]
struct FsLock(#[allow(dead_code, reason = "held for its Drop, which unlocks")] File);

impl LockGuard for FsLock {}

impl Storage for FsStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)?;
        Ok(Arc::new(FsFile(file)))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(path)? {
            // Names that are not UTF-8 cannot be ours; they are left alone.
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        names.sort_unstable();
        Ok(names)
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        path.try_exists()
    }

    fn is_dir(&self, path: &Path) -> io::Result<bool> {
        match fs::metadata(path) {
            Ok(meta) => Ok(meta.is_dir()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        // flock-style: a second open file description conflicts even inside
        // the same process, so two `Log::open`s of one directory exclude
        // each other wherever they run.
        match file.try_lock() {
            Ok(()) => Ok(Some(Box::new(FsLock(file)))),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }
}

impl StorageFile for FsFile {
    fn read_at(&self, buf: &mut [u8], position: u64) -> io::Result<usize> {
        self.0.read_at(buf, position)
    }

    fn write_at(&self, buf: &[u8], position: u64) -> io::Result<()> {
        self.0.write_all_at(buf, position)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn map(&self, len: u64) -> io::Result<Option<Bytes>> {
        let Ok(len) = usize::try_from(len) else {
            return Ok(None);
        };
        if len == 0 {
            return Ok(Some(Bytes::new()));
        }
        // SAFETY: the mapping is read-only and shared. The log holds the
        // directory lock, so no other `Log` writes or truncates these files.
        // Within this process a data or index file is only ever shrunk to a
        // length at or above every position that was published to readers
        // (segments are trimmed to their data end on roll and close; a
        // truncation writes a new file and renames it over the old one, and
        // deletion unlinks the file, both of which leave an existing mapping
        // valid). Readers touch only bytes below the published end, which is
        // below the file's length, so no access can fault. Bytes that change
        // after publication are never read: published bytes are never
        // rewritten in place.
        let map = unsafe { memmap2::MmapOptions::new().len(len).map(&self.0)? };
        Ok(Some(Bytes::from_owner(map)))
    }

    #[cfg(target_os = "linux")]
    fn send_to(&self, position: u64, len: u64, out: BorrowedFd<'_>) -> io::Result<bool> {
        let mut offset = libc::off_t::try_from(position)
            .map_err(|_| io::Error::other("position overflows off_t"))?;
        let end = position
            .checked_add(len)
            .ok_or_else(|| io::Error::other("range overflows"))?;
        while (offset as u64) < end {
            let count = usize::try_from(end - offset as u64)
                .unwrap_or(usize::MAX)
                .min(1 << 30);
            // SAFETY: both descriptors are open for the duration of the call
            // (`self.0` is owned by this file, `out` is borrowed from the
            // caller), and `offset` is a valid, exclusively borrowed
            // `off_t` that the kernel advances; no memory of this process is
            // read or written.
            let sent =
                unsafe { libc::sendfile(out.as_raw_fd(), self.0.as_raw_fd(), &mut offset, count) };
            match sent {
                -1 => {
                    let error = io::Error::last_os_error();
                    match error.raw_os_error() {
                        Some(libc::EINTR) => continue,
                        // Not a descriptor sendfile can write to: the caller
                        // copies, but only if nothing was sent yet.
                        Some(libc::EINVAL | libc::ENOSYS) if offset as u64 == position => {
                            return Ok(false);
                        }
                        _ => return Err(error),
                    }
                }
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                _ => {}
            }
        }
        Ok(true)
    }
}
