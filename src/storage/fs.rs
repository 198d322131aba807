//! The real file system.

#![allow(unsafe_code)]

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
#[cfg(target_os = "linux")]
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;

use super::{LockGuard, Storage, StorageFile, Stores};

/// The operating system's file system.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FsStorage;

#[derive(Debug)]
struct FsFile {
    file: File,
    /// The reserved part of the file, mapped for writing; `None` until
    /// [`StorageFile::reserve`] succeeds, and again after the file shrinks
    /// below it.
    reserved: Mutex<Option<WriteMap>>,
}

/// A shared, writable mapping of a file, of which the first `len` bytes are
/// inside the file and allocated on disk. The mapping itself may reach
/// further, so that it need not be remade each time the reservation grows;
/// nothing past `len` is ever touched.
#[derive(Debug)]
struct WriteMap {
    map: memmap2::MmapRaw,
    len: u64,
}

impl FsFile {
    fn new(file: File) -> FsFile {
        FsFile {
            file,
            reserved: Mutex::new(None),
        }
    }

    fn reserved(&self) -> MutexGuard<'_, Option<WriteMap>> {
        // The guarded state is replaced whole, never left half-updated.
        self.reserved.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

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
        Ok(Arc::new(FsFile::new(file)))
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

/// [`StorageFile::data_after`] for a file of the file system, from
/// `SEEK_DATA` and `SEEK_HOLE`; a file system that cannot tell is taken to
/// hold data everywhere.
#[cfg(target_os = "linux")]
pub(crate) fn data_after(file: &File, position: u64) -> io::Result<Option<std::ops::Range<u64>>> {
    let seek = |at: u64, whence| {
        let Ok(at) = libc::off_t::try_from(at) else {
            return Err(io::Error::from_raw_os_error(libc::ENXIO));
        };
        // SAFETY: a plain system call on a descriptor the caller owns; it
        // moves the descriptor's offset, which nothing here relies on
        // (every read and write names its position).
        match unsafe { libc::lseek(file.as_raw_fd(), at, whence) } {
            -1 => Err(io::Error::last_os_error()),
            found => Ok(found as u64),
        }
    };
    let start = match seek(position, libc::SEEK_DATA) {
        Ok(start) => start,
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            let len = file.metadata()?.len();
            return Ok((position < len).then_some(position..len));
        }
        Err(e) => return Err(e),
    };
    let end = seek(start, libc::SEEK_HOLE)?;
    Ok(Some(start..end))
}

impl StorageFile for FsFile {
    fn read_at(&self, buf: &mut [u8], position: u64) -> io::Result<usize> {
        self.file.read_at(buf, position)
    }

    fn write_at(&self, buf: &[u8], position: u64) -> io::Result<()> {
        let end = position.checked_add(buf.len() as u64);
        {
            let reserved = self.reserved();
            if let (Some(map), Some(end)) = (reserved.as_ref(), end)
                && end <= map.len
            {
                // SAFETY: `position..end` lies inside the mapping (`end <=
                // map.len`, which is at most the mapping's length) and inside
                // the file, which is never shrunk below `map.len` while it is
                // installed: `set_len` takes this lock and removes the
                // mapping first. The space is allocated (`fallocate`), so
                // storing into it cannot fault for want of blocks. Nothing
                // in this process holds a Rust reference into this range of
                // the writable mapping; readers of the file's read-only
                // mapping only read bytes published after this write
                // returns, and published bytes are never written again.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        buf.as_ptr(),
                        map.map.as_mut_ptr().add(position as usize),
                        buf.len(),
                    );
                }
                return Ok(());
            }
        }
        self.file.write_all_at(buf, position)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut reserved = self.reserved();
        if reserved.as_ref().is_some_and(|map| map.len > len) {
            *reserved = None;
        }
        self.file.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        // Stores into the writable mapping dirty the same page-cache pages
        // a `write` would; fdatasync writes them back like any others.
        self.file.sync_data()
    }

    #[cfg(target_os = "linux")]
    fn reserve(&self, len: u64, stores: Stores) -> io::Result<()> {
        let mut reserved = self.reserved();
        let from = reserved.as_ref().map_or(0, |map| map.len);
        if len <= from {
            return Ok(());
        }
        // Mappings grow by doubling: remapping (and unmapping the pages
        // already written) on every reservation would cost more than it
        // saves.
        let map_len = len.checked_next_power_of_two().unwrap_or(len);
        let (Ok(start), Ok(count), Ok(_)) = (
            libc::off_t::try_from(from),
            libc::off_t::try_from(len - from),
            usize::try_from(map_len),
        ) else {
            return Err(io::Error::other("reservation overflows off_t"));
        };
        // SAFETY: a plain system call on a descriptor this file owns; no
        // memory of this process is read or written.
        let allocated = unsafe { libc::fallocate(self.file.as_raw_fd(), 0, start, count) };
        if allocated != 0 {
            let error = io::Error::last_os_error();
            return match error.raw_os_error() {
                // A file system that cannot allocate ahead: grow the file
                // and keep writing with `pwrite`, which reports a lack of
                // space as an error where a store into a mapping could not.
                Some(libc::EOPNOTSUPP | libc::ENOSYS) => {
                    *reserved = None;
                    if self.len()? < len {
                        self.file.set_len(len)?;
                    }
                    Ok(())
                }
                _ => Err(error),
            };
        }
        // The mapping is shared; only its first `len` bytes, which the file
        // now holds, allocated, are ever written. It is written only through
        // `write_at`, under the `reserved` lock and below `len`, and it is
        // removed (under the same lock) before the file is shrunk below
        // `len`, so no store can reach past the file's end.
        let map = match reserved.take() {
            Some(old) if old.map.len() as u64 >= len => old.map,
            _ => {
                let map = memmap2::MmapOptions::new()
                    .len(map_len as usize)
                    .map_raw(&self.file)?;
                // A store into a page not yet cached makes the kernel read
                // (here: zero) the page, and by default a large window of
                // pages after it: worth it for batches, which fill those
                // pages next, but far more than small writes need.
                if stores == Stores::Small {
                    map.advise(memmap2::Advice::Random)?;
                }
                map
            }
        };
        *reserved = Some(WriteMap { map, len });
        Ok(())
    }

    #[cfg(target_os = "linux")]
    fn data_after(&self, position: u64) -> io::Result<Option<std::ops::Range<u64>>> {
        data_after(&self.file, position)
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
        let map = unsafe { memmap2::MmapOptions::new().len(len).map(&self.file)? };
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
            // (`self.file` is owned by this file, `out` is borrowed from the
            // caller), and `offset` is a valid, exclusively borrowed
            // `off_t` that the kernel advances; no memory of this process is
            // read or written.
            let sent = unsafe {
                libc::sendfile(out.as_raw_fd(), self.file.as_raw_fd(), &mut offset, count)
            };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> (tempfile::TempDir, Arc<dyn StorageFile>) {
        let dir = tempfile::tempdir().unwrap();
        let file = FsStorage.open(&dir.path().join("f"), true).unwrap();
        (dir, file)
    }

    fn read(file: &dyn StorageFile, position: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        crate::storage::read_exact_at(file, &mut buf, position).unwrap();
        buf
    }

    #[test]
    fn writes_into_reserved_space_read_back_and_grow_past_it() {
        let (_dir, file) = file();
        file.set_len(1 << 20).unwrap();
        file.reserve(64 << 10, Stores::Streaming).unwrap();
        // Inside the reservation, across its end, and past it.
        file.write_at(&[1; 300], 100).unwrap();
        file.write_at(&[2; 300], (64 << 10) - 100).unwrap();
        file.write_at(&[3; 300], 1 << 20).unwrap();
        assert_eq!(read(&*file, 100, 300), vec![1; 300]);
        assert_eq!(read(&*file, (64 << 10) - 100, 300), vec![2; 300]);
        assert_eq!(read(&*file, 1 << 20, 300), vec![3; 300]);
        assert_eq!(file.len().unwrap(), (1 << 20) + 300);
        // Growing the reservation keeps what was stored.
        file.reserve(512 << 10, Stores::Streaming).unwrap();
        file.write_at(&[4; 10], 400 << 10).unwrap();
        assert_eq!(read(&*file, 100, 300), vec![1; 300]);
        assert_eq!(read(&*file, 400 << 10, 10), vec![4; 10]);
        file.sync_data().unwrap();
    }

    #[test]
    fn reserving_grows_a_short_file_with_zeros() {
        let (_dir, file) = file();
        file.write_at(b"abc", 0).unwrap();
        file.reserve(10_000, Stores::Streaming).unwrap();
        assert_eq!(file.len().unwrap(), 10_000);
        assert_eq!(read(&*file, 0, 5), b"abc\0\0");
        file.write_at(b"xyz", 9_997).unwrap();
        assert_eq!(read(&*file, 9_990, 10), b"\0\0\0\0\0\0\0xyz");
    }

    #[test]
    fn shrinking_ends_the_reservation() {
        let (_dir, file) = file();
        file.reserve(256 << 10, Stores::Streaming).unwrap();
        file.write_at(&[5; 100], 0).unwrap();
        file.set_len(1000).unwrap();
        // Past the new end: written (and the file grown) by a system call,
        // not stored into a mapping past the file's end.
        file.write_at(&[6; 100], 200 << 10).unwrap();
        assert_eq!(file.len().unwrap(), (200 << 10) + 100);
        assert_eq!(read(&*file, 0, 100), vec![5; 100]);
        assert_eq!(read(&*file, 200 << 10, 100), vec![6; 100]);
        assert_eq!(read(&*file, 1000, 10), vec![0; 10]);
    }

    #[test]
    fn data_after_skips_space_never_written() {
        let (_dir, file) = file();
        file.set_len(64 << 20).unwrap();
        file.reserve(8 << 20, Stores::Streaming).unwrap();
        file.write_at(&[7; 4096], 0).unwrap();
        file.sync_data().unwrap();
        let data = file.data_after(0).unwrap().expect("data at the start");
        assert_eq!(data.start, 0);
        assert!(data.end >= 4096 && data.end <= 64 << 20, "{data:?}");
        // Past the reservation the file is a hole.
        assert_eq!(file.data_after(9 << 20).unwrap(), None);
        assert_eq!(file.data_after(64 << 20).unwrap(), None);
    }
}
