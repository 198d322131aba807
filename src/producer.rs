//! A batching, optionally idempotent producer.
//!
//! `send` adds a record to its partition's open batch and returns at once;
//! a background thread appends a batch when it reaches `batch_bytes` or has
//! waited `linger`, then resolves the batch's [`SendHandle`]s once the batch
//! is as durable as the log's [`Durability`](crate::Durability) asks. With
//! idempotence each batch carries the producer's id, epoch and sequence
//! numbers, and a partition answers a batch it already has with its original
//! offsets instead of appending it twice.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::config::{Cleanup, Compression, Durability};
use crate::error::{CorruptKind, Error, Result};
use crate::log::Log;
use crate::partition::{Partition, now_ms};
use crate::partitioner::{StickyPartitioner, partition_for_key};
use crate::record::batch::{EncodedBatch, ProducerStamp};
use crate::record::{Appended, Record};
use crate::storage::{Storage, read_exact_at};

/// What `send` does when the producer's buffer is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Wait up to this long for room, then fail with [`Error::BufferFull`].
    Block(Duration),
    /// Fail at once with [`Error::BufferFull`].
    Error,
}

/// Settings of a [`Producer`]; build with [`ProducerConfig::default`] and the
/// chainable setters of the same names.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProducerConfig {
    /// A partition's batch is sent once its records take this many bytes.
    ///
    /// Default: 16 KiB.
    pub batch_bytes: usize,
    /// A batch that has not filled up is sent after waiting this long.
    ///
    /// Default: 5 ms.
    pub linger: Duration,
    /// Codec for this producer's batches; `None` uses the log's.
    ///
    /// Default: `None`.
    pub compression: Option<Compression>,
    /// Stamp batches with a producer id, epoch and sequence numbers so that
    /// a partition never appends one twice.
    ///
    /// Default: `true`.
    pub idempotent: bool,
    /// Most bytes of records waiting to be appended.
    ///
    /// Default: 32 MiB.
    pub buffer_bytes: usize,
    /// What `send` does when the buffer is full.
    ///
    /// Default: `WhenFull::Block(60 s)`.
    pub when_full: WhenFull,
    /// The producer id and epoch to use instead of a fresh id: a producer
    /// that restarts with its old id and a higher epoch fences the old
    /// instance (its batches get [`Error::ProducerFenced`]).
    ///
    /// Default: `None` (a fresh id, epoch 0).
    pub identity: Option<(i64, i16)>,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            batch_bytes: 16 * 1024,
            linger: Duration::from_millis(5),
            compression: None,
            idempotent: true,
            buffer_bytes: 32 << 20,
            when_full: WhenFull::Block(Duration::from_secs(60)),
            identity: None,
        }
    }
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty;)*) => {
        impl ProducerConfig {
            $(
                $(#[$doc])*
                #[must_use]
                pub fn $name(mut self, value: $ty) -> Self {
                    self.$name = value.into();
                    self
                }
            )*
        }
    };
}

setters! {
    /// Sets [`ProducerConfig::batch_bytes`].
    batch_bytes: usize;
    /// Sets [`ProducerConfig::linger`].
    linger: Duration;
    /// Sets [`ProducerConfig::compression`].
    compression: Compression;
    /// Sets [`ProducerConfig::idempotent`].
    idempotent: bool;
    /// Sets [`ProducerConfig::buffer_bytes`].
    buffer_bytes: usize;
    /// Sets [`ProducerConfig::when_full`].
    when_full: WhenFull;
    /// Sets [`ProducerConfig::identity`].
    identity: (i64, i16);
}

impl ProducerConfig {
    fn validate(&self) -> Result<()> {
        if self.batch_bytes == 0 {
            return Err(Error::config("batch_bytes", "must be positive"));
        }
        if self.buffer_bytes < self.batch_bytes {
            return Err(Error::config(
                "buffer_bytes",
                "must be at least batch_bytes",
            ));
        }
        if let Some((id, epoch)) = self.identity
            && (id < 0 || epoch < 0)
        {
            return Err(Error::config(
                "identity",
                "the id and epoch must not be negative",
            ));
        }
        Ok(())
    }
}

/// Resolves to where a sent record landed, once its batch is appended and as
/// durable as the log's durability setting asks.
#[derive(Debug)]
pub struct SendHandle {
    slot: Arc<Slot>,
    index: u64,
}

impl SendHandle {
    /// Blocks until the record's batch is appended (and durable per the
    /// log's setting); returns the record's partition and offset
    /// (`base_offset == last_offset`).
    ///
    /// # Errors
    ///
    /// The error that failed the record's batch.
    pub fn wait(self) -> Result<Appended> {
        let mut result = self.slot.result.lock();
        while result.is_none() {
            self.slot.done.wait(&mut result);
        }
        match result.as_ref().expect("set above") {
            Ok(batch) => {
                let offset = batch.base_offset + self.index;
                Ok(Appended {
                    base_offset: offset,
                    last_offset: offset,
                    ..*batch
                })
            }
            Err(e) => Err(e.clone()),
        }
    }

    /// True once [`SendHandle::wait`] would return without blocking.
    pub fn is_done(&self) -> bool {
        self.slot.result.lock().is_some()
    }
}

#[derive(Debug, Default)]
struct Slot {
    result: Mutex<Option<Result<Appended>>>,
    done: Condvar,
}

impl Slot {
    fn complete(&self, result: Result<Appended>) {
        *self.result.lock() = Some(result);
        self.done.notify_all();
    }
}

/// A batch being filled or waiting to be appended.
#[derive(Debug)]
struct Open {
    partition: u32,
    records: Vec<Record>,
    bytes: usize,
    slot: Arc<Slot>,
    opened: Instant,
}

#[derive(Debug, Default)]
struct State {
    open: HashMap<u32, Open>,
    ready: VecDeque<Open>,
    /// Bytes of records sent but not yet appended.
    buffered: usize,
    /// Batches handed to the sender and not yet resolved.
    in_flight: usize,
    closed: bool,
}

#[derive(Debug)]
struct Shared {
    partitions: Vec<Partition>,
    config: ProducerConfig,
    compression: Compression,
    sync: bool,
    /// The log is compacted: records need keys.
    compacted: bool,
    stamp: Option<(i64, i16)>,
    sticky: StickyPartitioner,
    state: Mutex<State>,
    /// Wakes the sender (new or full batches, flush, close).
    wake: Condvar,
    /// Wakes senders blocked on a full buffer and flushers.
    room: Condvar,
}

/// Accumulates records into batches per partition and appends them from a
/// background thread. Dropping it flushes and stops the thread.
///
/// ```
/// use durable_log::{Config, Log, Producer, ProducerConfig, Record};
///
/// # fn main() -> durable_log::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let log = Log::open(dir.path(), Config::default().partitions(3))?;
/// let producer = Producer::new(&log, ProducerConfig::default())?;
/// let handles: Vec<_> = (0..100)
///     .map(|i| producer.send(Record::new(format!("event {i}")).with_key("user-7")))
///     .collect::<Result<_, _>>()?;
/// producer.flush()?;
/// let last = handles.into_iter().last().unwrap().wait()?;
/// assert_eq!(last.base_offset, 99); // one key, one partition, in order
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Producer {
    shared: Arc<Shared>,
    sender: Option<JoinHandle<()>>,
}

impl Producer {
    /// Starts a producer on `log`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] naming an invalid field; an error allocating
    /// a producer id.
    pub fn new(log: &Log, config: ProducerConfig) -> Result<Producer> {
        config.validate()?;
        let stamp = match (config.idempotent, config.identity) {
            (false, _) => None,
            (true, Some(identity)) => Some(identity),
            (true, None) => Some((log.allocate_producer_id()?, 0)),
        };
        let compression = config.compression.unwrap_or(log.config().compression);
        if compression != Compression::None
            && log.config().max_batch_bytes as usize > crate::codec::MAX_DECOMPRESSED_BYTES
        {
            return Err(Error::config(
                "compression",
                format!(
                    "the log's max_batch_bytes is over the {} bytes a compressed batch may hold",
                    crate::codec::MAX_DECOMPRESSED_BYTES
                ),
            ));
        }
        let partitions = (0..log.partition_count())
            .map(|id| log.partition(id))
            .collect::<Result<Vec<_>>>()?;
        let shared = Arc::new(Shared {
            sticky: StickyPartitioner::new(
                log.partition_count(),
                config.batch_bytes as u64,
                now_ms() as u64,
            ),
            compression,
            sync: log.config().durability == Durability::Sync,
            compacted: log.config().cleanup == Cleanup::Compact,
            partitions,
            stamp,
            config,
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            room: Condvar::new(),
        });
        let sender_shared = shared.clone();
        let sender = std::thread::Builder::new()
            .name("durable-log-producer".into())
            .spawn(move || run_sender(&sender_shared))
            .map_err(|e| Error::io(log.dir(), e))?;
        Ok(Producer {
            shared,
            sender: Some(sender),
        })
    }

    /// The producer's id and epoch, if it is idempotent.
    pub fn identity(&self) -> Option<(i64, i16)> {
        self.shared.stamp
    }

    /// Adds a record to its partition's batch: by key with Kafka's
    /// partitioner, without a key to a sticky partition. Returns at once
    /// unless the buffer is full.
    ///
    /// # Errors
    ///
    /// [`Error::BufferFull`] per [`ProducerConfig::when_full`];
    /// [`Error::Closed`] after [`Producer::close`]; [`Error::MissingKey`]
    /// for a record without a key on a compacted log.
    pub fn send(&self, record: Record) -> Result<SendHandle> {
        let shared = &*self.shared;
        let count = shared.partitions.len() as u32;
        let bytes = record_bytes(&record);
        let partition = match &record.key {
            Some(key) => partition_for_key(key, count),
            None => shared.sticky.partition(bytes as u64),
        };
        if record.key.is_none() && shared.compacted {
            // Refused alone, rather than failing the batch it would join.
            return Err(Error::MissingKey { partition });
        }
        let mut state = shared.state.lock();
        // A timeout too long to add to now means no deadline.
        let (block, deadline) = match shared.config.when_full {
            WhenFull::Block(timeout) => (true, Instant::now().checked_add(timeout)),
            WhenFull::Error => (false, None),
        };
        // A record larger than the whole buffer waits for an empty one.
        while state.buffered > 0 && state.buffered + bytes > shared.config.buffer_bytes {
            if state.closed {
                return Err(Error::Closed);
            }
            let full = Error::BufferFull {
                limit: shared.config.buffer_bytes as u64,
            };
            match (block, deadline) {
                (false, _) => return Err(full),
                (true, Some(deadline)) => {
                    if shared.room.wait_until(&mut state, deadline).timed_out() {
                        return Err(full);
                    }
                }
                (true, None) => shared.room.wait(&mut state),
            }
        }
        if state.closed {
            return Err(Error::Closed);
        }
        state.buffered += bytes;
        let now = Instant::now();
        let batch = state.open.entry(partition).or_insert_with(|| Open {
            partition,
            records: Vec::new(),
            bytes: 0,
            slot: Arc::default(),
            opened: now,
        });
        let index = batch.records.len() as u64;
        let slot = batch.slot.clone();
        batch.records.push(record);
        batch.bytes += bytes;
        if batch.bytes >= shared.config.batch_bytes {
            let full = state.open.remove(&partition).expect("just used");
            state.ready.push_back(full);
            shared.wake.notify_one();
        } else if index == 0 {
            // A new batch: the sender must learn its linger deadline.
            shared.wake.notify_one();
        }
        Ok(SendHandle { slot, index })
    }

    /// Sends every open batch now and waits until all records sent so far
    /// are appended (and durable per the log's setting).
    ///
    /// # Errors
    ///
    /// None of its own: each record's outcome is in its [`SendHandle`].
    pub fn flush(&self) -> Result<()> {
        let shared = &*self.shared;
        let mut state = shared.state.lock();
        let open: Vec<Open> = state.open.drain().map(|(_, b)| b).collect();
        state.ready.extend(open);
        shared.wake.notify_one();
        while !state.ready.is_empty() || state.in_flight > 0 {
            shared.room.wait(&mut state);
        }
        Ok(())
    }

    /// Flushes and stops the producer; later sends fail with
    /// [`Error::Closed`].
    ///
    /// # Errors
    ///
    /// As [`Producer::flush`].
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        let flushed = self.flush();
        self.shared.state.lock().closed = true;
        self.shared.wake.notify_all();
        self.shared.room.notify_all();
        if let Some(sender) = self.sender.take() {
            let _ = sender.join();
        }
        flushed
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// Bytes a record takes in the buffer: its payload plus a small overhead.
fn record_bytes(record: &Record) -> usize {
    let field = |b: &Option<bytes::Bytes>| b.as_ref().map_or(0, bytes::Bytes::len);
    16 + field(&record.key)
        + field(&record.value)
        + record
            .headers
            .iter()
            .map(|h| h.key.len() + field(&h.value) + 4)
            .sum::<usize>()
}

/// The sender: appends ready batches (and lingering ones when their time is
/// up), then makes them durable together and resolves their handles.
fn run_sender(shared: &Shared) {
    let mut sequences: HashMap<u32, i32> = HashMap::new();
    loop {
        let batches = {
            let mut state = shared.state.lock();
            loop {
                let now = Instant::now();
                let due: Vec<u32> = state
                    .open
                    .values()
                    .filter(|b| now >= b.opened + shared.config.linger)
                    .map(|b| b.partition)
                    .collect();
                for partition in due {
                    let batch = state.open.remove(&partition).expect("listed above");
                    state.ready.push_back(batch);
                }
                if !state.ready.is_empty() {
                    break;
                }
                if state.closed && state.open.is_empty() {
                    return;
                }
                match state
                    .open
                    .values()
                    .map(|b| b.opened + shared.config.linger)
                    .min()
                {
                    Some(deadline) => {
                        shared.wake.wait_until(&mut state, deadline);
                    }
                    None => shared.wake.wait(&mut state),
                }
            }
            let batches: Vec<Open> = state.ready.drain(..).collect();
            state.in_flight += batches.len();
            batches
        };
        let count = batches.len();
        let freed: usize = batches.iter().map(|b| b.bytes).sum();
        append_all(shared, batches, &mut sequences);
        let mut state = shared.state.lock();
        state.in_flight -= count;
        state.buffered -= freed;
        shared.room.notify_all();
    }
}

/// Appends batches in order, then syncs each partition they touched once.
fn append_all(shared: &Shared, batches: Vec<Open>, sequences: &mut HashMap<u32, i32>) {
    let mut written: Vec<(Open, Appended)> = Vec::with_capacity(batches.len());
    for batch in batches {
        match append_one(shared, &batch, sequences) {
            Ok(appended) => written.push((batch, appended)),
            Err(e) => batch.slot.complete(Err(e)),
        }
    }
    if shared.sync {
        let mut synced: HashMap<u32, Result<()>> = HashMap::new();
        for (batch, appended) in written {
            let partition = &shared.partitions[batch.partition as usize];
            let result = synced
                .entry(batch.partition)
                .or_insert_with(|| partition.sync())
                .clone()
                .map(|()| appended);
            batch.slot.complete(result);
        }
    } else {
        for (batch, appended) in written {
            batch.slot.complete(Ok(appended));
        }
    }
}

fn append_one(
    shared: &Shared,
    batch: &Open,
    sequences: &mut HashMap<u32, i32>,
) -> Result<Appended> {
    let partition = &shared.partitions[batch.partition as usize];
    let max = partition.max_batch_bytes();
    let mut encoded = EncodedBatch::encode(&batch.records, now_ms(), max).map_err(|size| {
        Error::RecordTooLarge {
            size,
            max: u64::from(max),
        }
    })?;
    let sequence = sequences.get(&batch.partition).copied().unwrap_or(0);
    if let Some((producer_id, producer_epoch)) = shared.stamp {
        encoded.set_producer(ProducerStamp {
            producer_id,
            producer_epoch,
            base_sequence: sequence,
        });
    }
    let uncompressed = encoded.len() as u64;
    encoded.compress(shared.compression);
    let appended = partition.write_encoded(encoded, uncompressed)?;
    // The sequence moves on only once the batch is in: a batch that failed
    // is not in the partition's producer state.
    let count = u32::try_from(batch.records.len()).unwrap_or(u32::MAX);
    let last = crate::producer_state::last_sequence(sequence, count);
    sequences.insert(batch.partition, if last == i32::MAX { 0 } else { last + 1 });
    Ok(appended)
}

/// Producer ids are handed out in blocks; the end of the current block is
/// persisted before any id of it is used, so an id is never handed out twice,
/// even across crashes.
#[derive(Debug)]
pub(crate) struct ProducerIds {
    path: PathBuf,
    next: i64,
    block_end: i64,
}

const IDS_FILE: &str = "producer-ids";
const IDS_TEMP_FILE: &str = "producer-ids.tmp";
const IDS_MAGIC: [u8; 4] = *b"DLPI";
const IDS_BYTES: usize = 16;
const IDS_BLOCK: i64 = 1024;

impl ProducerIds {
    pub(crate) fn load(storage: &dyn Storage, dir: &Path) -> Result<ProducerIds> {
        let path = dir.join(IDS_FILE);
        let mut next = 0;
        if storage.exists(&path).map_err(|e| Error::io(&path, e))? {
            let file = storage
                .open(&path, false)
                .map_err(|e| Error::io(&path, e))?;
            let mut buf = [0u8; IDS_BYTES];
            let bad = |kind| Error::corrupt(&path, 0, kind);
            if file.len().map_err(|e| Error::io(&path, e))? != IDS_BYTES as u64 {
                return Err(bad(CorruptKind::Metadata(
                    "producer-ids has the wrong size",
                )));
            }
            read_exact_at(&*file, &mut buf, 0).map_err(|e| Error::io(&path, e))?;
            let stored = u32::from_le_bytes(buf[..4].try_into().expect("4 bytes"));
            let computed = crc32fast::hash(&buf[4..]);
            if stored != computed || buf[4..8] != IDS_MAGIC {
                return Err(bad(CorruptKind::Checksum { stored, computed }));
            }
            next = i64::from_le_bytes(buf[8..16].try_into().expect("8 bytes"));
            if next < 0 {
                return Err(bad(CorruptKind::Metadata("negative producer id")));
            }
        }
        Ok(ProducerIds {
            path,
            next,
            block_end: next,
        })
    }

    pub(crate) fn allocate(&mut self, storage: &dyn Storage, dir: &Path) -> Result<i64> {
        if self.next >= self.block_end {
            let block_end = self.next + IDS_BLOCK;
            let mut buf = [0u8; IDS_BYTES];
            buf[4..8].copy_from_slice(&IDS_MAGIC);
            buf[8..16].copy_from_slice(&block_end.to_le_bytes());
            let crc = crc32fast::hash(&buf[4..]);
            buf[..4].copy_from_slice(&crc.to_le_bytes());
            let temp = dir.join(IDS_TEMP_FILE);
            let file = storage.open(&temp, true).map_err(|e| Error::io(&temp, e))?;
            file.set_len(0).map_err(|e| Error::io(&temp, e))?;
            file.write_at(&buf, 0).map_err(|e| Error::io(&temp, e))?;
            file.sync_data().map_err(|e| Error::io(&temp, e))?;
            storage
                .rename(&temp, &self.path)
                .map_err(|e| Error::io(&self.path, e))?;
            storage.sync_dir(dir).map_err(|e| Error::io(dir, e))?;
            self.block_end = block_end;
        }
        let id = self.next;
        self.next += 1;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use crate::storage::sim::SimStorage;
    use crate::{Config, Log, Record};

    fn batch(i: i32) -> Vec<Record> {
        vec![Record::new(format!("payload {i} .................."))]
    }

    /// After a crash, retries of acknowledged batches are still recognised:
    /// the state comes from the last snapshot plus the batches after it.
    #[test]
    fn retries_after_a_crash_are_not_appended_twice() {
        for seed in 0..20u64 {
            let sim = SimStorage::new(seed);
            let dir = Path::new("/log");
            let config = Config::default().segment_bytes(600).max_index_bytes(1024);
            let log = Log::open_with_storage(dir, config.clone(), Arc::new(sim.clone())).unwrap();
            let p = log.partition(0).unwrap();
            let mut acked = Vec::new();
            for i in 0..30 {
                acked.push(p.append_idempotent(&batch(i), 5, 0, i).unwrap());
            }
            if seed % 2 == 0 {
                sim.crash();
            } else {
                sim.crash_clean_prefix();
            }
            drop(log);
            let log = Log::open_with_storage(dir, config, Arc::new(sim.clone())).unwrap();
            let p = log.partition(0).unwrap();
            assert!(!log.recovery_reports()[0].clean);
            assert_eq!(p.end_offset(), 30, "seed {seed}: Sync appends survive");
            for i in 25..30 {
                let again = p.append_idempotent(&batch(i), 5, 0, i).unwrap();
                assert_eq!(again, acked[i as usize], "seed {seed}");
            }
            assert_eq!(p.end_offset(), 30, "seed {seed}: no duplicate appended");
            assert_eq!(
                p.append_idempotent(&batch(30), 5, 0, 30)
                    .unwrap()
                    .base_offset,
                30
            );
        }
    }
}
