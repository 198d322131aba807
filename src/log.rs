//! The log: a directory of partitions, with a metadata file and an
//! exclusive lock.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::cleaner::CompactionReport;
use crate::config::{Cleanup, Config, Durability};
use crate::error::{CorruptKind, Error, Result};
use crate::partition::{Partition, RecoveryReport, now_ms};
use crate::partitioner::{StickyPartitioner, partition_for_key};
use crate::producer::ProducerIds;
use crate::record::{Appended, Record};
use crate::storage::{FsStorage, LockGuard, Storage, read_exact_at};

const META_FILE: &str = "meta";
const META_TEMP_FILE: &str = "meta.tmp";
const LOCK_FILE: &str = "lock";
const META_MAGIC: [u8; 8] = *b"DURALOG\0";
const META_VERSION: u8 = 1;
const META_MAGIC_OFFSET: usize = 0;
const META_VERSION_OFFSET: usize = META_MAGIC_OFFSET + 8;
const META_PARTITIONS_OFFSET: usize = META_VERSION_OFFSET + 4;
const META_CRC_OFFSET: usize = META_PARTITIONS_OFFSET + 4;
const META_BYTES: usize = META_CRC_OFFSET + 4;
const _: () = assert!(META_BYTES == 20);

/// Unkeyed records stick to one partition for this many bytes, so they
/// form larger batches (Kafka's `batch.size`).
const STICKY_SWITCH_BYTES: u64 = 16 * 1024;

/// A durable, partitioned append-only log stored in one directory.
///
/// ```
/// use durable_log::{Config, Log, Record};
///
/// # fn main() -> durable_log::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let log = Log::open(dir.path(), Config::default().partitions(2))?;
/// let appended = log.append(Record::new("hello").with_key("user-7"))?;
/// let partition = log.partition(appended.partition)?;
/// let first = partition.reader(appended.base_offset).next().unwrap()?;
/// assert_eq!(first.value.as_deref(), Some(&b"hello"[..]));
/// log.close()?;
/// # Ok(()) }
/// ```
///
/// Dropping a `Log` closes it as [`Log::close`] does, ignoring errors.
#[derive(Debug)]
pub struct Log {
    inner: Arc<Inner>,
    stop: Option<mpsc::Sender<()>>,
    background: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    config: Arc<Config>,
    partitions: Vec<Partition>,
    reports: Vec<RecoveryReport>,
    sticky: StickyPartitioner,
    storage: Arc<dyn Storage>,
    producer_ids: Mutex<ProducerIds>,
    _lock: Box<dyn LockGuard>,
}

impl Log {
    /// Opens the log in `dir`, creating it if the directory is missing or
    /// empty, and recovering it if it was not closed cleanly.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] naming the first invalid field;
    /// [`Error::Locked`] if another `Log` has the directory open;
    /// [`Error::NotALog`] for a directory that holds something else or a
    /// newer format; [`Error::Corrupt`] for damage in synced data;
    /// [`Error::Io`].
    pub fn open(dir: impl AsRef<Path>, config: Config) -> Result<Log> {
        Log::open_with_storage(dir.as_ref(), config, Arc::new(FsStorage))
    }

    pub(crate) fn open_with_storage(
        dir: &Path,
        config: Config,
        storage: Arc<dyn Storage>,
    ) -> Result<Log> {
        config.validate()?;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |e| Error::io(path, e)
        };
        if !storage.exists(dir).map_err(io(dir))? {
            // Every directory created on the way must have its entry synced
            // into its parent, from the deepest existing ancestor down.
            let mut created = vec![dir];
            let mut ancestor = dir.parent();
            while let Some(parent) = ancestor.filter(|p| !p.as_os_str().is_empty()) {
                if storage.exists(parent).map_err(io(parent))? {
                    break;
                }
                created.push(parent);
                ancestor = parent.parent();
            }
            storage.create_dir_all(dir).map_err(io(dir))?;
            for path in created.iter().rev() {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    storage.sync_dir(parent).map_err(io(parent))?;
                }
            }
        } else if !storage.is_dir(dir).map_err(io(dir))? {
            return Err(Error::NotALog {
                path: dir.to_path_buf(),
                reason: "not a directory".into(),
            });
        }
        // A directory that holds something else is refused before anything
        // (even the lock file) is created in it; checked again under the lock.
        let meta_path = dir.join(META_FILE);
        if !storage.exists(&meta_path).map_err(io(&meta_path))? {
            refuse_foreign(&*storage, dir)?;
        }
        let lock_path = dir.join(LOCK_FILE);
        let lock = take_lock(&*storage, &lock_path)?;
        let partitions = if storage.exists(&meta_path).map_err(io(&meta_path))? {
            let stored = read_meta(&*storage, &meta_path)?;
            if config.partitions < stored {
                return Err(Error::config(
                    "partitions",
                    format!("the log has {stored} partitions; their number cannot be reduced"),
                ));
            }
            if config.partitions > stored {
                write_meta(&*storage, dir, config.partitions)?;
            }
            config.partitions
        } else {
            refuse_foreign(&*storage, dir)?;
            write_meta(&*storage, dir, config.partitions)?;
            config.partitions
        };
        let config = Arc::new(config);
        let mut handles = Vec::with_capacity(partitions as usize);
        let mut reports = Vec::with_capacity(partitions as usize);
        let mut created = false;
        for id in 0..partitions {
            let partition_dir = dir.join(id.to_string());
            if !storage.exists(&partition_dir).map_err(io(&partition_dir))? {
                storage
                    .create_dir_all(&partition_dir)
                    .map_err(io(&partition_dir))?;
                created = true;
            } else if !storage.is_dir(&partition_dir).map_err(io(&partition_dir))? {
                return Err(Error::NotALog {
                    path: partition_dir,
                    reason: "a partition is not a directory".into(),
                });
            }
            let (partition, report) =
                Partition::open(id, &partition_dir, storage.clone(), config.clone())?;
            handles.push(partition);
            reports.push(report);
        }
        if created {
            storage.sync_dir(dir).map_err(io(dir))?;
        }
        let seed = now_ms() as u64 ^ u64::from(std::process::id());
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            sticky: StickyPartitioner::new(partitions, STICKY_SWITCH_BYTES, seed),
            config,
            partitions: handles,
            reports,
            producer_ids: Mutex::new(ProducerIds::load(&*storage, dir)?),
            storage,
            _lock: lock,
        });
        let (stop, stopped) = mpsc::channel();
        let background = spawn_background(inner.clone(), stopped)?;
        Ok(Log {
            inner,
            stop: Some(stop),
            background: Some(background),
        })
    }

    /// A producer id no producer of this log has had, even across restarts.
    pub(crate) fn allocate_producer_id(&self) -> Result<i64> {
        self.inner
            .producer_ids
            .lock()
            .allocate(&*self.inner.storage, &self.inner.dir)
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The configuration the log was opened with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Number of partitions.
    pub fn partition_count(&self) -> u32 {
        self.inner.partitions.len() as u32
    }

    /// A handle to partition `id`.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownPartition`] when `id` is not below
    /// [`Log::partition_count`].
    pub fn partition(&self, id: u32) -> Result<Partition> {
        self.inner
            .partitions
            .get(id as usize)
            .cloned()
            .ok_or(Error::UnknownPartition {
                partition: id,
                partitions: self.partition_count(),
            })
    }

    /// What opening each partition found: whether the shutdown was clean,
    /// what was scanned, what was cut from a torn tail.
    pub fn recovery_reports(&self) -> &[RecoveryReport] {
        &self.inner.reports
    }

    /// The partition a record with this key goes to: Kafka's default
    /// partitioner (murmur2 of the key), so a key lands on the partition
    /// number Kafka would choose.
    pub fn partition_for_key(&self, key: &[u8]) -> u32 {
        partition_for_key(key, self.partition_count())
    }

    /// Appends one record, routed by its key (see
    /// [`Log::partition_for_key`]); records without a key stick to one
    /// partition for a while, then move on, so they batch well.
    ///
    /// Durability and errors are those of [`Partition::append`].
    pub fn append(&self, record: Record) -> Result<Appended> {
        let partition = match &record.key {
            Some(key) => self.partition_for_key(key),
            None => {
                let bytes = record.value.as_ref().map_or(0, |v| v.len() as u64);
                self.inner.sticky.partition(bytes)
            }
        };
        self.inner.partitions[partition as usize].append(std::slice::from_ref(&record))
    }

    /// Deletes segments past the retention limits in every partition;
    /// returns how many were deleted. Also runs on its own every
    /// `retention_check_interval`.
    ///
    /// # Errors
    ///
    /// The first error of any partition (the others are still processed).
    pub fn enforce_retention(&self) -> Result<usize> {
        enforce_retention(&self.inner)
    }

    /// Compacts every partition now (see [`Partition::compact`]) and returns
    /// what was done, added up. Also runs on its own every
    /// `retention_check_interval` when the log's cleanup is
    /// [`Cleanup::Compact`].
    ///
    /// # Errors
    ///
    /// The first error of any partition (the others are still compacted);
    /// [`Error::InvalidConfig`] naming `cleanup` when the log is not
    /// compacted.
    pub fn compact(&self) -> Result<CompactionReport> {
        compact(&self.inner)
    }

    /// Publishes every partition's counters to the `metrics` facade now.
    /// The background thread also does this every few seconds; the append and
    /// read paths never call the facade, so they cost only relaxed atomic
    /// increments.
    #[cfg(feature = "metrics")]
    pub fn publish_metrics(&self) {
        crate::metrics::publish(&self.inner.partitions);
    }

    /// Fsyncs every partition.
    ///
    /// # Errors
    ///
    /// The first partition's error; see [`Partition::sync`].
    pub fn sync(&self) -> Result<()> {
        let mut first = None;
        for partition in &self.inner.partitions {
            if let Err(e) = partition.sync() {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Syncs everything and marks the shutdown clean, so the next open reads
    /// no segment data. Partition handles still held answer
    /// [`Error::Closed`] afterwards.
    ///
    /// # Errors
    ///
    /// The first partition's error; the others are still closed.
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        drop(self.stop.take());
        if let Some(background) = self.background.take() {
            let _ = background.join();
        }
        let mut first = None;
        for partition in &self.inner.partitions {
            if let Err(e) = partition.close() {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

fn enforce_retention(inner: &Inner) -> Result<usize> {
    let now = now_ms();
    let mut deleted = 0;
    let mut first = None;
    for partition in &inner.partitions {
        match partition.enforce_retention_at(now) {
            Ok(n) => deleted += n,
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    first.map_or(Ok(deleted), Err)
}

fn compact(inner: &Inner) -> Result<CompactionReport> {
    let mut total = CompactionReport::default();
    let mut first = None;
    for partition in &inner.partitions {
        match partition.compact() {
            Ok(report) => total += report,
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    first.map_or(Ok(total), Err)
}

/// How often the background thread publishes counters to the `metrics`
/// facade (with the `metrics` feature).
const METRICS_EVERY: Duration = Duration::from_secs(5);

/// The thread that runs interval syncs, retention, compaction and metrics
/// until the log closes.
fn spawn_background(inner: Arc<Inner>, stopped: mpsc::Receiver<()>) -> Result<JoinHandle<()>> {
    let sync_every = match inner.config.durability {
        Durability::Interval(every) => Some(every),
        Durability::Sync | Durability::None => None,
    };
    let retention_every = inner.config.retention_check_interval;
    let dir = inner.dir.clone();
    std::thread::Builder::new()
        .name("durable-log".into())
        .spawn(move || {
            let mut next_sync = sync_every.map(|every| Instant::now() + every);
            let mut next_retention = Instant::now() + retention_every;
            let mut next_metrics = Instant::now() + METRICS_EVERY;
            loop {
                let wake = next_sync.map_or(next_retention, |s| s.min(next_retention));
                let wake = if cfg!(feature = "metrics") {
                    wake.min(next_metrics)
                } else {
                    wake
                };
                let wait = wake.saturating_duration_since(Instant::now());
                match stopped.recv_timeout(wait.max(Duration::from_millis(1))) {
                    Err(RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                }
                let now = Instant::now();
                if let (Some(due), Some(every)) = (next_sync, sync_every)
                    && now >= due
                {
                    // A failure poisons the partition, and appends report it.
                    for partition in &inner.partitions {
                        let _ = partition.sync();
                    }
                    next_sync = Some(now + every);
                }
                if now >= next_retention {
                    let _ = enforce_retention(&inner);
                    if inner.config.cleanup == Cleanup::Compact {
                        // A failure after a swap's commit poisons the
                        // partition, and appends report it.
                        let _ = compact(&inner);
                    }
                    next_retention = Instant::now() + retention_every;
                }
                if now >= next_metrics {
                    #[cfg(feature = "metrics")]
                    crate::metrics::publish(&inner.partitions);
                    next_metrics = now + METRICS_EVERY;
                }
            }
        })
        .map_err(|e| Error::io(dir, e))
}

/// How long `Log::open` keeps trying a lock held elsewhere.
const LOCK_PATIENCE: Duration = Duration::from_millis(100);

/// Takes the directory lock, or fails with [`Error::Locked`]. A lock found
/// held is tried again for a moment: between `fork` and `exec`, a child
/// process briefly shares its parent's descriptors, and with them a lock
/// that the parent is about to release or has released.
pub(crate) fn take_lock(storage: &dyn Storage, path: &Path) -> Result<Box<dyn LockGuard>> {
    let give_up = Instant::now() + LOCK_PATIENCE;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(lock) = storage.try_lock(path).map_err(|e| Error::io(path, e))? {
            return Ok(lock);
        }
        if Instant::now() >= give_up {
            return Err(Error::Locked);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Refuses a directory without metadata that holds anything but what a log
/// being created leaves behind.
fn refuse_foreign(storage: &dyn Storage, dir: &Path) -> Result<()> {
    let foreign: Vec<String> = storage
        .list_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .into_iter()
        .filter(|name| {
            name != LOCK_FILE && name != META_TEMP_FILE && !name.starts_with("producer-ids")
        })
        .collect();
    if foreign.is_empty() {
        return Ok(());
    }
    Err(Error::NotALog {
        path: dir.to_path_buf(),
        reason: format!(
            "no `{META_FILE}` file, and the directory holds {}",
            foreign.join(", ")
        ),
    })
}

pub(crate) fn read_meta(storage: &dyn Storage, path: &Path) -> Result<u32> {
    let file = storage.open(path, false).map_err(|e| Error::io(path, e))?;
    let len = file.len().map_err(|e| Error::io(path, e))?;
    let not_a_log = |reason: String| Error::NotALog {
        path: path.to_path_buf(),
        reason,
    };
    // Magic, then version, before anything whose layout a newer version
    // may change: a newer log is refused as such, not as damaged.
    let mut buf = [0u8; META_BYTES];
    let head = usize::try_from(len).map_or(META_BYTES, |len| len.min(META_BYTES));
    read_exact_at(&*file, &mut buf[..head], 0).map_err(|e| Error::io(path, e))?;
    if head < META_VERSION_OFFSET + 1 || buf[META_MAGIC_OFFSET..META_MAGIC_OFFSET + 8] != META_MAGIC
    {
        return Err(not_a_log("metadata has the wrong magic".into()));
    }
    let version = buf[META_VERSION_OFFSET];
    if version != META_VERSION {
        return Err(not_a_log(format!(
            "format version {version}; this build reads version {META_VERSION}"
        )));
    }
    if len != META_BYTES as u64 {
        return Err(not_a_log(format!(
            "metadata is {len} bytes, not {META_BYTES}"
        )));
    }
    let stored = u32::from_le_bytes(
        buf[META_CRC_OFFSET..META_CRC_OFFSET + 4]
            .try_into()
            .expect("4 bytes"),
    );
    let computed = crc32fast::hash(&buf[..META_CRC_OFFSET]);
    if stored != computed {
        return Err(Error::corrupt(
            path,
            META_CRC_OFFSET as u64,
            CorruptKind::Checksum { stored, computed },
        ));
    }
    if buf[META_VERSION_OFFSET + 1..META_PARTITIONS_OFFSET] != [0; 3] {
        return Err(Error::corrupt(
            path,
            META_VERSION_OFFSET as u64 + 1,
            CorruptKind::Metadata("reserved bytes are not zero"),
        ));
    }
    let partitions = u32::from_le_bytes(
        buf[META_PARTITIONS_OFFSET..META_PARTITIONS_OFFSET + 4]
            .try_into()
            .expect("4 bytes"),
    );
    if partitions == 0 {
        return Err(Error::corrupt(
            path,
            META_PARTITIONS_OFFSET as u64,
            CorruptKind::Metadata("zero partitions"),
        ));
    }
    Ok(partitions)
}

/// Writes the metadata atomically: a temporary file, synced, renamed over.
fn write_meta(storage: &dyn Storage, dir: &Path, partitions: u32) -> Result<()> {
    let mut buf = [0u8; META_BYTES];
    buf[META_MAGIC_OFFSET..META_MAGIC_OFFSET + 8].copy_from_slice(&META_MAGIC);
    buf[META_VERSION_OFFSET] = META_VERSION;
    buf[META_PARTITIONS_OFFSET..META_PARTITIONS_OFFSET + 4]
        .copy_from_slice(&partitions.to_le_bytes());
    let crc = crc32fast::hash(&buf[..META_CRC_OFFSET]);
    buf[META_CRC_OFFSET..META_CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
    let temp = dir.join(META_TEMP_FILE);
    let file = storage.open(&temp, true).map_err(|e| Error::io(&temp, e))?;
    file.set_len(0).map_err(|e| Error::io(&temp, e))?;
    file.write_at(&buf, 0).map_err(|e| Error::io(&temp, e))?;
    file.sync_data().map_err(|e| Error::io(&temp, e))?;
    let path = dir.join(META_FILE);
    storage
        .rename(&temp, &path)
        .map_err(|e| Error::io(&path, e))?;
    storage.sync_dir(dir).map_err(|e| Error::io(dir, e))
}
