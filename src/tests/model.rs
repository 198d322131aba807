//! Model-based tests: random operations on a partition stored on the
//! simulated disk, checked after every step against a plain in-memory model
//! (a list of batches and a start offset). Clean reopens, crashes (power
//! loss and process crash) and injected I/O faults are operations like any
//! other.
//!
//! What is checked after every operation: `end_offset` and `start_offset`
//! match the model, and reading the whole partition gives exactly the
//! model's records (offsets, keys, values, headers, timestamps). After a
//! crash the partition must hold a prefix of the model, made of whole
//! batches, that reaches at least the durable offset observed just before
//! the crash (with `Durability::Sync`: every acknowledged record). The model
//! is then cut to what survived, and later appends continue from there, so
//! an offset reused for different data would show up as a mismatch.
//!
//! Sizes: `DURABLE_LOG_MODEL_CASES` (default 64) proptest cases,
//! `DURABLE_LOG_CRASH_SEEDS` (default 200) seeded crash schedules, which start
//! at `DURABLE_LOG_CRASH_SEED_START` (default 0) so that a failing seed can be
//! rerun alone.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;

use crate::partition::now_ms;
use crate::record::batch::EncodedBatch;
use crate::storage::Storage;
use crate::storage::sim::{Fault, SimStorage};
use crate::{Config, Durability, Error, Header, Log, Partition, Record, StoredRecord};

/// Returns `Err(message)` from the enclosing function when `cond` is false.
macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(format!($($arg)+));
        }
    };
}

fn env_count(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------
// The model

/// A batch as the model knows it: its records (offsets contiguous from the
/// base) and its encoded size.
#[derive(Debug, Clone)]
struct ModelBatch {
    records: Vec<StoredRecord>,
    bytes: usize,
}

impl ModelBatch {
    fn new(records: Vec<StoredRecord>) -> ModelBatch {
        let bytes = encoded_len(&records);
        ModelBatch { records, bytes }
    }

    fn base(&self) -> u64 {
        self.records[0].offset
    }

    fn last(&self) -> u64 {
        self.records[self.records.len() - 1].offset
    }
}

/// The encoded size of a batch holding these records: what the log wrote,
/// or what a truncation rewrote.
fn encoded_len(records: &[StoredRecord]) -> usize {
    let base = records[0].offset;
    let plain: Vec<Record> = records.iter().map(to_record).collect();
    EncodedBatch::encode_with_deltas(&plain, |i| records[i].offset - base, 0, u32::MAX)
        .expect("a stored batch re-encodes")
        .len()
}

fn to_record(r: &StoredRecord) -> Record {
    Record {
        key: r.key.clone(),
        value: r.value.clone(),
        timestamp: Some(r.timestamp),
        headers: r.headers.clone(),
    }
}

/// The partition as it should be.
#[derive(Debug, Clone, Default)]
struct Model {
    /// Batches in order (those wholly below `start` too: reads skip them).
    batches: Vec<ModelBatch>,
    start: u64,
    end: u64,
}

impl Model {
    fn records_from(&self, offset: u64) -> Vec<StoredRecord> {
        let from = offset.max(self.start);
        self.batches
            .iter()
            .flat_map(|b| b.records.iter())
            .filter(|r| r.offset >= from)
            .cloned()
            .collect()
    }

    /// `Partition::read`: whole batches from the one holding `offset`, at
    /// least one, together at most `max_bytes`.
    fn read(&self, offset: u64, max_bytes: usize) -> Vec<StoredRecord> {
        let mut out = Vec::new();
        let mut bytes = 0;
        let offset = offset.max(self.start);
        for batch in self.batches.iter().filter(|b| b.last() >= offset) {
            if !out.is_empty() && bytes + batch.bytes > max_bytes {
                break;
            }
            bytes += batch.bytes;
            out.extend(batch.records.iter().filter(|r| r.offset >= offset).cloned());
            if bytes >= max_bytes {
                break;
            }
        }
        out
    }

    fn push(&mut self, batch: ModelBatch) {
        assert_eq!(batch.base(), self.end);
        self.end = batch.last() + 1;
        self.batches.push(batch);
    }

    fn truncate_to(&mut self, offset: u64) {
        if offset >= self.end {
            return;
        }
        if offset <= self.start {
            self.batches.clear();
            self.start = offset;
            self.end = offset;
            return;
        }
        self.batches.retain(|b| b.base() < offset);
        if let Some(last) = self.batches.last_mut()
            && last.last() >= offset
        {
            last.records.retain(|r| r.offset < offset);
            *last = ModelBatch::new(std::mem::take(&mut last.records));
        }
        self.end = offset;
    }

    fn delete_records_before(&mut self, offset: u64) {
        self.start = self.start.max(offset);
    }

    /// After a crash: keep what is below `end`, which must be a batch
    /// boundary (batches are atomic) or below the start offset.
    fn cut(&mut self, end: u64) -> Result<(), String> {
        ensure!(
            end <= self.end,
            "after the crash the end offset {end} is beyond the model's {}",
            self.end
        );
        if end == self.end {
            return Ok(());
        }
        if end <= self.start {
            self.batches.clear();
            self.start = end;
            self.end = end;
            return Ok(());
        }
        ensure!(
            self.batches.iter().any(|b| b.base() == end),
            "after the crash the end offset {end} is inside a batch: a batch survived in part"
        );
        self.batches.retain(|b| b.base() < end);
        self.end = end;
        Ok(())
    }

    /// `Partition::offset_for_timestamp`.
    fn offset_for_timestamp(&self, timestamp: i64) -> Option<u64> {
        self.records_from(self.start)
            .iter()
            .find(|r| r.timestamp >= timestamp)
            .map(|r| r.offset)
    }
}

// ---------------------------------------------------------------------------
// Generated operations

/// How a generated record is timestamped.
#[derive(Debug, Clone, Copy)]
enum GenTimestamp {
    /// None: the log stamps it with the time of the append.
    Append,
    /// Milliseconds from the time the case started.
    Near(i64),
    /// Milliseconds since the epoch, long ago (older than `segment_max_age`,
    /// so the segment rolls).
    Ancient(i64),
}

#[derive(Debug, Clone)]
struct GenRecord {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    timestamp: GenTimestamp,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

impl GenRecord {
    fn to_record(&self, base_ms: i64) -> Record {
        Record {
            key: self.key.clone().map(Bytes::from),
            value: self.value.clone().map(Bytes::from),
            timestamp: match self.timestamp {
                GenTimestamp::Append => None,
                GenTimestamp::Near(delta) => Some(base_ms + delta),
                GenTimestamp::Ancient(ms) => Some(ms),
            },
            headers: self
                .headers
                .iter()
                .map(|(key, value)| Header {
                    key: key.clone(),
                    value: value.clone().map(Bytes::from),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<GenRecord>),
    Read { at: u16, max_bytes: u16 },
    Reader { at: u16 },
    TimeLookup { pick: u16, shift: i16 },
    Sync,
    TruncateTo { at: u16 },
    DeleteRecordsBefore { at: u16 },
    EnforceRetention,
    Reopen,
    Crash { power_loss: bool },
}

/// The configuration of one case.
#[derive(Debug, Clone)]
struct Setup {
    seed: u64,
    segment_bytes: u64,
    index_interval_bytes: u32,
    max_index_bytes: u32,
    max_batch_bytes: u32,
    retention_bytes: u64,
    durability: u8,
}

impl Setup {
    fn config(&self) -> Config {
        let durability = match self.durability % 3 {
            0 => Durability::Sync,
            1 => Durability::None,
            _ => Durability::Interval(Duration::from_millis(2)),
        };
        Config::default()
            .segment_bytes(self.segment_bytes)
            .index_interval_bytes(self.index_interval_bytes)
            .max_index_bytes(self.max_index_bytes)
            .max_batch_bytes(self.max_batch_bytes)
            .retention_bytes(Some(self.retention_bytes))
            .retention_age(None)
            .durability(durability)
    }
}

fn bytes_strategy(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

fn record_strategy() -> impl Strategy<Value = GenRecord> {
    let value = prop_oneof![
        8 => bytes_strategy(40).prop_map(Some),
        1 => Just(None),
        1 => bytes_strategy(500).prop_map(Some),
    ];
    let timestamp = prop_oneof![
        3 => Just(GenTimestamp::Append),
        6 => (-100_000i64..100_000).prop_map(GenTimestamp::Near),
        1 => (0i64..1_000_000).prop_map(GenTimestamp::Ancient),
    ];
    let header = ("[a-z]{0,4}", proptest::option::of(bytes_strategy(6)));
    (
        proptest::option::of(bytes_strategy(8)),
        value,
        timestamp,
        proptest::collection::vec(header, 0..3),
    )
        .prop_map(|(key, value, timestamp, headers)| GenRecord {
            key,
            value,
            timestamp,
            headers,
        })
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => proptest::collection::vec(record_strategy(), 1..6).prop_map(Op::Append),
        3 => (any::<u16>(), 0u16..3000).prop_map(|(at, max_bytes)| Op::Read { at, max_bytes }),
        2 => any::<u16>().prop_map(|at| Op::Reader { at }),
        1 => (any::<u16>(), any::<i16>()).prop_map(|(pick, shift)| Op::TimeLookup { pick, shift }),
        2 => Just(Op::Sync),
        2 => any::<u16>().prop_map(|at| Op::TruncateTo { at }),
        1 => any::<u16>().prop_map(|at| Op::DeleteRecordsBefore { at }),
        1 => Just(Op::EnforceRetention),
        1 => Just(Op::Reopen),
        2 => any::<bool>().prop_map(|power_loss| Op::Crash { power_loss }),
    ]
}

fn setup_strategy() -> impl Strategy<Value = Setup> {
    (
        any::<u64>(),
        300u64..2000,
        16u32..600,
        64u32..256,
        512u32..2048,
        300u64..3000,
        0u8..3,
    )
        .prop_map(
            |(
                seed,
                segment_bytes,
                index_interval_bytes,
                max_index_bytes,
                max_batch_bytes,
                retention_bytes,
                durability,
            )| Setup {
                seed,
                segment_bytes,
                index_interval_bytes,
                max_index_bytes,
                max_batch_bytes,
                retention_bytes,
                durability,
            },
        )
}

/// Picks an offset in `lo..=hi` from a generated number.
fn pick(at: u16, lo: u64, hi: u64) -> u64 {
    lo + u64::from(at) % (hi - lo + 1)
}

// ---------------------------------------------------------------------------
// The harness: a log on a simulated disk, and its model

/// The log's directory on the simulated disk; its parent is created too.
const DIR: &str = "/data/log";

struct Harness {
    sim: SimStorage,
    config: Config,
    log: Option<Log>,
    model: Model,
    /// "Now" when the case started; generated timestamps are near it.
    base_ms: i64,
}

fn open_log(sim: &SimStorage, config: &Config) -> crate::Result<Log> {
    Log::open_with_storage(Path::new(DIR), config.clone(), Arc::new(sim.clone()))
}

fn partition_dir() -> PathBuf {
    Path::new(DIR).join("0")
}

impl Harness {
    fn new(seed: u64, config: Config) -> Result<Harness, String> {
        let sim = SimStorage::new(seed);
        let log = open_log(&sim, &config).map_err(|e| format!("open: {e}"))?;
        Ok(Harness {
            sim,
            config,
            log: Some(log),
            model: Model::default(),
            base_ms: now_ms(),
        })
    }

    fn log(&self) -> &Log {
        self.log
            .as_ref()
            .expect("the log is open between operations")
    }

    fn partition(&self) -> Partition {
        self.log().partition(0).expect("partition 0 exists")
    }

    fn syncs_every_append(&self) -> bool {
        self.config.durability == Durability::Sync
    }

    /// Compares the partition with the model.
    fn check(&self) -> Result<(), String> {
        let p = self.partition();
        let model = &self.model;
        ensure!(
            p.end_offset() == model.end,
            "end offset {} but the model says {}",
            p.end_offset(),
            model.end
        );
        ensure!(
            p.start_offset() == model.start,
            "start offset {} but the model says {}",
            p.start_offset(),
            model.start
        );
        let durable = p.durable_offset();
        ensure!(
            durable <= model.end,
            "durable offset {durable} beyond the end {}",
            model.end
        );
        if self.syncs_every_append() {
            ensure!(
                durable == model.end,
                "with Durability::Sync the durable offset {durable} lags the end {}",
                model.end
            );
        }
        let got: Vec<StoredRecord> = p
            .reader(model.start)
            .collect::<crate::Result<_>>()
            .map_err(|e| format!("reading from {}: {e}", model.start))?;
        same_records(&got, &model.records_from(model.start), "full read")
    }

    fn apply(&mut self, op: &Op) -> Result<(), String> {
        match op {
            Op::Append(records) => self.append(records),
            Op::Read { at, max_bytes } => self.read(*at, usize::from(*max_bytes)),
            Op::Reader { at } => self.reader(*at),
            Op::TimeLookup { pick, shift } => self.time_lookup(*pick, *shift),
            Op::Sync => {
                let p = self.partition();
                p.sync().map_err(|e| format!("sync: {e}"))?;
                ensure!(
                    p.durable_offset() == self.model.end,
                    "after sync the durable offset {} is not the end {}",
                    p.durable_offset(),
                    self.model.end
                );
                Ok(())
            }
            Op::TruncateTo { at } => {
                let offset = pick(*at, 0, self.model.end + 1);
                self.partition()
                    .truncate_to(offset)
                    .map_err(|e| format!("truncate_to({offset}): {e}"))?;
                self.model.truncate_to(offset);
                Ok(())
            }
            Op::DeleteRecordsBefore { at } => self.delete_records_before(*at),
            Op::EnforceRetention => self.enforce_retention(),
            Op::Reopen => self.reopen(),
            Op::Crash { power_loss } => self.crash(*power_loss),
        }?;
        self.check()
    }

    fn append(&mut self, generated: &[GenRecord]) -> Result<(), String> {
        let records: Vec<Record> = generated
            .iter()
            .map(|g| g.to_record(self.base_ms))
            .collect();
        let p = self.partition();
        let before_ms = now_ms();
        let result = p.append(&records);
        let after_ms = now_ms();
        let max = self.config.max_batch_bytes;
        let appended = match result {
            Ok(appended) => appended,
            Err(Error::RecordTooLarge {
                size,
                max: reported,
            }) => {
                ensure!(
                    reported == u64::from(max) && size > reported,
                    "RecordTooLarge {{ size: {size}, max: {reported} }} with max_batch_bytes {max}"
                );
                // The size reported is the encoding's, with the append time
                // somewhere between the two readings of the clock.
                let expected: Vec<u64> = [before_ms, after_ms]
                    .iter()
                    .map(|&now| {
                        let resolved: Vec<StoredRecord> = records
                            .iter()
                            .enumerate()
                            .map(|(i, r)| stored(r, i as u64, now))
                            .collect();
                        encoded_len(&resolved) as u64
                    })
                    .collect();
                ensure!(
                    expected.contains(&size),
                    "RecordTooLarge reports {size} bytes, the encoding takes {expected:?}"
                );
                return Ok(());
            }
            Err(e) => return Err(format!("append: {e}")),
        };
        let base = self.model.end;
        let count = records.len() as u64;
        ensure!(
            appended.partition == 0
                && appended.base_offset == base
                && appended.last_offset == base + count - 1,
            "append of {count} records at end {base} returned {appended:?}"
        );
        // Learn the append time the log gave untimestamped records.
        let back = p
            .read(base, 1)
            .map_err(|e| format!("reading back the batch at {base}: {e}"))?;
        ensure!(
            back.len() == records.len(),
            "the batch at {base} reads back as {} records, not {}",
            back.len(),
            records.len()
        );
        let mut append_time = None;
        for (i, (record, got)) in records.iter().zip(&back).enumerate() {
            let timestamp = match record.timestamp {
                Some(ts) => ts,
                None => {
                    ensure!(
                        (before_ms..=after_ms).contains(&got.timestamp),
                        "append time {} outside [{before_ms}, {after_ms}]",
                        got.timestamp
                    );
                    ensure!(
                        *append_time.get_or_insert(got.timestamp) == got.timestamp,
                        "one batch has two append times"
                    );
                    got.timestamp
                }
            };
            let want = stored(record, base + i as u64, timestamp);
            ensure!(*got == want, "read back {got:?}, appended {want:?}");
        }
        let max_timestamp = back.iter().map(|r| r.timestamp).max().expect("not empty");
        ensure!(
            appended.max_timestamp == max_timestamp,
            "Appended::max_timestamp {} but the records' largest is {max_timestamp}",
            appended.max_timestamp
        );
        let batch = ModelBatch::new(back);
        ensure!(
            batch.bytes <= max as usize,
            "a {}-byte batch was accepted with max_batch_bytes {max}",
            batch.bytes
        );
        self.model.push(batch);
        if self.syncs_every_append() {
            ensure!(
                p.durable_offset() >= self.model.end,
                "Durability::Sync acknowledged offset {} before it was durable ({})",
                self.model.end - 1,
                p.durable_offset()
            );
        }
        Ok(())
    }

    fn read(&self, at: u16, max_bytes: usize) -> Result<(), String> {
        let model = &self.model;
        let offset = pick(at, model.start.saturating_sub(1), model.end + 1);
        let result = self.partition().read(offset, max_bytes);
        if offset < model.start || offset > model.end {
            return expect_out_of_range(result, offset, model);
        }
        let got = result.map_err(|e| format!("read({offset}, {max_bytes}): {e}"))?;
        same_records(
            &got,
            &model.read(offset, max_bytes),
            &format!("read({offset}, {max_bytes})"),
        )
    }

    fn reader(&self, at: u16) -> Result<(), String> {
        let model = &self.model;
        let offset = pick(at, model.start.saturating_sub(1), model.end + 1);
        let mut reader = self.partition().reader(offset);
        if offset < model.start || offset > model.end {
            let first = reader
                .next()
                .ok_or("an out-of-range reader yields nothing")?;
            expect_out_of_range(first, offset, model)?;
            ensure!(reader.next().is_none(), "a reader goes on after an error");
            return Ok(());
        }
        let got: Vec<StoredRecord> = reader
            .collect::<crate::Result<_>>()
            .map_err(|e| format!("reader({offset}): {e}"))?;
        same_records(
            &got,
            &model.records_from(offset),
            &format!("reader({offset})"),
        )
    }

    fn time_lookup(&self, pick_at: u16, shift: i16) -> Result<(), String> {
        let records = self.model.records_from(self.model.start);
        let timestamp = match records.len() {
            0 => self.base_ms + i64::from(shift),
            n => records[usize::from(pick_at) % n].timestamp + i64::from(shift % 4),
        };
        let got = self
            .partition()
            .offset_for_timestamp(timestamp)
            .map_err(|e| format!("offset_for_timestamp({timestamp}): {e}"))?;
        let want = self.model.offset_for_timestamp(timestamp);
        ensure!(
            got == want,
            "offset_for_timestamp({timestamp}) = {got:?}, the model says {want:?}"
        );
        Ok(())
    }

    fn delete_records_before(&mut self, at: u16) -> Result<(), String> {
        let model = &self.model;
        let offset = pick(at, model.start, model.end + 1);
        let result = self.partition().delete_records_before(offset);
        if offset > model.end {
            return expect_out_of_range(result, offset, model);
        }
        result.map_err(|e| format!("delete_records_before({offset}): {e}"))?;
        self.model.delete_records_before(offset);
        Ok(())
    }

    /// The segments on disk, as (base offset, bytes of batches): closed
    /// segments from their file lengths, the active one (whose file may
    /// hold zeros written ahead) from what the partition reports.
    fn segments_on_disk(&self) -> Result<Vec<(u64, u64)>, String> {
        let dir = partition_dir();
        let mut segments: Vec<(u64, u64)> = self
            .sim
            .list_dir(&dir)
            .map_err(|e| format!("listing {}: {e}", dir.display()))?
            .iter()
            .filter_map(|name| crate::segment::parse_file_name(name, crate::segment::LOG_SUFFIX))
            .map(|base| {
                let path = dir.join(crate::segment::file_name(base, crate::segment::LOG_SUFFIX));
                let len = self.sim.file_contents(&path).map_or(0, |c| c.len() as u64);
                (base, len)
            })
            .collect();
        segments.sort_unstable();
        let closed: u64 = segments.iter().rev().skip(1).map(|s| s.1).sum();
        if let Some(active) = segments.last_mut() {
            let total = self.partition().size_bytes();
            ensure!(
                total >= closed,
                "size_bytes {total} below the closed segments' {closed}"
            );
            active.1 = total - closed;
        }
        Ok(segments)
    }

    fn enforce_retention(&mut self) -> Result<(), String> {
        let limit = self.config.retention_bytes.expect("the model sets a limit");
        let segments = self.segments_on_disk()?;
        ensure!(!segments.is_empty(), "a partition without segments");
        // Whole closed segments go: those below the start offset, then the
        // oldest while what remains is over the limit by at least their size.
        let closed = segments.len() - 1;
        let start = self.model.start;
        let mut delete = 0;
        while delete < closed && segments[delete + 1].0 <= start {
            delete += 1;
        }
        let total: u64 = segments[delete..].iter().map(|s| s.1).sum();
        let mut excess = total.saturating_sub(limit);
        while delete < closed && excess >= segments[delete].1 {
            excess -= segments[delete].1;
            delete += 1;
        }
        let deleted = self
            .log()
            .enforce_retention()
            .map_err(|e| format!("enforce_retention: {e}"))?;
        ensure!(
            deleted == delete,
            "enforce_retention deleted {deleted} segments of {segments:?} (limit {limit}, start {start}), expected {delete}"
        );
        let after = self.segments_on_disk()?;
        ensure!(
            after == segments[delete..],
            "segments after retention {after:?}, expected {:?}",
            &segments[delete..]
        );
        self.model
            .delete_records_before(segments[delete].0.max(start));
        Ok(())
    }

    fn reopen(&mut self) -> Result<(), String> {
        let log = self.log.take().expect("open");
        log.close().map_err(|e| format!("close: {e}"))?;
        let log = open_log(&self.sim, &self.config).map_err(|e| format!("reopen: {e}"))?;
        let report = log.recovery_reports()[0].clone();
        self.log = Some(log);
        ensure!(
            report.clean && report.segments_scanned == 0 && report.truncated_bytes == 0,
            "a clean close was not trusted: {report:?}"
        );
        let durable = self.partition().durable_offset();
        ensure!(
            durable == self.model.end,
            "after a clean reopen the durable offset {durable} is not the end {}",
            self.model.end
        );
        Ok(())
    }

    fn crash(&mut self, power_loss: bool) -> Result<(), String> {
        let durable = self.partition().durable_offset();
        if power_loss {
            self.sim.crash();
        } else {
            self.sim.crash_clean_prefix();
        }
        // Closing on dead handles fails; dropping must still not panic.
        drop(self.log.take());
        let log = open_log(&self.sim, &self.config)
            .map_err(|e| format!("open after crash (durable offset {durable}): {e}"))?;
        self.log = Some(log);
        let p = self.partition();
        let end = p.end_offset();
        ensure!(
            end >= durable,
            "after the crash the end offset {end} is below the durable offset {durable}: \
             acknowledged records were lost (model end {})",
            self.model.end
        );
        self.model.cut(end)?;
        Ok(())
    }
}

/// A `StoredRecord` for `record` at `offset` with `timestamp` where it has
/// none of its own.
fn stored(record: &Record, offset: u64, timestamp: i64) -> StoredRecord {
    StoredRecord {
        offset,
        timestamp: record.timestamp.unwrap_or(timestamp),
        key: record.key.clone(),
        value: record.value.clone(),
        headers: record.headers.clone(),
    }
}

fn same_records(got: &[StoredRecord], want: &[StoredRecord], what: &str) -> Result<(), String> {
    if let Some(i) = (0..got.len().min(want.len())).find(|&i| got[i] != want[i]) {
        return Err(format!(
            "{what}: record {i} is {:?}, expected {:?}",
            got[i], want[i]
        ));
    }
    ensure!(
        got.len() == want.len(),
        "{what}: {} records, expected {} (offsets {:?} vs {:?})",
        got.len(),
        want.len(),
        got.iter().map(|r| r.offset).collect::<Vec<_>>(),
        want.iter().map(|r| r.offset).collect::<Vec<_>>()
    );
    Ok(())
}

fn expect_out_of_range<T: std::fmt::Debug>(
    result: crate::Result<T>,
    offset: u64,
    model: &Model,
) -> Result<(), String> {
    match result {
        Err(Error::OffsetOutOfRange {
            requested,
            start,
            end,
        }) if requested == offset && start == model.start && end == model.end => Ok(()),
        other => Err(format!(
            "offset {offset} outside [{}, {}] gave {other:?}",
            model.start, model.end
        )),
    }
}

fn run_ops(setup: &Setup, ops: &[Op]) -> Result<(), String> {
    let mut harness = Harness::new(setup.seed, setup.config())?;
    for (i, op) in ops.iter().enumerate() {
        harness
            .apply(op)
            .map_err(|e| format!("operation {i} ({op:?}): {e}"))?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: env_count("DURABLE_LOG_MODEL_CASES", 64) as u32,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Random operations, crashes and reopens included, against the model.
    #[test]
    fn partition_matches_model(
        setup in setup_strategy(),
        ops in proptest::collection::vec(op_strategy(), 1..60),
    ) {
        if let Err(message) = run_ops(&setup, &ops) {
            return Err(TestCaseError::fail(message));
        }
    }
}

// ---------------------------------------------------------------------------
// Seeded crash schedules

/// splitmix64, for schedules that depend only on their seed.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    fn bytes(&mut self, max: u64) -> Vec<u8> {
        let len = self.below(max + 1);
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

fn schedule(seed: u64) -> (Setup, Vec<Op>) {
    let mut rng = Rng(seed);
    let setup = Setup {
        seed,
        segment_bytes: 300 + rng.below(1700),
        index_interval_bytes: 16 + rng.below(500) as u32,
        max_index_bytes: 64 + rng.below(128) as u32,
        max_batch_bytes: 1 << 20,
        retention_bytes: 1 << 30,
        // Sync or None: the interval's background thread would make the
        // schedule depend on timing.
        durability: (rng.below(2)) as u8,
    };
    let count = 10 + rng.below(50);
    let ops = (0..count)
        .map(|_| match rng.below(100) {
            0..60 => {
                let records = (0..1 + rng.below(5))
                    .map(|_| GenRecord {
                        key: (rng.below(2) == 0).then(|| rng.bytes(6)),
                        value: Some(rng.bytes(80)),
                        timestamp: GenTimestamp::Near(rng.below(1000) as i64),
                        headers: Vec::new(),
                    })
                    .collect();
                Op::Append(records)
            }
            60..75 => Op::Sync,
            75..87 => Op::Crash { power_loss: true },
            87..92 => Op::Reopen,
            92..96 => Op::TruncateTo {
                at: rng.next_u64() as u16,
            },
            _ => Op::Read {
                at: rng.next_u64() as u16,
                max_bytes: rng.below(2000) as u16,
            },
        })
        .collect();
    (setup, ops)
}

/// Power losses (torn writes included) at seeded points of random append
/// and sync schedules.
#[test]
fn crash_schedules() {
    let first = env_count("DURABLE_LOG_CRASH_SEED_START", 0);
    let seeds = env_count("DURABLE_LOG_CRASH_SEEDS", 200);
    for seed in first..first + seeds {
        let (setup, ops) = schedule(seed);
        let outcome = catch_unwind(AssertUnwindSafe(|| run_ops(&setup, &ops)));
        let message = match outcome {
            Ok(Ok(())) => continue,
            Ok(Err(message)) => message,
            Err(panic) => panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".into()),
        };
        panic!(
            "crash schedule seed {seed} failed (rerun with DURABLE_LOG_CRASH_SEED_START={seed} \
             DURABLE_LOG_CRASH_SEEDS=1): {message}\nsetup: {setup:?}"
        );
    }
}

/// Truncated records never come back, whatever a crash keeps.
#[test]
fn truncate_then_crash_does_not_resurrect() {
    for seed in 0..32 {
        for power_loss in [true, false] {
            let setup = Setup {
                seed,
                segment_bytes: 400,
                index_interval_bytes: 64,
                max_index_bytes: 64,
                max_batch_bytes: 1 << 20,
                retention_bytes: 1 << 30,
                durability: (seed % 2) as u8,
            };
            let record = |i: u8| GenRecord {
                key: Some(vec![i]),
                value: Some(vec![i; 30]),
                timestamp: GenTimestamp::Near(i64::from(i)),
                headers: Vec::new(),
            };
            let mut ops: Vec<Op> = (0..20u8)
                .map(|i| Op::Append(vec![record(i), record(i + 100)]))
                .collect();
            ops.push(Op::Sync);
            ops.push(Op::TruncateTo { at: 13 });
            ops.push(Op::Crash { power_loss });
            ops.push(Op::Append(vec![record(200)]));
            ops.push(Op::Crash { power_loss });
            let mut harness = Harness::new(setup.seed, setup.config()).expect("open");
            for op in &ops {
                if let Err(message) = harness.apply(op) {
                    panic!("seed {seed}, power loss {power_loss}, {op:?}: {message}");
                }
            }
            // The straddled batch was cut to offset 12, and nothing of the
            // old offsets 13.. came back.
            let p = harness.partition();
            assert!(p.end_offset() >= 13, "seed {seed}: {}", p.end_offset());
            let records: Vec<StoredRecord> = p.reader(0).map(|r| r.unwrap()).collect();
            assert_eq!(records[12].value.as_deref(), Some(&[6u8; 30][..]));
            for r in &records[13..] {
                assert_eq!(r.value.as_deref(), Some(&[200u8; 30][..]), "seed {seed}");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Injected faults

fn fault_config() -> Config {
    Config::default()
        .segment_bytes(500)
        .index_interval_bytes(64)
        .max_index_bytes(64)
        .retention_age(None)
        .durability(Durability::Sync)
}

fn numbered(n: u64) -> Vec<Record> {
    (0..1 + n % 3)
        .map(|i| {
            Record::new(format!("record {n}.{i}"))
                .with_key(format!("k{}", n % 5))
                .with_timestamp(now_ms() + n as i64)
        })
        .collect()
}

fn all_records(p: &Partition) -> crate::Result<Vec<StoredRecord>> {
    p.reader(p.start_offset()).collect()
}

fn expected(records: &[Record], base: u64) -> Vec<StoredRecord> {
    records
        .iter()
        .enumerate()
        .map(|(i, r)| stored(r, base + i as u64, 0))
        .collect()
}

/// What happens after a crash in the fault test.
#[derive(Debug, Clone, Copy)]
enum AfterFault {
    Reopen,
    ProcessCrash,
    PowerLoss,
}

/// One run: acknowledged appends, a fault, then the checks. Returns the
/// acknowledged records and the records of the failed append, with offsets.
fn fault_run(
    sim: &SimStorage,
    fault: Fault,
    n: u64,
) -> Result<(Vec<StoredRecord>, Vec<StoredRecord>), String> {
    let config = fault_config();
    let log = open_log(sim, &config).map_err(|e| format!("open: {e}"))?;
    let p = log.partition(0).expect("partition 0");
    let mut acked = Vec::new();
    for i in 0..4 {
        let records = numbered(i);
        let a = p.append(&records).map_err(|e| format!("append: {e}"))?;
        acked.extend(expected(&records, a.base_offset));
    }
    sim.fail_after(n, fault);
    let mut failed = None;
    for i in 4..200 {
        let records = numbered(i);
        let end = p.end_offset();
        match p.append(&records) {
            Ok(a) => acked.extend(expected(&records, a.base_offset)),
            Err(Error::Io { .. }) => {
                failed = Some(expected(&records, end));
                break;
            }
            Err(e) => return Err(format!("the failed append gave {e}, not Error::Io")),
        }
    }
    let failed = failed.ok_or("the fault never fired")?;
    match p.append(&numbered(999)) {
        Err(Error::Poisoned { partition: 0 }) => {}
        other => return Err(format!("an append after the failure gave {other:?}")),
    }
    match p.truncate_to(0) {
        Err(Error::Poisoned { partition: 0 }) => {}
        other => return Err(format!("truncate_to after the failure gave {other:?}")),
    }
    // Reads still work, and see the acknowledged records, plus perhaps the
    // failed batch (written, then its sync failed).
    let got = all_records(&p).map_err(|e| format!("read after the failure: {e}"))?;
    acked_then_maybe(&got, &acked, &failed, "read while poisoned")?;
    drop(p);
    match log.close() {
        Err(Error::Poisoned { partition: 0 }) => {}
        other => return Err(format!("closing a poisoned log gave {other:?}")),
    }
    Ok((acked, failed))
}

/// `got` is `acked`, or `acked` followed by the whole `failed` batch.
fn acked_then_maybe(
    got: &[StoredRecord],
    acked: &[StoredRecord],
    failed: &[StoredRecord],
    what: &str,
) -> Result<(), String> {
    if got.len() == acked.len() {
        return same_records(got, acked, what);
    }
    let mut with_failed = acked.to_vec();
    with_failed.extend_from_slice(failed);
    same_records(got, &with_failed, what)
}

fn fault_case(fault: Fault, n: u64, after: AfterFault, seed: u64) -> Result<(), String> {
    let sim = SimStorage::new(seed);
    let (acked, failed) = fault_run(&sim, fault, n)?;
    match after {
        AfterFault::Reopen => sim.clear_faults(),
        AfterFault::ProcessCrash => sim.crash_clean_prefix(),
        AfterFault::PowerLoss => sim.crash(),
    }
    let config = fault_config();
    let log = open_log(&sim, &config).map_err(|e| format!("reopen after the fault: {e}"))?;
    let p = log.partition(0).expect("partition 0");
    let mut got = all_records(&p).map_err(|e| format!("read after reopen: {e}"))?;
    acked_then_maybe(&got, &acked, &failed, "after reopen")?;
    // The partition takes appends again, from its new end.
    for i in 300..306 {
        let records = numbered(i);
        let end = p.end_offset();
        let a = p
            .append(&records)
            .map_err(|e| format!("append after reopen: {e}"))?;
        ensure!(
            a.base_offset == end,
            "append after reopen at {a:?}, end was {end}"
        );
        got.extend(expected(&records, a.base_offset));
    }
    // Everything acknowledged since is durable too.
    drop(p);
    sim.crash();
    drop(log);
    let log = open_log(&sim, &config).map_err(|e| format!("open after power loss: {e}"))?;
    let p = log.partition(0).expect("partition 0");
    let last = all_records(&p).map_err(|e| format!("read after power loss: {e}"))?;
    same_records(&last, &got, "after a power loss following recovery")
}

/// After a failed write or fsync, appends fail with `Error::Poisoned`,
/// reads still work, and reopening recovers every acknowledged record.
#[test]
fn injected_faults_poison_then_reopen_recovers() {
    let mut failures = Vec::new();
    for (f, fault) in [Fault::Eio, Fault::Enospc, Fault::SyncFails]
        .into_iter()
        .enumerate()
    {
        for n in 1..=10 {
            for (a, after) in [
                AfterFault::Reopen,
                AfterFault::ProcessCrash,
                AfterFault::PowerLoss,
            ]
            .into_iter()
            .enumerate()
            {
                let seed = (f * 100 + a) as u64 * 1000 + n;
                if let Err(message) = fault_case(fault, n, after, seed) {
                    failures.push(format!("{fault:?} after {n}, then {after:?}: {message}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// After an fsync fails, the written pages stay readable in the page cache
/// but are never written back (Linux marks them clean).
///
/// Regression: reopening in the same process (or any process, while the
/// kernel was up) found the failed batch valid, kept it and reported it
/// durable; appends acknowledged after it landed behind bytes that were not
/// on disk, so a later power loss left a gap in the offsets, a hole in
/// synced data (`Error::Corrupt` at open or on read), or both.
#[test]
fn failed_fsync_then_reopen_keeps_what_it_reports_durable() {
    let mut failures = Vec::new();
    for n in 1..=10 {
        if let Err(message) = fault_case(Fault::SyncFails, n, AfterFault::Reopen, n) {
            failures.push(format!("SyncFails after {n}: {message}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Shrunk from `partition_matches_model` (`Durability::Sync`): append one
/// record, `delete_records_before(1)`, append three more, power loss; the
/// start offset came back as 0.
///
/// Postmortem: `Checkpoint::write` alternated between its two slots
/// whatever was synced. `delete_records_before` synced the new start offset
/// into slot A; the next append's unsynced checkpoint went to slot B, the
/// one after that to slot A again, over the only durable copy of the new
/// start offset. A power loss that tore that write left slot A invalid and
/// slot B with its durable contents, a state from before the deletion. Now
/// unsynced states never go to the slot that holds the latest synced one.
#[test]
fn regression_log_start_offset_survives_power_loss() {
    let config = Config::default()
        .segment_bytes(1 << 20)
        .max_index_bytes(64)
        .retention_age(None);
    let mut lost = Vec::new();
    for seed in 0..64 {
        let sim = SimStorage::new(seed);
        let log = open_log(&sim, &config).expect("open");
        let p = log.partition(0).expect("partition 0");
        p.append(&[Record::new("deleted")]).expect("append");
        p.delete_records_before(1).expect("delete_records_before");
        for _ in 0..3 {
            p.append(&[Record::new("kept")]).expect("append");
        }
        sim.crash();
        drop(p);
        drop(log);
        let log = open_log(&sim, &config).expect("open after power loss");
        let start = log.partition(0).expect("partition 0").start_offset();
        if start != 1 {
            lost.push((seed, start));
        }
    }
    assert!(
        lost.is_empty(),
        "(seed, start offset) after power loss: {lost:?}"
    );
}

/// How `interrupted_operation_case` changes the log before the fault.
#[derive(Debug, Clone, Copy)]
enum Interrupted {
    TruncateTo(u64),
    DeleteRecordsBefore(u64),
    EnforceRetention,
}

/// Sixty records in batches of two over several segments, then `operation`
/// with the `n`th write or sync failing, then `after`. The partition must
/// open and hold a prefix of the records (from some start offset) that keeps
/// everything the operation was not asked to remove.
fn interrupted_operation_case(
    operation: Interrupted,
    fault: Fault,
    n: u64,
    after: AfterFault,
    seed: u64,
) -> Result<(), String> {
    let sim = SimStorage::new(seed);
    let config = fault_config().retention_bytes(Some(1500));
    let log = open_log(&sim, &config).map_err(|e| format!("open: {e}"))?;
    let p = log.partition(0).expect("partition 0");
    let mut original = Vec::new();
    for i in 0..30 {
        let records = vec![
            Record::new(format!("{i}a")).with_timestamp(now_ms()),
            Record::new(format!("{i}b")).with_timestamp(now_ms()),
        ];
        let a = p.append(&records).map_err(|e| format!("append: {e}"))?;
        original.extend(expected(&records, a.base_offset));
    }
    sim.fail_after(n, fault);
    let result = match operation {
        Interrupted::TruncateTo(offset) => p.truncate_to(offset),
        Interrupted::DeleteRecordsBefore(offset) => p.delete_records_before(offset),
        Interrupted::EnforceRetention => log.enforce_retention().map(drop),
    };
    let succeeded = result.is_ok();
    drop(p);
    match after {
        AfterFault::Reopen => {
            sim.clear_faults();
            drop(log);
        }
        AfterFault::ProcessCrash => {
            sim.crash_clean_prefix();
            drop(log);
        }
        AfterFault::PowerLoss => {
            sim.crash();
            drop(log);
        }
    }
    let log = open_log(&sim, &config).map_err(|e| format!("open afterwards: {e}"))?;
    let p = log.partition(0).expect("partition 0");
    let (start, end) = (p.start_offset(), p.end_offset());
    let got = all_records(&p).map_err(|e| format!("read afterwards: {e}"))?;
    let from = usize::try_from(start).expect("small");
    ensure!(
        end as usize <= original.len() && from <= end as usize,
        "start {start}, end {end} for {} records",
        original.len()
    );
    same_records(&got, &original[from..end as usize], "records afterwards")?;
    match operation {
        Interrupted::TruncateTo(offset) => {
            ensure!(
                end >= offset,
                "truncate_to({offset}) left the end at {end}: records below it were lost"
            );
            ensure!(
                !succeeded || end == offset,
                "truncate_to({offset}) succeeded, yet the end is {end}"
            );
            if offset > 0 {
                ensure!(
                    start == 0,
                    "truncate_to({offset}) moved the start to {start}"
                );
            }
        }
        Interrupted::DeleteRecordsBefore(offset) => {
            ensure!(
                end == original.len() as u64,
                "delete_records_before changed the end to {end}"
            );
            ensure!(
                start == 0 || start == offset,
                "delete_records_before({offset}) left the start at {start}"
            );
            ensure!(
                !succeeded || start == offset,
                "delete_records_before({offset}) succeeded, yet the start is {start}"
            );
        }
        Interrupted::EnforceRetention => {
            ensure!(
                end == original.len() as u64,
                "retention changed the end to {end}"
            );
        }
    }
    // The log goes on from its end.
    let a = p
        .append(&[Record::new("next")])
        .map_err(|e| format!("append afterwards: {e}"))?;
    ensure!(
        a.base_offset == end,
        "append afterwards at {}, end was {end}",
        a.base_offset
    );
    Ok(())
}

/// A truncation, deletion or retention run cut short by a failed write or
/// sync, then a reopen or crash, leaves a log that opens and holds a prefix
/// of what it held (and all of what it was not asked to remove).
#[test]
fn interrupted_operations_leave_a_prefix() {
    let mut failures = Vec::new();
    let operations = [
        Interrupted::TruncateTo(37),
        Interrupted::TruncateTo(20),
        Interrupted::TruncateTo(0),
        Interrupted::DeleteRecordsBefore(25),
        Interrupted::EnforceRetention,
    ];
    for (o, operation) in operations.into_iter().enumerate() {
        for fault in [Fault::Eio, Fault::SyncFails] {
            for n in 1..=12 {
                for after in [
                    AfterFault::Reopen,
                    AfterFault::ProcessCrash,
                    AfterFault::PowerLoss,
                ] {
                    let seed = o as u64 * 10_000 + n * 10 + after as u64;
                    if let Err(message) =
                        interrupted_operation_case(operation, fault, n, after, seed)
                    {
                        failures.push(format!(
                            "{operation:?}, {fault:?} after {n}, then {after:?}: {message}"
                        ));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
