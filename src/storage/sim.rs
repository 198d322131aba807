//! A deterministic, in-memory simulated disk for crash tests.
//!
//! [`SimStorage`] implements [`Storage`] with a model of what survives a
//! power loss:
//!
//! * Files are inodes. A directory maps names to inodes, so opening a path
//!   twice shares one file, a file renamed over or removed stays readable and
//!   writable through the handles that were open on it, and its contents go
//!   away only when no name and no handle refers to it.
//! * Each inode has its current contents (what reads see) and its durable
//!   contents (what a crash starts from). Writes and length changes since the
//!   last [`StorageFile::sync_data`] are kept as a list of pending operations;
//!   a sync applies them to the durable contents.
//! * Each directory has its current entries and its durable entries.
//!   Creations (of files and directories), renames and removals are pending
//!   until [`Storage::sync_dir`] of the directory they change, which makes
//!   that directory's current entries durable. A file whose name is durable in
//!   no directory is lost in a crash, synced data or not.
//! * [`SimStorage::crash`] simulates a power loss; a seeded random number
//!   generator decides, deterministically, which unsynced operations reached
//!   the disk and how writes were torn. [`SimStorage::crash_clean_prefix`]
//!   simulates a process crash instead. Every handle and lock from before a
//!   crash is dead afterwards.
//! * [`SimStorage::fail_after`] injects I/O errors.
//!
//! Renaming directories is not simulated (the log never does it), and files
//! are capped at [`MAX_FILE_LEN`] bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

use super::{LockGuard, Storage, StorageFile};

/// The largest file the simulated disk holds; writes and length changes past
/// it fail with `EFBIG`.
pub const MAX_FILE_LEN: u64 = 1 << 30;

/// The unit in which a torn write reaches the disk.
const SECTOR: u64 = 512;

const EIO: i32 = 5;
const EFBIG: i32 = 27;
const ENOSPC: i32 = 28;

/// A fault that [`SimStorage::fail_after`] injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// A `write_at` or `set_len` fails with `EIO` and changes nothing.
    Eio,
    /// A `write_at` or `set_len` fails with `ENOSPC` and changes nothing.
    Enospc,
    /// A `sync_data` or `sync_dir` fails with `EIO` and makes nothing
    /// durable. A failed `sync_data` also drops, as Linux does, the file's
    /// unsynced writes from what can ever reach the disk: reads still see
    /// them, but no later sync or crash persists them.
    SyncFails,
}

impl Fault {
    fn matches(self, op: OpKind) -> bool {
        match self {
            Fault::Eio | Fault::Enospc => op == OpKind::Write,
            Fault::SyncFails => op == OpKind::Sync,
        }
    }

    fn error(self) -> io::Error {
        match self {
            Fault::Eio | Fault::SyncFails => io::Error::from_raw_os_error(EIO),
            Fault::Enospc => io::Error::from_raw_os_error(ENOSPC),
        }
    }
}

/// The kinds of operations faults are counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpKind {
    /// `write_at` and `set_len`.
    Write,
    /// `sync_data` and `sync_dir`.
    Sync,
}

/// splitmix64: tiny, deterministic, good enough for choosing crash outcomes.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    fn coin(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }
}

/// What a directory entry names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    File(u64),
    Dir,
}

/// An unsynced change to a file.
#[derive(Debug, Clone)]
enum FileOp {
    Write { position: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Default)]
struct Inode {
    current: Vec<u8>,
    durable: Vec<u8>,
    /// Changes since the last sync that may still reach the disk, in order.
    pending: Vec<FileOp>,
    /// Open handles (of the current epoch).
    handles: usize,
}

#[derive(Debug, Default)]
struct DirNode {
    current: BTreeMap<String, Entry>,
    durable: BTreeMap<String, Entry>,
}

/// An unsynced change to one directory: `name` now names `entry`, or nothing.
/// A rename is two of these (in its two directories) with one `group`.
#[derive(Debug)]
struct DirOp {
    group: u64,
    dir: PathBuf,
    name: String,
    entry: Option<Entry>,
}

#[derive(Debug)]
struct ArmedFault {
    fault: Fault,
    /// Matching operations to go; the one that brings it to zero fails.
    remaining: u64,
}

#[derive(Debug)]
struct State {
    rng: Rng,
    /// Bumped by every crash; handles and locks of an older epoch are dead.
    epoch: u64,
    next_ino: u64,
    next_group: u64,
    next_lock: u64,
    ops: u64,
    inodes: BTreeMap<u64, Inode>,
    /// Every directory that exists now, roots (`""` and `"/"`) included.
    dirs: BTreeMap<PathBuf, DirNode>,
    /// Unsynced directory changes, oldest first.
    pending_dirs: Vec<DirOp>,
    /// Held locks: path to the id of the guard holding it.
    locks: BTreeMap<PathBuf, u64>,
    faults: Vec<ArmedFault>,
}

/// Which crash to simulate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CrashMode {
    PowerLoss,
    CleanPrefix,
}

/// A deterministic, in-memory simulated disk; see the [module docs](self).
///
/// Cloning is cheap and yields a handle to the same disk, bound to the
/// current boot: give a clone to the code under test. After a crash, a
/// clone made before it refuses every operation, as a crashed process can
/// do nothing to the disk of the next boot. The handle made by
/// [`SimStorage::new`] belongs to the test and is never bound.
pub struct SimStorage {
    state: Arc<Mutex<State>>,
    /// The boot (crash epoch) this handle belongs to; `None` for the test's own.
    boot: Option<u64>,
}

impl SimStorage {
    /// A handle bound to `boot`, made while the state is already locked.
    fn handle_for_boot(&self, boot: u64) -> SimStorage {
        SimStorage {
            state: self.state.clone(),
            boot: Some(boot),
        }
    }
}

impl Clone for SimStorage {
    fn clone(&self) -> Self {
        let boot = self.state.lock().epoch;
        SimStorage {
            state: self.state.clone(),
            boot: Some(boot),
        }
    }
}

impl fmt::Debug for SimStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("SimStorage");
        match self.state.try_lock() {
            Some(st) => s
                .field("files", &st.inodes.len())
                .field("dirs", &st.dirs.len())
                .field("epoch", &st.epoch)
                .field("ops", &st.ops),
            None => s.field("state", &"<locked>"),
        };
        s.finish_non_exhaustive()
    }
}

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn not_found() -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, "no such file or directory")
}

fn stale() -> io::Error {
    io::Error::other("stale handle after crash")
}

fn too_big() -> io::Error {
    io::Error::from_raw_os_error(EFBIG)
}

/// Makes equal paths equal keys: drops `.`, rejects `..` and non-UTF-8 names.
fn normalize(path: &Path) -> io::Result<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::RootDir => out.push("/"),
            Component::CurDir => {}
            Component::Normal(name) => {
                if name.to_str().is_none() {
                    return Err(invalid("non-UTF-8 path"));
                }
                out.push(name);
            }
            Component::ParentDir | Component::Prefix(_) => {
                return Err(invalid("unsupported path component"));
            }
        }
    }
    Ok(out)
}

/// The parent directory and the name of a normalized path.
fn split(path: &Path) -> io::Result<(PathBuf, String)> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(invalid("path has no file name"));
    };
    let name = name.to_str().ok_or_else(|| invalid("non-UTF-8 path"))?;
    Ok((parent.to_path_buf(), name.to_owned()))
}

fn is_root(path: &Path) -> bool {
    path.parent().is_none()
}

/// The end of a write or length change, if the simulated disk can hold it.
fn checked_end(position: u64, len: usize) -> io::Result<u64> {
    let len = u64::try_from(len).map_err(|_| too_big())?;
    match position.checked_add(len) {
        Some(end) if end <= MAX_FILE_LEN => Ok(end),
        _ => Err(too_big()),
    }
}

fn apply_write(buf: &mut Vec<u8>, position: u64, data: &[u8]) {
    // Positions were checked against MAX_FILE_LEN, which fits in usize.
    let Ok(start) = usize::try_from(position) else {
        return;
    };
    let Some(end) = start.checked_add(data.len()) else {
        return;
    };
    if buf.len() < end {
        buf.resize(end, 0);
    }
    if let Some(dst) = buf.get_mut(start..end) {
        dst.copy_from_slice(data);
    }
}

fn apply_set_len(buf: &mut Vec<u8>, len: u64) {
    if let Ok(len) = usize::try_from(len) {
        buf.resize(len, 0);
    }
}

fn apply_op(buf: &mut Vec<u8>, op: &FileOp) {
    match op {
        FileOp::Write { position, data } => apply_write(buf, *position, data),
        FileOp::SetLen(len) => apply_set_len(buf, *len),
    }
}

/// Applies a write cut to its first `keep` bytes.
fn apply_prefix(buf: &mut Vec<u8>, position: u64, data: &[u8], keep: usize) {
    if let Some(prefix) = data.get(..keep) {
        apply_write(buf, position, prefix);
    }
}

/// Applies a write of which each 512-byte sector (aligned on the file)
/// reached the disk or not, at random.
fn apply_sectors(buf: &mut Vec<u8>, position: u64, data: &[u8], rng: &mut Rng) {
    let mut offset = 0usize;
    while offset < data.len() {
        let at = position + offset as u64;
        let room = SECTOR - at % SECTOR;
        let len = usize::try_from(room)
            .unwrap_or(usize::MAX)
            .min(data.len() - offset);
        if rng.coin()
            && let Some(piece) = data.get(offset..offset + len)
        {
            apply_write(buf, at, piece);
        }
        offset += len;
    }
}

/// Applies a write that was torn: cut to a prefix, or reduced to a subset of
/// its sectors.
fn apply_torn(buf: &mut Vec<u8>, position: u64, data: &[u8], rng: &mut Rng) {
    if rng.coin() {
        let keep = rng.below(data.len() as u64) as usize;
        apply_prefix(buf, position, data, keep);
    } else {
        apply_sectors(buf, position, data, rng);
    }
}

/// Applies an operation that reached the disk during a power loss; a write
/// may be whole or torn.
fn apply_maybe_torn(buf: &mut Vec<u8>, op: &FileOp, rng: &mut Rng) {
    match op {
        FileOp::Write { position, data } if rng.below(4) >= 2 => {
            apply_torn(buf, *position, data, rng);
        }
        op => apply_op(buf, op),
    }
}

impl State {
    fn new(seed: u64) -> State {
        let mut dirs = BTreeMap::new();
        dirs.insert(PathBuf::new(), DirNode::default());
        dirs.insert(PathBuf::from("/"), DirNode::default());
        State {
            rng: Rng(seed),
            epoch: 0,
            next_ino: 0,
            next_group: 0,
            next_lock: 0,
            ops: 0,
            inodes: BTreeMap::new(),
            dirs,
            pending_dirs: Vec::new(),
            locks: BTreeMap::new(),
            faults: Vec::new(),
        }
    }

    /// Counts an operation against the armed faults; the error of the first
    /// that fires.
    fn check_fault(&mut self, op: OpKind) -> io::Result<()> {
        let mut fired = None;
        self.faults.retain_mut(|armed| {
            if !armed.fault.matches(op) {
                return true;
            }
            armed.remaining = armed.remaining.saturating_sub(1);
            if armed.remaining == 0 && fired.is_none() {
                fired = Some(armed.fault);
                return false;
            }
            true
        });
        match fired {
            Some(fault) => Err(fault.error()),
            None => Ok(()),
        }
    }

    /// What a normalized path names now.
    fn lookup(&self, path: &Path) -> Option<Entry> {
        if self.dirs.contains_key(path) {
            return Some(Entry::Dir);
        }
        let (parent, name) = split(path).ok()?;
        self.dirs.get(&parent)?.current.get(&name).copied()
    }

    /// Checks that a normalized path is an existing directory.
    fn require_dir(&self, path: &Path) -> io::Result<()> {
        if self.dirs.contains_key(path) {
            Ok(())
        } else if self.lookup(path).is_some() {
            Err(io::ErrorKind::NotADirectory.into())
        } else {
            Err(not_found())
        }
    }

    /// The inode a normalized path names, for the test helpers.
    fn file_inode(&self, path: &Path) -> io::Result<u64> {
        match self.lookup(path) {
            Some(Entry::File(ino)) => Ok(ino),
            Some(Entry::Dir) => Err(io::ErrorKind::IsADirectory.into()),
            None => Err(not_found()),
        }
    }

    fn new_group(&mut self) -> u64 {
        self.next_group += 1;
        self.next_group
    }

    /// Changes a directory entry now, pending until the directory is synced.
    fn set_entry(&mut self, group: u64, dir: &Path, name: &str, entry: Option<Entry>) {
        let Some(node) = self.dirs.get_mut(dir) else {
            return;
        };
        match entry {
            Some(entry) => node.current.insert(name.to_owned(), entry),
            None => node.current.remove(name),
        };
        self.pending_dirs.push(DirOp {
            group,
            dir: dir.to_path_buf(),
            name: name.to_owned(),
            entry,
        });
    }

    /// The inode of a normalized file path, created if missing and `create`.
    fn open_inode(&mut self, path: &Path, create: bool) -> io::Result<u64> {
        let (parent, name) = split(path)?;
        self.require_dir(&parent)?;
        match self
            .dirs
            .get(&parent)
            .and_then(|dir| dir.current.get(&name))
        {
            Some(Entry::File(ino)) => Ok(*ino),
            Some(Entry::Dir) => Err(io::ErrorKind::IsADirectory.into()),
            None if !create => Err(not_found()),
            None => {
                self.next_ino += 1;
                let ino = self.next_ino;
                self.inodes.insert(ino, Inode::default());
                let group = self.new_group();
                self.set_entry(group, &parent, &name, Some(Entry::File(ino)));
                Ok(ino)
            }
        }
    }

    /// Drops inodes that nothing can reach any more: no current or durable
    /// name, no pending directory change, no open handle.
    fn collect_garbage(&mut self) {
        let mut live = BTreeSet::new();
        for dir in self.dirs.values() {
            for entry in dir.current.values().chain(dir.durable.values()) {
                if let Entry::File(ino) = entry {
                    live.insert(*ino);
                }
            }
        }
        for op in &self.pending_dirs {
            if let Some(Entry::File(ino)) = op.entry {
                live.insert(ino);
            }
        }
        self.inodes
            .retain(|ino, inode| inode.handles > 0 || live.contains(ino));
    }

    fn crash(&mut self, mode: CrashMode) {
        // Directories: durable entries, then a prefix (in order, whole
        // renames at a time) of the pending changes, as a metadata journal
        // would commit them.
        let mut entries: BTreeMap<PathBuf, BTreeMap<String, Entry>> = self
            .dirs
            .iter()
            .map(|(path, dir)| (path.clone(), dir.durable.clone()))
            .collect();
        let pending = std::mem::take(&mut self.pending_dirs);
        let mut groups: Vec<u64> = pending.iter().map(|op| op.group).collect();
        groups.dedup();
        let kept = match mode {
            CrashMode::PowerLoss => self.rng.below(groups.len() as u64 + 1) as usize,
            CrashMode::CleanPrefix => groups.len(),
        };
        let kept: BTreeSet<u64> = groups.iter().take(kept).copied().collect();
        for op in pending.iter().filter(|op| kept.contains(&op.group)) {
            if let Some(dir) = entries.get_mut(&op.dir) {
                match op.entry {
                    Some(entry) => dir.insert(op.name.clone(), entry),
                    None => dir.remove(&op.name),
                };
            }
        }

        // What is reachable from the roots survives.
        let mut dirs = BTreeMap::new();
        let mut files = BTreeSet::new();
        let mut stack = vec![PathBuf::new(), PathBuf::from("/")];
        while let Some(path) = stack.pop() {
            let Some(children) = entries.remove(&path) else {
                continue;
            };
            for (name, entry) in &children {
                match entry {
                    Entry::File(ino) => {
                        files.insert(*ino);
                    }
                    Entry::Dir => stack.push(path.join(name)),
                }
            }
            dirs.insert(
                path,
                DirNode {
                    current: children.clone(),
                    durable: children,
                },
            );
        }
        self.dirs = dirs;

        // Files: durable contents plus what of the pending changes made it.
        let inodes = std::mem::take(&mut self.inodes);
        for (ino, inode) in inodes {
            if !files.contains(&ino) {
                continue;
            }
            let contents = match mode {
                CrashMode::PowerLoss => power_loss(inode.durable, &inode.pending, &mut self.rng),
                CrashMode::CleanPrefix => {
                    clean_prefix(inode.durable, &inode.pending, &mut self.rng)
                }
            };
            self.inodes.insert(
                ino,
                Inode {
                    current: contents.clone(),
                    durable: contents,
                    pending: Vec::new(),
                    handles: 0,
                },
            );
        }

        self.epoch += 1;
        self.locks.clear();
        self.faults.clear();
    }
}

/// A file's contents after a power loss. One of, at random: none of the
/// pending changes reached the disk; an ordered prefix of them did, the
/// first one missing possibly torn; a random subset did, each write whole
/// or torn.
fn power_loss(mut buf: Vec<u8>, pending: &[FileOp], rng: &mut Rng) -> Vec<u8> {
    match rng.below(4) {
        0 => {}
        1 => {
            let keep = rng.below(pending.len() as u64 + 1) as usize;
            for op in pending.iter().take(keep) {
                apply_op(&mut buf, op);
            }
            if let Some(FileOp::Write { position, data }) = pending.get(keep)
                && rng.coin()
            {
                apply_torn(&mut buf, *position, data, rng);
            }
        }
        _ => {
            for op in pending {
                if rng.coin() {
                    apply_maybe_torn(&mut buf, op, rng);
                }
            }
        }
    }
    buf
}

/// A file's contents after a process crash: every pending change, but the
/// last write may be cut to a prefix.
fn clean_prefix(mut buf: Vec<u8>, pending: &[FileOp], rng: &mut Rng) -> Vec<u8> {
    let last_write = pending
        .iter()
        .rposition(|op| matches!(op, FileOp::Write { .. }));
    for (i, op) in pending.iter().enumerate() {
        match op {
            FileOp::Write { position, data } if Some(i) == last_write && rng.coin() => {
                let keep = rng.below(data.len() as u64 + 1) as usize;
                apply_prefix(&mut buf, *position, data, keep);
            }
            op => apply_op(&mut buf, op),
        }
    }
    buf
}

impl SimStorage {
    /// An empty disk whose crashes are decided by a generator seeded with
    /// `seed`: the same seed and the same operations give the same outcome.
    /// The roots `/` and `` (for relative paths) exist and are durable.
    pub fn new(seed: u64) -> SimStorage {
        SimStorage {
            state: Arc::new(Mutex::new(State::new(seed))),
            boot: None,
        }
    }

    /// Simulates a power loss.
    ///
    /// Each file keeps its durable contents plus, at random, none, an ordered
    /// prefix, or a random subset (applied in order) of its unsynced writes
    /// and length changes; a write that reached the disk may be torn: cut to
    /// a prefix, or with only some of its 512-byte sectors written. Each
    /// directory keeps its durable entries plus a random prefix, in the
    /// order they were made, of the unsynced creations, renames and removals
    /// (a rename all or nothing). Files and directories left without a name
    /// are gone.
    ///
    /// Afterwards every handle from before fails with "stale handle after
    /// crash", every lock is released, every armed fault is cleared, and all
    /// that is on the disk counts as durable. The storage is usable again.
    pub fn crash(&self) {
        self.state.lock().crash(CrashMode::PowerLoss);
    }

    /// Simulates a process crash (the kernel outlives the process): every
    /// unsynced directory change and every unsynced write and length change
    /// reaches the disk, except that the last write of each file may be cut
    /// to a random prefix, as if the process died in the middle of it.
    ///
    /// Otherwise like [`crash`](SimStorage::crash): old handles and locks are
    /// dead, faults are cleared, and all that is on the disk counts as
    /// durable.
    pub fn crash_clean_prefix(&self) {
        self.state.lock().crash(CrashMode::CleanPrefix);
    }

    /// Arms a fault: the `n`th matching operation from now (1 is the next
    /// one; 0 counts as 1) fails, once. [`Fault::Eio`] and [`Fault::Enospc`]
    /// count `write_at` and `set_len` calls; [`Fault::SyncFails`] counts
    /// `sync_data` and `sync_dir` calls. Several faults may be armed at once,
    /// each counting on its own.
    pub fn fail_after(&self, n: u64, fault: Fault) {
        self.state.lock().faults.push(ArmedFault {
            fault,
            remaining: n.max(1),
        });
    }

    /// Disarms every fault not yet fired.
    pub fn clear_faults(&self) {
        self.state.lock().faults.clear();
    }

    /// The current contents (what reads see) of the file at `path`, or
    /// `None` if it names no file.
    pub fn file_contents(&self, path: impl AsRef<Path>) -> Option<Vec<u8>> {
        let st = self.state.lock();
        let path = normalize(path.as_ref()).ok()?;
        let ino = st.file_inode(&path).ok()?;
        st.inodes.get(&ino).map(|inode| inode.current.clone())
    }

    /// The durable contents (what a crash starts from) of the file that
    /// `path` names now, or `None` if it names no file. Whether the name
    /// itself is durable is not considered.
    pub fn durable_contents(&self, path: impl AsRef<Path>) -> Option<Vec<u8>> {
        let st = self.state.lock();
        let path = normalize(path.as_ref()).ok()?;
        let ino = st.file_inode(&path).ok()?;
        st.inodes.get(&ino).map(|inode| inode.durable.clone())
    }

    /// Overwrites bytes of the file at `path`, both currently and durably,
    /// growing it if needed: corruption on the disk. Not counted as an
    /// operation and never faulted.
    pub fn write_raw(&self, path: impl AsRef<Path>, position: u64, bytes: &[u8]) -> io::Result<()> {
        let mut st = self.state.lock();
        let path = normalize(path.as_ref())?;
        let ino = st.file_inode(&path)?;
        checked_end(position, bytes.len())?;
        let inode = st.inodes.get_mut(&ino).ok_or_else(not_found)?;
        apply_write(&mut inode.current, position, bytes);
        apply_write(&mut inode.durable, position, bytes);
        Ok(())
    }

    /// Sets the length of the file at `path`, both currently and durably:
    /// a truncation or extension on the disk. Not counted as an operation and
    /// never faulted.
    pub fn set_len_raw(&self, path: impl AsRef<Path>, len: u64) -> io::Result<()> {
        let mut st = self.state.lock();
        let path = normalize(path.as_ref())?;
        let ino = st.file_inode(&path)?;
        checked_end(len, 0)?;
        let inode = st.inodes.get_mut(&ino).ok_or_else(not_found)?;
        apply_set_len(&mut inode.current, len);
        apply_set_len(&mut inode.durable, len);
        Ok(())
    }

    /// How many [`Storage`] and [`StorageFile`] calls were made on this disk
    /// so far (failed ones and ones on stale handles included).
    pub fn op_count(&self) -> u64 {
        self.state.lock().ops
    }

    /// Locks the state and counts one operation.
    fn op(&self) -> io::Result<parking_lot::MutexGuard<'_, State>> {
        let mut st = self.state.lock();
        st.ops += 1;
        if self.boot.is_some_and(|boot| boot != st.epoch) {
            return Err(stale());
        }
        Ok(st)
    }
}

impl Storage for SimStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut st = self.op()?;
        let path = normalize(path)?;
        let mut ancestors: Vec<&Path> = path.ancestors().collect();
        ancestors.reverse();
        for dir in ancestors {
            if is_root(dir) || st.dirs.contains_key(dir) {
                continue;
            }
            if st.lookup(dir).is_some() {
                return Err(io::ErrorKind::AlreadyExists.into());
            }
            let (parent, name) = split(dir)?;
            st.require_dir(&parent)?;
            st.dirs.insert(dir.to_path_buf(), DirNode::default());
            let group = st.new_group();
            st.set_entry(group, &parent, &name, Some(Entry::Dir));
        }
        Ok(())
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        let mut st = self.op()?;
        let path = normalize(path)?;
        if st.dirs.contains_key(&path) {
            return Err(io::ErrorKind::IsADirectory.into());
        }
        let ino = st.open_inode(&path, create)?;
        let inode = st.inodes.get_mut(&ino).ok_or_else(not_found)?;
        inode.handles += 1;
        Ok(Arc::new(SimFile {
            storage: self.handle_for_boot(st.epoch),
            ino,
            epoch: st.epoch,
        }))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut st = self.op()?;
        let path = normalize(path)?;
        st.file_inode(&path)?;
        let (parent, name) = split(&path)?;
        let group = st.new_group();
        st.set_entry(group, &parent, &name, None);
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.op()?;
        let from = normalize(from)?;
        let to = normalize(to)?;
        let ino = match st.lookup(&from) {
            Some(Entry::File(ino)) => ino,
            Some(Entry::Dir) => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "renaming directories is not simulated",
                ));
            }
            None => return Err(not_found()),
        };
        if st.dirs.contains_key(&to) {
            return Err(io::ErrorKind::IsADirectory.into());
        }
        let (to_parent, to_name) = split(&to)?;
        st.require_dir(&to_parent)?;
        if from == to {
            return Ok(());
        }
        let (from_parent, from_name) = split(&from)?;
        let group = st.new_group();
        st.set_entry(group, &from_parent, &from_name, None);
        st.set_entry(group, &to_parent, &to_name, Some(Entry::File(ino)));
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let st = self.op()?;
        let path = normalize(path)?;
        st.require_dir(&path)?;
        Ok(st
            .dirs
            .get(&path)
            .map(|dir| dir.current.keys().cloned().collect())
            .unwrap_or_default())
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        let st = self.op()?;
        let path = normalize(path)?;
        Ok(st.lookup(&path).is_some())
    }

    fn is_dir(&self, path: &Path) -> io::Result<bool> {
        let st = self.op()?;
        let path = normalize(path)?;
        Ok(st.dirs.contains_key(&path))
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut st = self.op()?;
        let path = normalize(path)?;
        st.require_dir(&path)?;
        st.check_fault(OpKind::Sync)?;
        if let Some(dir) = st.dirs.get_mut(&path) {
            dir.durable = dir.current.clone();
        }
        st.pending_dirs.retain(|op| op.dir != path);
        st.collect_garbage();
        Ok(())
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>> {
        let mut st = self.op()?;
        let path = normalize(path)?;
        if st.dirs.contains_key(&path) {
            return Err(io::ErrorKind::IsADirectory.into());
        }
        st.open_inode(&path, true)?;
        if st.locks.contains_key(&path) {
            return Ok(None);
        }
        st.next_lock += 1;
        let id = st.next_lock;
        st.locks.insert(path.clone(), id);
        Ok(Some(Box::new(SimLock {
            storage: self.handle_for_boot(st.epoch),
            path,
            id,
        })))
    }
}

/// An open file of a [`SimStorage`].
#[derive(Debug)]
struct SimFile {
    storage: SimStorage,
    ino: u64,
    /// The crash epoch it was opened in; dead in any other.
    epoch: u64,
}

impl SimFile {
    /// Runs `f` on this file's inode, counting one operation; fails if the
    /// handle is stale.
    fn with<T>(&self, f: impl FnOnce(&mut State, u64) -> io::Result<T>) -> io::Result<T> {
        let mut st = self.storage.op()?;
        if st.epoch != self.epoch || !st.inodes.contains_key(&self.ino) {
            return Err(stale());
        }
        f(&mut st, self.ino)
    }
}

impl StorageFile for SimFile {
    fn read_at(&self, buf: &mut [u8], position: u64) -> io::Result<usize> {
        self.with(|st, ino| {
            let inode = st.inodes.get(&ino).ok_or_else(stale)?;
            let Ok(start) = usize::try_from(position) else {
                return Ok(0);
            };
            let Some(available) = inode.current.get(start..) else {
                return Ok(0);
            };
            let n = available.len().min(buf.len());
            buf[..n].copy_from_slice(&available[..n]);
            Ok(n)
        })
    }

    fn write_at(&self, buf: &[u8], position: u64) -> io::Result<()> {
        self.with(|st, ino| {
            st.check_fault(OpKind::Write)?;
            checked_end(position, buf.len())?;
            if buf.is_empty() {
                return Ok(());
            }
            let inode = st.inodes.get_mut(&ino).ok_or_else(stale)?;
            apply_write(&mut inode.current, position, buf);
            inode.pending.push(FileOp::Write {
                position,
                data: buf.to_vec(),
            });
            Ok(())
        })
    }

    fn len(&self) -> io::Result<u64> {
        self.with(|st, ino| {
            let inode = st.inodes.get(&ino).ok_or_else(stale)?;
            Ok(inode.current.len() as u64)
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with(|st, ino| {
            st.check_fault(OpKind::Write)?;
            checked_end(len, 0)?;
            let inode = st.inodes.get_mut(&ino).ok_or_else(stale)?;
            apply_set_len(&mut inode.current, len);
            inode.pending.push(FileOp::SetLen(len));
            Ok(())
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.with(|st, ino| {
            let result = st.check_fault(OpKind::Sync);
            let inode = st.inodes.get_mut(&ino).ok_or_else(stale)?;
            let pending = std::mem::take(&mut inode.pending);
            // A failed sync loses the pending changes for good (they are
            // dropped above); a good one writes them.
            result?;
            for op in &pending {
                apply_op(&mut inode.durable, op);
            }
            Ok(())
        })
    }

    fn map(&self, _len: u64) -> io::Result<Option<Bytes>> {
        self.with(|_, _| Ok(None))
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        let mut st = self.storage.state.lock();
        if st.epoch == self.epoch
            && let Some(inode) = st.inodes.get_mut(&self.ino)
        {
            inode.handles = inode.handles.saturating_sub(1);
        }
    }
}

/// A lock held on a path of a [`SimStorage`].
#[derive(Debug)]
struct SimLock {
    storage: SimStorage,
    path: PathBuf,
    id: u64,
}

impl LockGuard for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut st = self.storage.state.lock();
        // After a crash the path may be held by a newer guard.
        if st.locks.get(&self.path) == Some(&self.id) {
            st.locks.remove(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEEDS: u64 = 200;

    fn p(s: &str) -> &Path {
        Path::new(s)
    }

    fn read_all(file: &dyn StorageFile) -> Vec<u8> {
        let len = file.len().unwrap() as usize;
        let mut buf = vec![0; len];
        let n = file.read_at(&mut buf, 0).unwrap();
        assert_eq!(n, len);
        buf
    }

    /// A disk with a durable `/d` holding a durable, synced file `/d/f`.
    fn durable_file(seed: u64, contents: &[u8]) -> (SimStorage, Arc<dyn StorageFile>) {
        let sim = SimStorage::new(seed);
        sim.create_dir_all(p("/d")).unwrap();
        sim.sync_dir(p("/")).unwrap();
        let f = sim.open(p("/d/f"), true).unwrap();
        f.write_at(contents, 0).unwrap();
        f.sync_data().unwrap();
        sim.sync_dir(p("/d")).unwrap();
        (sim, f)
    }

    #[test]
    fn unsynced_writes_may_be_lost_synced_ones_never() {
        let (mut lost, mut kept) = (0, 0);
        for seed in 0..SEEDS {
            let (sim, f) = durable_file(seed, b"synced");
            f.write_at(b"-unsynced", 6).unwrap();
            f.write_at(b"-more", 15).unwrap();
            sim.crash();
            let after = sim.file_contents("/d/f").expect("synced file survives");
            assert_eq!(&after[..6], b"synced", "seed {seed}");
            match after.len() {
                6 => lost += 1,
                20 if after == b"synced-unsynced-more" => kept += 1,
                _ => {}
            }
            let f = sim.open(p("/d/f"), false).unwrap();
            assert_eq!(read_all(&*f), after);
        }
        assert!(lost > 0, "some seed must lose the unsynced writes");
        assert!(kept > 0, "some seed must keep the unsynced writes");
    }

    #[test]
    fn a_file_needs_its_directory_synced() {
        let mut missing = 0;
        for seed in 0..SEEDS {
            for sync_dir in [false, true] {
                let sim = SimStorage::new(seed);
                sim.create_dir_all(p("/a/b")).unwrap();
                sim.sync_dir(p("/")).unwrap();
                sim.sync_dir(p("/a")).unwrap();
                let f = sim.open(p("/a/b/f"), true).unwrap();
                f.write_at(b"data", 0).unwrap();
                f.sync_data().unwrap();
                if sync_dir {
                    sim.sync_dir(p("/a/b")).unwrap();
                }
                sim.crash();
                assert!(sim.is_dir(p("/a/b")).unwrap());
                match sim.file_contents("/a/b/f") {
                    Some(contents) => assert_eq!(contents, b"data"),
                    None => {
                        assert!(!sync_dir, "seed {seed}: synced directory lost its file");
                        assert!(!sim.exists(p("/a/b/f")).unwrap());
                        assert!(sim.list_dir(p("/a/b")).unwrap().is_empty());
                        missing += 1;
                    }
                }
            }
        }
        assert!(missing > 0, "some seed must lose the unsynced name");
    }

    #[test]
    fn an_unsynced_directory_takes_its_files_along() {
        let mut missing = 0;
        for seed in 0..SEEDS {
            let sim = SimStorage::new(seed);
            sim.create_dir_all(p("/x/y")).unwrap();
            let f = sim.open(p("/x/y/f"), true).unwrap();
            f.write_at(b"data", 0).unwrap();
            f.sync_data().unwrap();
            sim.sync_dir(p("/x/y")).unwrap();
            sim.sync_dir(p("/x")).unwrap();
            sim.crash();
            if !sim.exists(p("/x")).unwrap() {
                assert!(!sim.exists(p("/x/y/f")).unwrap());
                missing += 1;
            }
        }
        assert!(missing > 0);
    }

    #[test]
    fn rename_replaces_the_entry_and_keeps_old_handles() {
        let sim = SimStorage::new(1);
        sim.create_dir_all(p("/d")).unwrap();
        let a = sim.open(p("/d/a"), true).unwrap();
        a.write_at(b"new", 0).unwrap();
        let b = sim.open(p("/d/b"), true).unwrap();
        b.write_at(b"old", 0).unwrap();
        sim.rename(p("/d/a"), p("/d/b")).unwrap();
        assert_eq!(sim.list_dir(p("/d")).unwrap(), ["b"]);
        assert_eq!(sim.file_contents("/d/b").unwrap(), b"new");
        assert!(sim.file_contents("/d/a").is_none());
        // The replaced inode stays readable and writable through its handle.
        assert_eq!(read_all(&*b), b"old");
        b.write_at(b"!", 3).unwrap();
        assert_eq!(read_all(&*b), b"old!");
        // The renamed one is the same inode under its new name.
        let b2 = sim.open(p("/d/b"), false).unwrap();
        a.write_at(b"er", 3).unwrap();
        assert_eq!(read_all(&*b2), b"newer");
        assert_eq!(
            sim.open(p("/d/a"), false).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(
            sim.rename(p("/d/a"), p("/d/c")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(
            sim.rename(p("/d/b"), p("/nope/c")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn rename_is_atomic_in_a_crash_and_durable_after_sync_dir() {
        let (mut old, mut new) = (0, 0);
        for seed in 0..SEEDS {
            for sync in [false, true] {
                let (sim, f) = durable_file(seed, b"old");
                let tmp = sim.open(p("/d/tmp"), true).unwrap();
                tmp.write_at(b"new", 0).unwrap();
                tmp.sync_data().unwrap();
                sim.rename(p("/d/tmp"), p("/d/f")).unwrap();
                if sync {
                    sim.sync_dir(p("/d")).unwrap();
                }
                sim.crash();
                assert!(f.len().is_err());
                let names = sim.list_dir(p("/d")).unwrap();
                let contents = sim.file_contents("/d/f").unwrap();
                if contents == b"new" {
                    assert_eq!(names, ["f"], "seed {seed}");
                    new += 1;
                } else {
                    assert!(!sync, "seed {seed}: synced rename lost");
                    assert_eq!(contents, b"old");
                    // The creation of tmp may or may not have persisted.
                    assert!(names == ["f"] || names == ["f", "tmp"], "{names:?}");
                    old += 1;
                }
            }
        }
        assert!(old > 0 && new > 0);
    }

    #[test]
    fn directory_changes_persist_in_order() {
        let mut seen = BTreeSet::new();
        for seed in 0..SEEDS {
            let sim = SimStorage::new(seed);
            sim.create_dir_all(p("/d")).unwrap();
            sim.sync_dir(p("/")).unwrap();
            sim.sync_dir(p("/d")).unwrap();
            for name in ["/d/a", "/d/b", "/d/c"] {
                sim.open(p(name), true).unwrap();
            }
            sim.remove_file(p("/d/a")).unwrap();
            sim.crash();
            let names = sim.list_dir(p("/d")).unwrap().join(",");
            assert!(
                ["", "a", "a,b", "a,b,c", "b,c"].contains(&names.as_str()),
                "seed {seed}: {names}"
            );
            seen.insert(names);
        }
        assert_eq!(seen.len(), 5);
    }

    #[test]
    fn removed_files_stay_usable_while_open() {
        let (sim, f) = durable_file(7, b"hello");
        let g = sim.open(p("/d/f"), false).unwrap();
        sim.remove_file(p("/d/f")).unwrap();
        assert!(!sim.exists(p("/d/f")).unwrap());
        assert!(sim.list_dir(p("/d")).unwrap().is_empty());
        assert_eq!(read_all(&*f), b"hello");
        g.write_at(b" world", 5).unwrap();
        g.sync_data().unwrap();
        assert_eq!(read_all(&*f), b"hello world");
        assert_eq!(
            sim.open(p("/d/f"), false).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(
            sim.remove_file(p("/d/f")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        // A new file under the name is a different inode.
        let h = sim.open(p("/d/f"), true).unwrap();
        assert_eq!(h.len().unwrap(), 0);
        assert_eq!(f.len().unwrap(), 11);
        sim.sync_dir(p("/d")).unwrap();
        assert_eq!(read_all(&*f), b"hello world");
        drop((f, g));
        sim.crash();
        assert_eq!(sim.file_contents("/d/f").unwrap(), b"");
    }

    #[test]
    fn same_path_shares_contents() {
        let sim = SimStorage::new(0);
        let a = sim.open(p("f"), true).unwrap();
        let b = sim.open(p("./f"), true).unwrap();
        a.write_at(b"abc", 0).unwrap();
        assert_eq!(read_all(&*b), b"abc");
        b.set_len(1).unwrap();
        assert_eq!(a.len().unwrap(), 1);
        b.set_len(4).unwrap();
        assert_eq!(read_all(&*a), b"a\0\0\0");
        assert_eq!(sim.list_dir(p("")).unwrap(), ["f"]);
        let mut buf = [9; 8];
        assert_eq!(a.read_at(&mut buf, 2).unwrap(), 2);
        assert_eq!(a.read_at(&mut buf, 100).unwrap(), 0);
        assert_eq!(a.read_at(&mut buf, u64::MAX).unwrap(), 0);
        assert!(a.map(4).unwrap().is_none());
    }

    #[test]
    fn paths_and_directories() {
        let sim = SimStorage::new(0);
        assert_eq!(
            sim.open(p("/d/f"), true).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        sim.create_dir_all(p("/d/sub/deeper")).unwrap();
        sim.create_dir_all(p("/d/sub")).unwrap();
        assert_eq!(
            sim.open(p("/d/f"), false).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        for name in ["/d/z", "/d/a", "/d/m"] {
            sim.open(p(name), true).unwrap();
        }
        assert_eq!(sim.list_dir(p("/d")).unwrap(), ["a", "m", "sub", "z"]);
        assert_eq!(sim.list_dir(p("/d/")).unwrap(), ["a", "m", "sub", "z"]);
        assert!(sim.is_dir(p("/d/sub")).unwrap());
        assert!(sim.is_dir(p("/")).unwrap());
        assert!(!sim.is_dir(p("/d/a")).unwrap());
        assert!(!sim.is_dir(p("/nope")).unwrap());
        assert!(sim.exists(p("/d/sub/deeper")).unwrap());
        assert!(sim.exists(p("/d/a")).unwrap());
        assert!(!sim.exists(p("/d/b")).unwrap());
        assert_eq!(
            sim.list_dir(p("/d/a")).unwrap_err().kind(),
            io::ErrorKind::NotADirectory
        );
        assert_eq!(
            sim.list_dir(p("/e")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(
            sim.open(p("/d/a/x"), true).unwrap_err().kind(),
            io::ErrorKind::NotADirectory
        );
        assert_eq!(
            sim.open(p("/d/sub"), true).unwrap_err().kind(),
            io::ErrorKind::IsADirectory
        );
        assert_eq!(
            sim.open(p("/"), true).unwrap_err().kind(),
            io::ErrorKind::IsADirectory
        );
        assert!(sim.open(p(""), true).is_err());
        assert_eq!(
            sim.create_dir_all(p("/d/a/b")).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        assert_eq!(
            sim.open(p("/d/../x"), true).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert!(sim.remove_file(p("/d/sub")).is_err());
        assert!(sim.rename(p("/d/sub"), p("/d/s2")).is_err());
        assert!(sim.rename(p("/d/a"), p("/d/sub")).is_err());
        assert!(sim.sync_dir(p("/nope")).is_err());
        sim.rename(p("/d/a"), p("/d/a")).unwrap();
        assert!(sim.exists(p("/d/a")).unwrap());
    }

    #[test]
    fn torn_writes_are_prefixes_or_sector_subsets() {
        const POS: usize = 100;
        const LEN: usize = 3000;
        let new: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8 + 1).collect();
        let (mut none, mut whole, mut prefix, mut sectors) = (0, 0, 0, 0);
        for seed in 0..SEEDS * 5 {
            let (sim, f) = durable_file(seed, &[0; 4096]);
            f.write_at(&new, POS as u64).unwrap();
            sim.crash();
            let after = sim.file_contents("/d/f").unwrap();
            assert_eq!(after.len(), 4096);
            assert!(after[..POS].iter().all(|&b| b == 0));
            assert!(after[POS + LEN..].iter().all(|&b| b == 0));
            let region = &after[POS..POS + LEN];
            for (got, want) in region.iter().zip(&new) {
                assert!(*got == 0 || got == want, "seed {seed}: foreign byte");
            }
            let written = region.iter().filter(|&&b| b != 0).count();
            let is_prefix = region[..written] == new[..written];
            let is_sector_subset = (0..4096 / 512).all(|s| {
                let lo = (s * 512).max(POS);
                let hi = ((s + 1) * 512).min(POS + LEN);
                lo >= hi || {
                    let chunk = &after[lo..hi];
                    chunk.iter().all(|&b| b == 0) || chunk == &new[lo - POS..hi - POS]
                }
            });
            assert!(is_prefix || is_sector_subset, "seed {seed}");
            match written {
                0 => none += 1,
                LEN => whole += 1,
                _ if is_prefix && !is_sector_subset => prefix += 1,
                _ if !is_prefix => sectors += 1,
                _ => {}
            }
        }
        assert!(none > 0 && whole > 0 && prefix > 0 && sectors > 0);
    }

    #[test]
    fn crash_is_deterministic() {
        let run = |seed| {
            let (sim, f) = durable_file(seed, b"base");
            for i in 0..20u8 {
                f.write_at(&[i; 700], 4 + u64::from(i) * 700).unwrap();
            }
            let g = sim.open(p("/d/g"), true).unwrap();
            g.write_at(b"g", 0).unwrap();
            sim.crash();
            (sim.file_contents("/d/f"), sim.file_contents("/d/g"))
        };
        let outcomes: Vec<_> = (0..20).map(run).collect();
        for (seed, outcome) in outcomes.iter().enumerate() {
            assert_eq!(*outcome, run(seed as u64));
        }
        assert!(outcomes.iter().any(|o| o != &outcomes[0]));
    }

    #[test]
    fn clean_prefix_crash_keeps_all_but_a_torn_last_write() {
        let (mut torn, mut whole) = (0, 0);
        for seed in 0..SEEDS {
            let (sim, f) = durable_file(seed, b"base");
            f.write_at(b"-one", 4).unwrap();
            f.write_at(b"-two", 8).unwrap();
            let g = sim.open(p("/d/g"), true).unwrap();
            g.write_at(b"gg", 0).unwrap();
            g.set_len(5).unwrap();
            sim.create_dir_all(p("/d/sub")).unwrap();
            sim.crash_clean_prefix();
            let after = sim.file_contents("/d/f").unwrap();
            assert!(after.starts_with(b"base-one"));
            assert!(b"base-one-two".starts_with(&after));
            if after.len() == 12 {
                whole += 1;
            } else {
                torn += 1;
            }
            let g = sim.file_contents("/d/g").unwrap();
            assert_eq!(g.len(), 5);
            assert!(g == b"gg\0\0\0" || g == b"g\0\0\0\0" || g == [0; 5]);
            assert!(sim.is_dir(p("/d/sub")).unwrap());
            assert!(f.len().is_err());
        }
        assert!(torn > 0 && whole > 0);
    }

    #[test]
    fn faults_fail_exactly_the_nth_matching_op() {
        let (sim, f) = durable_file(0, b"");
        sim.fail_after(3, Fault::Eio);
        f.write_at(b"a", 0).unwrap();
        f.sync_data().unwrap(); // not counted
        f.set_len(1).unwrap();
        let err = f.write_at(b"b", 1).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(5));
        assert_eq!(sim.file_contents("/d/f").unwrap(), b"a");
        f.write_at(b"c", 1).unwrap();

        sim.fail_after(1, Fault::Enospc);
        assert_eq!(f.set_len(10).unwrap_err().raw_os_error(), Some(28));
        assert_eq!(f.len().unwrap(), 2);
        f.set_len(3).unwrap();

        sim.fail_after(2, Fault::SyncFails);
        f.write_at(b"x", 0).unwrap();
        sim.sync_dir(p("/d")).unwrap();
        assert_eq!(f.sync_data().unwrap_err().raw_os_error(), Some(5));
        sim.sync_dir(p("/d")).unwrap();

        sim.fail_after(5, Fault::Eio);
        sim.clear_faults();
        for _ in 0..10 {
            f.write_at(b"y", 5).unwrap();
        }
    }

    #[test]
    fn a_failed_sync_makes_nothing_durable_ever() {
        for seed in 0..SEEDS {
            let (sim, f) = durable_file(seed, b"durable");
            f.write_at(b"-lost", 7).unwrap();
            sim.fail_after(1, Fault::SyncFails);
            assert!(f.sync_data().is_err());
            assert_eq!(sim.file_contents("/d/f").unwrap(), b"durable-lost");
            assert_eq!(sim.durable_contents("/d/f").unwrap(), b"durable");
            f.write_at(b"!", 12).unwrap();
            f.sync_data().unwrap();
            // The write after the failure is durable; the one before is not.
            let want = b"durable\0\0\0\0\0!";
            assert_eq!(sim.durable_contents("/d/f").unwrap(), want);
            sim.crash();
            assert_eq!(sim.file_contents("/d/f").unwrap(), want);
        }
    }

    #[test]
    fn a_failed_sync_dir_makes_nothing_durable() {
        let mut missing = 0;
        for seed in 0..SEEDS {
            let (sim, _f) = durable_file(seed, b"");
            sim.open(p("/d/g"), true).unwrap();
            sim.fail_after(1, Fault::SyncFails);
            assert!(sim.sync_dir(p("/d")).is_err());
            sim.crash();
            missing += usize::from(!sim.exists(p("/d/g")).unwrap());
        }
        assert!(missing > 0);
    }

    #[test]
    fn stale_handles_and_locks_after_crash() {
        let (sim, f) = durable_file(3, b"abc");
        let lock = sim.try_lock(p("/d/LOCK")).unwrap().expect("free");
        assert!(sim.try_lock(p("/d/LOCK")).unwrap().is_none());
        sim.fail_after(100, Fault::Eio);
        sim.crash();
        let check = |e: io::Error| {
            assert_eq!(e.kind(), io::ErrorKind::Other);
            assert_eq!(e.to_string(), "stale handle after crash");
        };
        check(f.read_at(&mut [0; 3], 0).unwrap_err());
        check(f.write_at(b"x", 0).unwrap_err());
        check(f.len().unwrap_err());
        check(f.set_len(0).unwrap_err());
        check(f.sync_data().unwrap_err());
        check(f.map(3).unwrap_err());
        // Locks are released, and the old guard does not release a new one.
        let new_lock = sim.try_lock(p("/d/LOCK")).unwrap().expect("released");
        drop(lock);
        assert!(sim.try_lock(p("/d/LOCK")).unwrap().is_none());
        drop(new_lock);
        assert!(sim.try_lock(p("/d/LOCK")).unwrap().is_some());
        // Usable again, and faults were cleared.
        let f = sim.open(p("/d/f"), false).unwrap();
        assert_eq!(read_all(&*f), b"abc");
        f.write_at(b"d", 3).unwrap();
        drop(f);
        sim.crash();
    }

    #[test]
    fn raw_edits_and_op_count() {
        let (sim, f) = durable_file(0, b"hello");
        let before = sim.op_count();
        sim.write_raw("/d/f", 1, b"EL").unwrap();
        sim.set_len_raw("/d/f", 4).unwrap();
        assert_eq!(sim.op_count(), before);
        assert_eq!(sim.file_contents("/d/f").unwrap(), b"hELl");
        assert_eq!(sim.durable_contents("/d/f").unwrap(), b"hELl");
        assert_eq!(read_all(&*f), b"hELl");
        assert_eq!(sim.op_count(), before + 2);
        assert!(sim.write_raw("/d/none", 0, b"x").is_err());
        assert!(sim.write_raw("/d/f", u64::MAX, b"x").is_err());
        assert!(sim.set_len_raw("/d", 0).is_err());
        assert!(f.write_at(b"x", MAX_FILE_LEN).is_err());
        assert!(f.set_len(u64::MAX).is_err());
        sim.crash();
        assert_eq!(sim.file_contents("/d/f").unwrap(), b"hELl");
    }

    #[test]
    fn storage_is_usable_as_trait_object() {
        let sim = SimStorage::new(0);
        let storage: Arc<dyn Storage> = Arc::new(sim.clone());
        storage.create_dir_all(p("/log")).unwrap();
        let f = storage.open(p("/log/x"), true).unwrap();
        f.write_at(b"1", 0).unwrap();
        assert_eq!(sim.file_contents("/log/x").unwrap(), b"1");
        assert!(format!("{sim:?}").contains("SimStorage"));
        assert!(format!("{f:?}").contains("SimFile"));
    }
}
