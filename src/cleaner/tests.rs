//! Compaction on the simulated disk: a model of what must be kept, the
//! tombstone rules with an injected clock, readers across gaps and across a
//! swap, a crash at every step of the swap, and reopening.
//!
//! Sizes: `DURABLE_LOG_COMPACTION_CASES` (default 32) proptest cases.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;

use super::state;
use super::swap::CLEANED_SUFFIX;
use crate::partition::now_ms;
use crate::segment::{INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX, parse_file_name};
use crate::storage::Storage;
use crate::storage::sim::{Fault, SimStorage};
use crate::{
    Cleanup, Compression, Config, Durability, Error, Log, Partition, Record, StoredRecord,
};

const DIR: &str = "/log";
const RETENTION_MS: i64 = 1_000;

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

/// A compacted log with small segments; the background thread stays idle.
fn config() -> Config {
    Config::default()
        .cleanup(Cleanup::Compact)
        .segment_bytes(400)
        .max_index_bytes(1024)
        .index_interval_bytes(64)
        .retention_age(None)
        .delete_retention(Duration::from_millis(RETENTION_MS as u64))
        .retention_check_interval(Duration::from_secs(3600))
}

/// Every batch in its own segment: a batch larger than `segment_bytes` is
/// stored alone.
fn segment_per_batch() -> Config {
    config().segment_bytes(1)
}

fn open(sim: &SimStorage, config: &Config) -> crate::Result<Log> {
    Log::open_with_storage(Path::new(DIR), config.clone(), Arc::new(sim.clone()))
}

fn partition_dir() -> PathBuf {
    Path::new(DIR).join("0")
}

fn all(p: &Partition) -> Vec<StoredRecord> {
    p.reader(p.start_offset())
        .collect::<crate::Result<_>>()
        .expect("the whole partition reads")
}

fn active_base(p: &Partition) -> u64 {
    p.snapshot().last().expect("a segment").base_offset()
}

fn names_on_disk(sim: &SimStorage) -> Vec<String> {
    let mut names = sim.list_dir(&partition_dir()).expect("partition directory");
    names.sort();
    names
}

fn kv(key: &str, value: Option<&str>, ts: i64) -> Record {
    Record {
        key: Some(Bytes::copy_from_slice(key.as_bytes())),
        value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
        timestamp: Some(ts),
        headers: Vec::new(),
    }
}

fn stored(record: &Record, offset: u64) -> StoredRecord {
    StoredRecord {
        offset,
        timestamp: record.timestamp.expect("tests set timestamps"),
        key: record.key.clone(),
        value: record.value.clone(),
        headers: record.headers.clone(),
    }
}

fn append(p: &Partition, records: &[Record]) -> Vec<StoredRecord> {
    let a = p.append(records).expect("append");
    records
        .iter()
        .enumerate()
        .map(|(i, r)| stored(r, a.base_offset + i as u64))
        .collect()
}

fn offsets(records: &[StoredRecord]) -> Vec<u64> {
    records.iter().map(|r| r.offset).collect()
}

// ---------------------------------------------------------------------------
// The model

#[derive(Debug, Clone)]
struct ModelRecord {
    record: StoredRecord,
    present: bool,
    /// When a clean first saw it (tombstones only).
    seen_ms: Option<i64>,
}

/// What a compacted partition must hold, decided from the rules alone.
#[derive(Debug, Default)]
struct Model {
    records: BTreeMap<u64, ModelRecord>,
    end: u64,
}

impl Model {
    fn append(&mut self, records: Vec<StoredRecord>) {
        for record in records {
            self.end = record.offset + 1;
            self.records.insert(
                record.offset,
                ModelRecord {
                    record,
                    present: true,
                    seen_ms: None,
                },
            );
        }
    }

    /// A clean at `now` of everything below `cleaned_to` (the active
    /// segment's base offset, unless the key map filled up first).
    fn compact(&mut self, active_base: u64, now: i64) {
        let mut latest: HashMap<Bytes, u64> = HashMap::new();
        for (&offset, r) in self.records.range(..active_base) {
            if r.present {
                latest.insert(r.record.key.clone().expect("keyed"), offset);
            }
        }
        for (&offset, r) in self.records.range_mut(..active_base) {
            if !r.present {
                continue;
            }
            let key = r.record.key.as_ref().expect("keyed");
            let superseded = latest[key] > offset;
            let expired = r.record.value.is_none()
                && r.seen_ms.is_some_and(|seen| seen + RETENTION_MS <= now);
            if superseded || expired {
                r.present = false;
            } else if r.record.value.is_none() && r.seen_ms.is_none() {
                r.seen_ms = Some(now);
            }
        }
    }

    fn truncate(&mut self, offset: u64) {
        self.records.retain(|&o, _| o < offset);
        self.end = self.end.min(offset);
    }

    fn visible(&self) -> Vec<StoredRecord> {
        self.records
            .values()
            .filter(|r| r.present)
            .map(|r| r.record.clone())
            .collect()
    }
}

/// Reads the partition back: in full, and from every offset with `read`
/// and `reader`, each of which must return the next record kept.
fn check(p: &Partition, want: &[StoredRecord], end: u64) -> Result<(), String> {
    ensure!(p.start_offset() == 0, "start offset {}", p.start_offset());
    ensure!(
        p.end_offset() == end,
        "end offset {} not {end}",
        p.end_offset()
    );
    let got: Vec<StoredRecord> = p
        .reader(0)
        .collect::<crate::Result<_>>()
        .map_err(|e| format!("full read: {e}"))?;
    ensure!(
        got == want,
        "full read: offsets {:?}, want {:?}",
        offsets(&got),
        offsets(want)
    );
    for offset in 0..=end {
        let next = want.iter().find(|r| r.offset >= offset);
        let read = p
            .read(offset, 1)
            .map_err(|e| format!("read({offset}): {e}"))?;
        ensure!(
            read.first() == next,
            "read({offset}) gave {:?}, want {:?}",
            read.first().map(|r| r.offset),
            next.map(|r| r.offset)
        );
        let first = p
            .reader(offset)
            .next()
            .transpose()
            .map_err(|e| format!("reader({offset}): {e}"))?;
        ensure!(
            first.as_ref() == next,
            "reader({offset}) gave {:?}, want {:?}",
            first.map(|r| r.offset),
            next.map(|r| r.offset)
        );
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum Op {
    /// Keys `k0`..`k5`; `None` values are tombstones.
    Append(Vec<(u8, Option<Vec<u8>>)>),
    Compact {
        advance_ms: u16,
    },
    Reopen,
    Crash,
    TruncateTo {
        at: u16,
    },
}

#[derive(Debug, Clone)]
struct Setup {
    seed: u64,
    segment_bytes: u64,
    index_interval_bytes: u32,
    compression: u8,
    /// A key map small enough to split cleans, or the default.
    map_bytes: Option<usize>,
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let record = (
        0u8..6,
        prop_oneof![
            3 => proptest::collection::vec(any::<u8>(), 0..24).prop_map(Some),
            1 => Just(None),
        ],
    );
    prop_oneof![
        12 => proptest::collection::vec(record, 1..5).prop_map(Op::Append),
        4 => (0u16..1_500).prop_map(|advance_ms| Op::Compact { advance_ms }),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
        1 => any::<u16>().prop_map(|at| Op::TruncateTo { at }),
    ]
}

fn setup_strategy() -> impl Strategy<Value = Setup> {
    (
        any::<u64>(),
        120u64..900,
        1u32..300,
        0u8..3,
        prop_oneof![3 => Just(None), 1 => (1usize..600).prop_map(Some)],
    )
        .prop_map(
            |(seed, segment_bytes, index_interval_bytes, compression, map_bytes)| Setup {
                seed,
                segment_bytes,
                index_interval_bytes,
                compression,
                map_bytes,
            },
        )
}

fn run_model(setup: &Setup, ops: &[Op]) -> Result<(), String> {
    let config = config()
        .segment_bytes(setup.segment_bytes)
        .index_interval_bytes(setup.index_interval_bytes)
        .compression(match setup.compression {
            0 => Compression::None,
            1 => Compression::Lz4,
            _ => Compression::Zstd { level: 1 },
        });
    let sim = SimStorage::new(setup.seed);
    let mut log = Some(open(&sim, &config).map_err(|e| format!("open: {e}"))?);
    let mut model = Model::default();
    let base_ms = now_ms();
    let mut now = base_ms;
    let mut appended = 0i64;
    for (step, op) in ops.iter().enumerate() {
        let p = log
            .as_ref()
            .expect("open")
            .partition(0)
            .expect("partition 0");
        match op {
            Op::Append(records) => {
                let records: Vec<Record> = records
                    .iter()
                    .map(|(key, value)| {
                        appended += 1;
                        Record {
                            key: Some(Bytes::from(format!("k{key}"))),
                            value: value.clone().map(Bytes::from),
                            timestamp: Some(base_ms + appended),
                            headers: Vec::new(),
                        }
                    })
                    .collect();
                let a = p
                    .append(&records)
                    .map_err(|e| format!("step {step}: append: {e}"))?;
                model.append(
                    records
                        .iter()
                        .enumerate()
                        .map(|(i, r)| stored(r, a.base_offset + i as u64))
                        .collect(),
                );
            }
            Op::Compact { advance_ms } => {
                now += i64::from(*advance_ms);
                let active = active_base(&p);
                let closed = p.segment_count() > 1;
                p.compact_with(now, setup.map_bytes.unwrap_or(super::MAP_BYTES_MAX))
                    .map_err(|e| format!("step {step}: compact: {e}"))?;
                // How far the clean went: to the active segment, or as far
                // as its key map reached. (A truncation may leave the active
                // segment below what earlier cleans reached.)
                let cleaned_to = p.cleaner().state.lock().dirty_offset.min(active);
                ensure!(
                    setup.map_bytes.is_some() || !closed || cleaned_to == active,
                    "step {step}: cleaned to {cleaned_to}, the active segment starts at {active}"
                );
                model.compact(cleaned_to, now);
            }
            Op::Reopen => {
                drop(p);
                log.take()
                    .expect("open")
                    .close()
                    .map_err(|e| format!("step {step}: close: {e}"))?;
                log = Some(open(&sim, &config).map_err(|e| format!("step {step}: reopen: {e}"))?);
            }
            Op::Crash => {
                drop(p);
                sim.crash();
                drop(log.take());
                log = Some(
                    open(&sim, &config)
                        .map_err(|e| format!("step {step}: open after crash: {e}"))?,
                );
            }
            Op::TruncateTo { at } => {
                let offset = u64::from(*at) % (model.end + 1);
                p.truncate_to(offset)
                    .map_err(|e| format!("step {step}: truncate_to({offset}): {e}"))?;
                model.truncate(offset);
            }
        }
        let p = log
            .as_ref()
            .expect("open")
            .partition(0)
            .expect("partition 0");
        check(&p, &model.visible(), model.end)
            .map_err(|e| format!("after step {step} ({op:?}): {e}"))?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: env_count("DURABLE_LOG_COMPACTION_CASES", 32) as u32,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Random keys, values, tombstones and rolls, compactions at random
    /// times, reopens, crashes and truncations: after each, the partition
    /// holds exactly what the rules keep, at the offsets it was given.
    #[test]
    fn compaction_keeps_exactly_the_latest_record_of_each_key(
        setup in setup_strategy(),
        ops in proptest::collection::vec(op_strategy(), 1..40),
    ) {
        if let Err(message) = run_model(&setup, &ops) {
            return Err(TestCaseError::fail(message));
        }
    }
}

/// The same rules with a key map too small for more than a batch or two:
/// the clean goes as far as the map reaches, later ones go on, and the end
/// result is that of a clean with room for every key.
#[test]
fn a_full_key_map_cleans_in_steps_and_never_loses_a_latest_record() {
    let sim = SimStorage::new(1);
    let log = open(&sim, &config()).expect("open");
    let p = log.partition(0).expect("partition 0");
    let base_ms = now_ms();
    let mut model = Model::default();
    for i in 0..60u64 {
        let key = format!("k{}", (i * 7) % 13);
        let value = (i % 9 != 0).then(|| format!("v{i}"));
        model.append(append(
            &p,
            &[kv(&key, value.as_deref(), base_ms + i as i64)],
        ));
    }
    let active = active_base(&p);
    let mut rounds = 0;
    while p.cleaner().state.lock().dirty_offset < active {
        // Room for about one key: every round maps at least one batch.
        p.compact_with(base_ms, 1).expect("compact");
        rounds += 1;
        assert!(rounds < 100, "no progress");
        // Whatever has been cleaned so far, each key's latest record is there.
        let got = all(&p);
        for (key, &latest) in &latest_offsets(&model) {
            assert!(
                got.iter().any(|r| r.offset == latest),
                "round {rounds}: the latest record of {key:?} at {latest} is gone"
            );
        }
    }
    assert!(
        rounds > 3,
        "the small map did not split the clean ({rounds} rounds)"
    );
    model.compact(active, base_ms);
    check(&p, &model.visible(), model.end).unwrap();
}

fn latest_offsets(model: &Model) -> HashMap<Bytes, u64> {
    model
        .records
        .iter()
        .map(|(&o, r)| (r.record.key.clone().expect("keyed"), o))
        .collect()
}

// ---------------------------------------------------------------------------
// Tombstones

/// A tombstone survives the first clean that sees it and every clean within
/// `delete_retention` after it, across a reopen, and goes at the first
/// clean after that. The earlier values of its key go at the first clean.
#[test]
fn a_tombstone_stays_for_delete_retention_after_its_first_clean() {
    let sim = SimStorage::new(2);
    let config = segment_per_batch();
    let log = open(&sim, &config).expect("open");
    let p = log.partition(0).expect("partition 0");
    let t = now_ms();
    append(&p, &[kv("a", Some("a1"), t)]);
    let delete = append(&p, &[kv("a", None, t + 1)]);
    let other = append(&p, &[kv("b", Some("b1"), t + 2)]);
    append(&p, &[kv("c", Some("c1"), t + 3)]); // the active segment

    let t0 = t + 10_000;
    let report = p.compact_at(t0).expect("first clean");
    assert_eq!(report.records_removed, 1, "{report:?}");
    assert_eq!(report.tombstones_removed, 0, "{report:?}");
    let kept = offsets(&all(&p));
    assert_eq!(kept, vec![1, 2, 3], "the first clean keeps the tombstone");

    p.compact_at(t0 + RETENTION_MS - 1)
        .expect("clean within retention");
    assert_eq!(offsets(&all(&p)), vec![1, 2, 3]);

    // Marks survive a reopen.
    drop(p);
    log.close().expect("close");
    let log = open(&sim, &config).expect("reopen");
    let p = log.partition(0).expect("partition 0");
    p.compact_at(t0 + RETENTION_MS - 1)
        .expect("clean within retention");
    assert_eq!(all(&p)[0], delete[0]);

    let report = p
        .compact_at(t0 + RETENTION_MS)
        .expect("clean after retention");
    assert_eq!(report.tombstones_removed, 1, "{report:?}");
    assert_eq!(all(&p)[0], other[0], "the tombstone is gone");
    assert_eq!((p.start_offset(), p.end_offset()), (0, 4));
    assert_eq!(p.read(0, 1).unwrap()[0].offset, 2);
}

/// A tombstone's retention runs from the first clean that sees it, not from
/// the first clean of the log or from its timestamp: one written long after
/// an earlier clean, and first seen later, stays its full time.
#[test]
fn a_later_tombstone_gets_its_own_retention() {
    let sim = SimStorage::new(3);
    let log = open(&sim, &segment_per_batch()).expect("open");
    let p = log.partition(0).expect("partition 0");
    // An old timestamp: retention is not measured from it.
    let old = now_ms() - 10 * RETENTION_MS;
    append(&p, &[kv("a", Some("a1"), old)]);
    append(&p, &[kv("b", None, old + 1)]);
    append(&p, &[kv("x", Some("x"), old + 2)]);
    let t0 = now_ms();
    p.compact_at(t0).expect("clean");
    assert_eq!(
        offsets(&all(&p)),
        vec![0, 1, 2],
        "b's tombstone is first seen now"
    );

    append(&p, &[kv("a", None, old + 3)]); // closes the segment of x
    append(&p, &[kv("y", Some("y"), old + 4)]);
    let t1 = t0 + RETENTION_MS / 2;
    p.compact_at(t1).expect("clean");
    assert_eq!(
        offsets(&all(&p)),
        vec![1, 2, 3, 4],
        "a1 goes, both tombstones stay"
    );

    p.compact_at(t0 + RETENTION_MS).expect("clean");
    assert_eq!(
        offsets(&all(&p)),
        vec![2, 3, 4],
        "b's retention is over, a's is not"
    );
    p.compact_at(t1 + RETENTION_MS - 1).expect("clean");
    assert_eq!(offsets(&all(&p)), vec![2, 3, 4]);
    p.compact_at(t1 + RETENTION_MS).expect("clean");
    assert_eq!(offsets(&all(&p)), vec![2, 4]);
}

/// A tombstone superseded by a later value goes like any old record,
/// without waiting.
#[test]
fn a_superseded_tombstone_goes_at_once() {
    let sim = SimStorage::new(4);
    let log = open(&sim, &segment_per_batch()).expect("open");
    let p = log.partition(0).expect("partition 0");
    let t = now_ms();
    append(&p, &[kv("a", Some("a1"), t)]);
    append(&p, &[kv("a", None, t + 1)]);
    append(&p, &[kv("a", Some("a2"), t + 2)]);
    append(&p, &[kv("z", Some("z"), t + 3)]);
    let report = p.compact_at(t).expect("clean");
    assert_eq!((report.records_removed, report.tombstones_removed), (2, 1));
    assert_eq!(offsets(&all(&p)), vec![2, 3]);
}

// ---------------------------------------------------------------------------
// What is not cleaned

/// The active segment is never rewritten, even when it holds nothing but
/// old values of one key; and a closed record superseded only by the active
/// segment stays (keys are mapped up to the active segment, as in Kafka).
#[test]
fn the_active_segment_is_untouched() {
    let sim = SimStorage::new(5);
    let log = open(&sim, &config().segment_bytes(1 << 20)).expect("open");
    let p = log.partition(0).expect("partition 0");
    let t = now_ms();
    let mut records = Vec::new();
    for i in 0..20 {
        records.extend(append(&p, &[kv("same", Some(&format!("v{i}")), t + i)]));
    }
    let path = partition_dir().join(crate::segment::file_name(0, LOG_SUFFIX));
    let before = sim.file_contents(&path).expect("active segment");
    let report = p.compact_at(t + 10 * RETENTION_MS).expect("compact");
    assert_eq!(report, super::CompactionReport::default());
    assert_eq!(sim.file_contents(&path), Some(before));
    assert_eq!(all(&p), records);

    // Roll by hand with a config whose segments hold one batch each.
    drop(p);
    log.close().expect("close");
    let log = open(&sim, &segment_per_batch()).expect("reopen");
    let p = log.partition(0).expect("partition 0");
    let later = append(&p, &[kv("same", Some("newest"), t + 100)]);
    let report = p.compact_at(t + 10 * RETENTION_MS).expect("compact");
    // The closed segment loses all but its last record; the active segment,
    // holding the newest value, is not looked at.
    assert_eq!(report.records_removed, 19, "{report:?}");
    assert_eq!(all(&p), vec![records[19].clone(), later[0].clone()]);
}

/// Unkeyed records are refused on a compacted log by every append path,
/// and nothing of their batch is written.
#[test]
fn unkeyed_records_are_refused() {
    let sim = SimStorage::new(6);
    let log = open(&sim, &config()).expect("open");
    let p = log.partition(0).expect("partition 0");
    p.append(&[Record::new("v").with_key("k")]).expect("keyed");
    let missing = |result: crate::Result<crate::Appended>, what: &str| match result {
        Err(Error::MissingKey { partition: 0 }) => {}
        other => panic!("{what}: expected MissingKey, got {other:?}"),
    };
    missing(p.append(&[Record::new("no key")]), "append");
    missing(
        p.append(&[Record::new("v").with_key("k"), Record::new("no key")]),
        "append of a mixed batch",
    );
    missing(
        p.append_idempotent(&[Record::new("no key")], 7, 0, 0),
        "append_idempotent",
    );
    missing(log.append(Record::new("no key")), "Log::append");
    let producer = crate::Producer::new(&log, crate::ProducerConfig::default()).expect("producer");
    match producer.send(Record::new("no key")) {
        Err(Error::MissingKey { .. }) => {}
        other => panic!("Producer::send: expected MissingKey, got {other:?}"),
    }
    let handle = producer
        .send(Record::new("v2").with_key("k"))
        .expect("a keyed send");
    producer.flush().expect("flush");
    assert_eq!(handle.wait().expect("appended").base_offset, 1);
    assert_eq!(p.end_offset(), 2, "no refused record was written");
    // A tombstone has a key: accepted.
    p.append(&[Record::tombstone("k")]).expect("tombstone");
}

/// `compact` is for compacted logs only.
#[test]
fn a_delete_log_is_not_compacted() {
    let sim = SimStorage::new(7);
    let log = open(&sim, &config().cleanup(Cleanup::Delete)).expect("open");
    match log.compact() {
        Err(Error::InvalidConfig {
            field: "cleanup", ..
        }) => {}
        other => panic!("expected InvalidConfig(cleanup), got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Readers, gaps, swaps

/// Many keys overwritten many times in small segments: after a clean, every
/// kind of read lands on the next record kept, whatever offset it starts
/// at, and small segments have been merged.
fn overwritten_log(p: &Partition, keys: u64, writes: u64, base_ms: i64) -> Vec<StoredRecord> {
    let mut records = Vec::new();
    for i in 0..writes {
        let key = format!("key-{}", i % keys);
        records.extend(append(
            p,
            &[kv(&key, Some(&format!("value {i}")), base_ms + i as i64)],
        ));
    }
    records
}

/// What a clean of everything below `active` keeps of `records` (no
/// tombstones among them).
fn kept_below(records: &[StoredRecord], active: u64) -> Vec<StoredRecord> {
    let latest: HashMap<&Bytes, u64> = records
        .iter()
        .filter(|r| r.offset < active)
        .map(|r| (r.key.as_ref().expect("keyed"), r.offset))
        .collect();
    records
        .iter()
        .filter(|r| r.offset >= active || latest[r.key.as_ref().expect("keyed")] == r.offset)
        .cloned()
        .collect()
}

#[test]
fn reads_across_gaps_return_the_next_record_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), config().durability(Durability::None)).expect("open");
    let p = log.partition(0).expect("partition 0");
    let base_ms = now_ms();
    let records = overwritten_log(&p, 5, 120, base_ms);
    let segments = p.segment_count();
    let active = active_base(&p);
    let report = p.compact().expect("compact");
    let want = kept_below(&records, active);
    assert_eq!(report.records_removed, (records.len() - want.len()) as u64);
    assert!(
        p.segment_count() < segments,
        "small segments were not merged: {} then {}",
        segments,
        p.segment_count()
    );
    check(&p, &want, records.len() as u64).unwrap();
    let end = p.end_offset();
    for offset in 0..end {
        let next = want
            .iter()
            .find(|r| r.offset >= offset)
            .expect("the end is kept");
        // send_to starts with the batch holding the next record kept.
        let mut out = tempfile::tempfile().expect("tempfile");
        let sent = p.send_to(offset, 1, &mut out).expect("send_to");
        assert_eq!(sent.base_offset, next.offset, "send_to({offset})");
        assert!(sent.bytes > 0);
        assert!(p.wait_for(offset, Duration::ZERO).expect("wait_for"));
    }
    for r in &records {
        let want_offset = want
            .iter()
            .find(|w| w.timestamp >= r.timestamp)
            .map(|w| w.offset);
        assert_eq!(
            p.offset_for_timestamp(r.timestamp).expect("time lookup"),
            want_offset,
            "timestamp {}",
            r.timestamp
        );
    }
}

/// A reader that is inside a segment when a clean replaces it finishes the
/// old file, then goes on in the new segments: it skips no record the clean
/// kept, returns offsets in order, and every record it returns is the one
/// appended at its offset.
#[test]
fn a_reader_holding_old_segments_goes_on_across_the_swap() {
    for stop_after in [0usize, 1, 7, 40, 90] {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Log::open(dir.path(), config().durability(Durability::None)).expect("open");
        let p = log.partition(0).expect("partition 0");
        let records = overwritten_log(&p, 4, 150, now_ms());
        let by_offset: HashMap<u64, &StoredRecord> =
            records.iter().map(|r| (r.offset, r)).collect();
        let mut reader = p.reader(p.start_offset());
        let mut got: Vec<StoredRecord> = (&mut reader)
            .take(stop_after)
            .collect::<crate::Result<_>>()
            .expect("read before the swap");
        // A read is under way in an old segment (its batches decoded).
        let before_swap = offsets(&all(&p));
        p.append(&[kv("key-0", Some("more"), now_ms())])
            .expect("append");
        p.compact().expect("compact");
        let after = all(&p);
        got.extend(
            reader
                .collect::<crate::Result<Vec<_>>>()
                .expect("read after the swap"),
        );
        for pair in got.windows(2) {
            assert!(pair[0].offset < pair[1].offset, "offsets go back");
        }
        for r in &got {
            if let Some(original) = by_offset.get(&r.offset) {
                assert_eq!(r, *original, "offset {}", r.offset);
            }
        }
        let last_before = got
            .get(stop_after.wrapping_sub(1))
            .map_or(0, |r| r.offset + 1);
        for kept in after.iter().filter(|r| r.offset >= last_before) {
            assert!(
                got.iter().any(|r| r.offset == kept.offset),
                "stop after {stop_after}: the reader skipped {} (kept by the clean); \
                 read {:?}, before the swap {:?}",
                kept.offset,
                offsets(&got),
                before_swap
            );
        }
    }
}

/// Readers in other threads while segments are cleaned and swapped again
/// and again: no error, no fault from a file shrunk under a mapping, and
/// every record read is the one written at its offset.
#[test]
fn readers_run_alongside_repeated_swaps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(
        dir.path(),
        config().durability(Durability::None).segment_bytes(2_000),
    )
    .expect("open");
    let p = log.partition(0).expect("partition 0");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let value = |offset: u64| format!("value at {offset}");
    let base_ms = now_ms();
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let from = p.end_offset() / 3;
                    let mut last = None;
                    for r in p.reader(from) {
                        let r = r.expect("read during swaps");
                        assert!(last.is_none_or(|l| l < r.offset));
                        assert_eq!(r.value.as_deref(), Some(value(r.offset).as_bytes()));
                        last = Some(r.offset);
                    }
                    let _ = p.offset_for_timestamp(0).expect("time lookup");
                }
            });
        }
        for round in 0..30u64 {
            for i in 0..40u64 {
                let offset = p.end_offset();
                p.append(&[Record::new(value(offset))
                    .with_key(format!("k{}", (round + i) % 6))
                    .with_timestamp(base_ms + offset as i64)])
                    .expect("append");
            }
            p.compact().expect("compact");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    assert!(p.segment_count() < 10, "{} segments", p.segment_count());
}

// ---------------------------------------------------------------------------
// Files: indexes, reopen, producers

/// The indexes a clean writes are those a rebuild from the cleaned `.log`
/// gives, so a clean open trusts them; the contents survive a clean close.
#[test]
fn cleaned_segments_reopen_clean_with_the_indexes_a_rebuild_gives() {
    let sim = SimStorage::new(8);
    let config = config().index_interval_bytes(1);
    let log = open(&sim, &config).expect("open");
    let p = log.partition(0).expect("partition 0");
    let records = overwritten_log(&p, 3, 80, now_ms());
    let active = active_base(&p);
    let report = p.compact().expect("compact");
    assert!(
        report.segments_cleaned > report.segments_written,
        "{report:?}"
    );
    let want = kept_below(&records, active);
    drop(p);
    log.close().expect("close");

    let index_files: Vec<(PathBuf, Vec<u8>)> = names_on_disk(&sim)
        .into_iter()
        .filter(|n| n.ends_with(INDEX_SUFFIX) || n.ends_with(TIME_INDEX_SUFFIX))
        .map(|n| {
            let path = partition_dir().join(n);
            let bytes = sim.file_contents(&path).expect("index");
            (path, bytes)
        })
        .collect();
    let log = open(&sim, &config).expect("reopen");
    let reopened = &log.recovery_reports()[0];
    assert!(reopened.clean, "{reopened:?}");
    assert_eq!(reopened.indexes_rebuilt, 0, "{reopened:?}");
    check(&log.partition(0).unwrap(), &want, records.len() as u64).unwrap();
    drop(log);

    for (path, _) in &index_files {
        sim.remove_file(path).expect("remove index");
    }
    let log = open(&sim, &config).expect("open without indexes");
    let rebuilt = &log.recovery_reports()[0];
    assert_eq!(rebuilt.indexes_rebuilt as usize, index_files.len() / 2);
    for (path, bytes) in &index_files {
        let name = path.file_name().unwrap().to_str().unwrap();
        let base = parse_file_name(name, INDEX_SUFFIX)
            .or_else(|| parse_file_name(name, TIME_INDEX_SUFFIX));
        if base == Some(active) {
            // The last segment's rebuilt indexes stay preallocated.
            continue;
        }
        assert_eq!(
            sim.file_contents(path).as_deref(),
            Some(&bytes[..]),
            "{} differs from its rebuild",
            path.display()
        );
    }
    let p = log.partition(0).unwrap();
    check(&p, &want, records.len() as u64).unwrap();
    // Appends and cleans go on after the reopen.
    let more = append(&p, &[kv("key-0", Some("after"), now_ms())]);
    assert_eq!(more[0].offset, records.len() as u64);
    p.compact().expect("compact after reopen");
}

/// An idempotent producer's batches lose records to a clean, the last ones
/// included; the producer state rebuilt from them, even without snapshots,
/// still answers a retry with its original offsets and accepts the next
/// sequence.
#[test]
fn producer_state_survives_compaction() {
    for remove_snapshots in [false, true] {
        let sim = SimStorage::new(9);
        let config = segment_per_batch();
        let log = open(&sim, &config).expect("open");
        let p = log.partition(0).expect("partition 0");
        let t = now_ms();
        let batch = |i: i64| {
            vec![
                kv("a", Some(&format!("a{i}")), t + i),
                kv("b", Some(&format!("b{i}")), t + i),
                kv("c", Some(&format!("c{i}")), t + i),
            ]
        };
        let first = p.append_idempotent(&batch(0), 5, 0, 0).expect("batch 0");
        let second = p.append_idempotent(&batch(1), 5, 0, 3).expect("batch 1");
        // Supersedes the last two records of the second batch, in a segment
        // the clean reaches; the active segment after it holds a filler.
        p.append(&[kv("b", Some("b2"), t + 2), kv("c", Some("c2"), t + 2)])
            .expect("later values");
        p.append(&[kv("z", Some("z"), t + 3)]).expect("filler");
        let report = p.compact_at(t).expect("compact");
        assert_eq!(report.records_removed, 5, "{report:?}");
        assert_eq!(offsets(&all(&p)), vec![3, 6, 7, 8]);
        sim.crash();
        drop(p);
        drop(log);
        if remove_snapshots {
            for name in names_on_disk(&sim) {
                if name.ends_with(crate::producer_state::SNAPSHOT_SUFFIX) {
                    sim.remove_file(&partition_dir().join(name))
                        .expect("remove");
                }
            }
        }
        let log = open(&sim, &config).expect("open after crash");
        let p = log.partition(0).expect("partition 0");
        let retry = p.append_idempotent(&batch(1), 5, 0, 3).expect("retry");
        assert_eq!(
            (retry.base_offset, retry.last_offset),
            (second.base_offset, second.last_offset),
            "snapshots removed: {remove_snapshots}"
        );
        assert_eq!(first.base_offset, 0);
        let next = p
            .append_idempotent(&batch(2), 5, 0, 6)
            .expect("next sequence");
        assert_eq!(next.base_offset, 9);
    }
}

// ---------------------------------------------------------------------------
// Crashes during the swap

const SWAP_T0_OFFSET_MS: i64 = 50_000;

/// A log with closed segments to clean: superseded values, tombstones seen
/// by an earlier clean whose retention is over at the clean under test,
/// and small segments to merge. Deterministic whatever the disk's seed.
fn swap_setup(sim: &SimStorage, base_ms: i64) -> Log {
    let log = open(sim, &config()).expect("open");
    let p = log.partition(0).expect("partition 0");
    let mut ts = base_ms;
    let mut put = |key: &str, value: Option<String>| {
        ts += 1;
        append(&p, &[kv(key, value.as_deref(), ts)]);
    };
    for i in 0..20 {
        put(&format!("k{}", i % 5), Some(format!("value {i}")));
    }
    put("k1", None);
    put("k2", None);
    // Enough to close the tombstones' segment.
    for i in 0..8 {
        put(&format!("f{i}"), Some(format!("filler {i}")));
    }
    p.compact_at(base_ms + SWAP_T0_OFFSET_MS)
        .expect("the earlier clean");
    for i in 0..16 {
        let key = ["k0", "k3", "k4", "k5"][i % 4];
        put(key, Some(format!("later {i}")));
    }
    drop(p);
    log
}

fn swap_time(base_ms: i64) -> i64 {
    base_ms + SWAP_T0_OFFSET_MS + RETENTION_MS
}

/// A crash at every step of a clean — each fdatasync and directory fsync
/// failing in turn, and each write — followed by a power loss, a process
/// crash, or a reopen in the same boot, leaves either the records from
/// before the clean or those after it, complete; never a mix. A clean after
/// the reopen then gives the same records as a clean that was not
/// interrupted, and no file of the interrupted clean is left.
#[test]
fn a_crash_at_every_step_of_the_swap_leaves_old_or_new() {
    let base_ms = now_ms();
    let twin = SimStorage::new(0);
    let log = swap_setup(&twin, base_ms);
    let p = log.partition(0).expect("partition 0");
    let old = all(&p);
    let report = p.compact_at(swap_time(base_ms)).expect("clean");
    assert!(
        report.tombstones_removed > 0 && report.segments_cleaned > report.segments_written,
        "the clean under test should remove tombstones and merge segments: {report:?}"
    );
    let new = all(&p);
    assert!(new.len() < old.len());
    let end = p.end_offset();
    drop(p);
    drop(log);

    let mut outcomes = [0usize; 2];
    for fault in [Fault::SyncFails, Fault::Eio] {
        let mut n = 1;
        loop {
            let mut finished = false;
            // Power losses with several seeds where the directory changes
            // between fsyncs (which one of them reaches the disk varies),
            // then a process crash, then a reopen in the same boot.
            let power_losses = if fault == Fault::SyncFails { 4 } else { 1 };
            for how in 0..power_losses + 2 {
                let sim = SimStorage::new(n * 8 + how);
                let log = swap_setup(&sim, base_ms);
                let p = log.partition(0).expect("partition 0");
                sim.fail_after(n, fault);
                let result = p.compact_at(swap_time(base_ms));
                sim.clear_faults();
                finished |= result.is_ok();
                drop(p);
                if how < power_losses {
                    sim.crash();
                } else if how == power_losses {
                    sim.crash_clean_prefix();
                }
                drop(log);
                let what = format!("{fault:?} at {n}, crash {how}, clean gave {result:?}");
                let log = open(&sim, &config()).unwrap_or_else(|e| panic!("{what}: open: {e}"));
                let p = log.partition(0).expect("partition 0");
                let got: Vec<StoredRecord> = p
                    .reader(0)
                    .collect::<crate::Result<_>>()
                    .unwrap_or_else(|e| panic!("{what}: read: {e}"));
                assert_eq!(p.end_offset(), end, "{what}");
                if got == old {
                    outcomes[0] += 1;
                } else {
                    assert_eq!(
                        offsets(&got),
                        offsets(&new),
                        "{what}: neither the old records nor the new"
                    );
                    assert_eq!(got, new, "{what}");
                    outcomes[1] += 1;
                }
                let leftovers: Vec<String> = names_on_disk(&sim)
                    .into_iter()
                    .filter(|n| n.ends_with(CLEANED_SUFFIX) || n == state::TEMP_FILE_NAME)
                    .collect();
                assert!(leftovers.is_empty(), "{what}: left {leftovers:?}");
                p.compact_at(swap_time(base_ms))
                    .unwrap_or_else(|e| panic!("{what}: clean after reopen: {e}"));
                assert_eq!(all(&p), new, "{what}: clean after reopen");
                check(&p, &new, end).unwrap_or_else(|e| panic!("{what}: {e}"));
            }
            if finished {
                break;
            }
            n += 1;
            assert!(n < 500, "the clean never finished");
        }
    }
    assert!(
        outcomes[0] > 0 && outcomes[1] > 0,
        "both outcomes should occur: {outcomes:?}"
    );
}

/// Row 12 with files: a process that dies right after the commit (the
/// state naming the swap is renamed into place, nothing else is done)
/// leaves cleaned files that the next open puts in place.
#[test]
fn open_finishes_a_committed_swap() {
    let base_ms = now_ms();
    let twin = SimStorage::new(0);
    let log = swap_setup(&twin, base_ms);
    let p = log.partition(0).unwrap();
    p.compact_at(swap_time(base_ms)).unwrap();
    let new = all(&p);
    drop(p);
    drop(log);

    let sim = SimStorage::new(11);
    let log = swap_setup(&sim, base_ms);
    let p = log.partition(0).unwrap();
    // The directory fsync after the state's rename fails: the commit is in
    // the page cache and nothing after it ran.
    sim.fail_after(count_syncs_until_commit(base_ms), Fault::SyncFails);
    assert!(p.compact_at(swap_time(base_ms)).is_err());
    assert!(p.is_poisoned());
    drop(p);
    sim.crash_clean_prefix();
    drop(log);
    let names = names_on_disk(&sim);
    assert!(
        names.iter().any(|n| n.ends_with(CLEANED_SUFFIX)),
        "the crash should leave cleaned files: {names:?}"
    );
    let committed = state::load(&sim, &partition_dir()).unwrap().unwrap();
    assert!(!committed.swap.is_empty(), "{committed:?}");

    let log = open(&sim, &config()).unwrap();
    assert_eq!(all(&log.partition(0).unwrap()), new);
    let finished = state::load(&sim, &partition_dir()).unwrap().unwrap();
    assert!(finished.swap.is_empty(), "{finished:?}");
    assert!(
        !names_on_disk(&sim)
            .iter()
            .any(|n| n.ends_with(CLEANED_SUFFIX))
    );
}

/// Row 13 with files: cleaned files and a temporary state that no commit
/// names are removed, durably, and the old segments are whole.
#[test]
fn open_undoes_an_uncommitted_clean() {
    let sim = SimStorage::new(12);
    let log = swap_setup(&sim, now_ms());
    let old = all(&log.partition(0).unwrap());
    log.close().unwrap();
    let before = names_on_disk(&sim);
    let bases: Vec<u64> = before
        .iter()
        .filter_map(|n| parse_file_name(n, LOG_SUFFIX))
        .collect();
    let mut stray = vec![state::TEMP_FILE_NAME.to_string()];
    for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
        stray.push(format!(
            "{}{CLEANED_SUFFIX}",
            crate::segment::file_name(bases[0], suffix)
        ));
    }
    for name in &stray {
        let path = partition_dir().join(name);
        let file = sim.open(&path, true).unwrap();
        file.write_at(b"an unfinished clean", 0).unwrap();
        file.sync_data().unwrap();
    }
    sim.sync_dir(&partition_dir()).unwrap();

    let log = open(&sim, &config()).unwrap();
    assert_eq!(all(&log.partition(0).unwrap()), old);
    assert_eq!(names_on_disk(&sim), before);
    sim.crash();
    drop(log);
    assert_eq!(names_on_disk(&sim), before, "the removals are durable");
}

/// The number of syncs a clean of [`swap_setup`] runs up to the directory
/// fsync that commits it (the one after renaming the state into place).
fn count_syncs_until_commit(base_ms: i64) -> u64 {
    for n in 1..200 {
        let sim = SimStorage::new(13);
        let log = swap_setup(&sim, base_ms);
        let p = log.partition(0).unwrap();
        let state = partition_dir().join(state::FILE_NAME);
        let before = sim.file_contents(&state);
        sim.fail_after(n, Fault::SyncFails);
        let _ = p.compact_at(swap_time(base_ms));
        if sim.file_contents(&state) != before {
            return n;
        }
    }
    panic!("the clean never committed");
}

/// A damaged `cleaner-state` is reported, never guessed around: it may
/// have named a swap to finish.
#[test]
fn a_damaged_cleaner_state_fails_the_open() {
    let sim = SimStorage::new(13);
    let log = swap_setup(&sim, now_ms());
    log.close().unwrap();
    let path = partition_dir().join(state::FILE_NAME);
    let bytes = sim.file_contents(&path).expect("a state file");
    sim.write_raw(&path, 20, &[!bytes[20]]).unwrap();
    match open(&sim, &config()) {
        Err(Error::Corrupt { path: bad, .. }) => assert_eq!(bad, path),
        other => panic!("expected Error::Corrupt, got {:?}", other.map(drop)),
    }
}

/// A truncation into the cleaned part forgets what the cleaner knew past
/// the cut, durably: later values at the reused offsets are compacted, and
/// tombstones there get their full retention.
#[test]
fn truncation_into_the_cleaned_part_then_compaction() {
    let sim = SimStorage::new(14);
    let config = segment_per_batch();
    let log = open(&sim, &config).unwrap();
    let p = log.partition(0).unwrap();
    let t = now_ms();
    for i in 0..6 {
        append(
            &p,
            &[kv(&format!("k{}", i % 2), Some(&format!("v{i}")), t + i)],
        );
    }
    p.compact_at(t).unwrap();
    assert_eq!(offsets(&all(&p)), vec![3, 4, 5]);
    p.truncate_to(4).unwrap();
    assert!(p.cleaner().state.lock().dirty_offset <= 4);
    append(&p, &[kv("k0", Some("w4"), t + 10)]);
    append(&p, &[kv("k1", None, t + 11)]);
    append(&p, &[kv("k0", Some("w6"), t + 12)]);
    append(&p, &[kv("k9", Some("filler"), t + 13)]);
    sim.crash();
    drop(p);
    drop(log);
    let log = open(&sim, &config).unwrap();
    let p = log.partition(0).unwrap();
    // k1's tombstone (5) removes 3; 4 is superseded by 6; the tombstone
    // stays although the first clean was long ago.
    p.compact_at(t + 10 * RETENTION_MS).unwrap();
    assert_eq!(offsets(&all(&p)), vec![5, 6, 7]);
    p.compact_at(t + 11 * RETENTION_MS).unwrap();
    assert_eq!(offsets(&all(&p)), vec![6, 7]);
}

/// What a clean writes is durable when `compact` returns.
#[test]
fn a_finished_clean_survives_power_loss() {
    let base_ms = now_ms();
    for seed in 0..16 {
        let sim = SimStorage::new(seed);
        let log = swap_setup(&sim, base_ms);
        let p = log.partition(0).unwrap();
        p.compact_at(swap_time(base_ms)).unwrap();
        let new = all(&p);
        drop(p);
        sim.crash();
        drop(log);
        let log = open(&sim, &config()).unwrap();
        assert_eq!(all(&log.partition(0).unwrap()), new, "seed {seed}");
        for name in names_on_disk(&sim) {
            assert!(!name.ends_with(CLEANED_SUFFIX), "seed {seed}: {name}");
        }
        let logs = names_on_disk(&sim)
            .iter()
            .filter(|n| parse_file_name(n, LOG_SUFFIX).is_some())
            .count();
        assert_eq!(
            logs,
            log.partition(0).unwrap().segment_count(),
            "seed {seed}"
        );
    }
}
