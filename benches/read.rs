//! Read paths through the public API.
//!
//! One log of `DURABLE_LOG_BENCH_RECORDS` (default 1,000,000) 100-byte
//! records, appended in batches of 100, is built once per run in a temporary
//! directory under `DURABLE_LOG_BENCH_DIR` (default `./target/bench-data`),
//! then closed and reopened. Measured:
//!
//! - `scan/reader`: every record through `Partition::reader(0)`;
//! - `scan/batches`: every record through `Partition::batches(0)`, borrowed
//!   from its batch;
//! - `scan/read_1MiB`: every record through `Partition::read(offset, 1 MiB)`
//!   calls, each starting after the last record of the previous one;
//! - `point/reader_next` and `point/read_1_byte`: one record at an offset
//!   drawn from a fixed-seed generator, through `reader(offset).next()` and
//!   through `read(offset, 1)` (which decodes the whole batch holding it).
//!
//! The data is in the page cache: these are the costs of the log's own code
//! (index lookup, checksum, decoding), not of the disk. Each batch's
//! checksum is verified at its first read only (see
//! `Config::verify_every_read`), so after the warm-up the iterations read
//! batches already verified.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
mod common;

use common::{SplitMix64, log_line};
use durable_log::{Config, Durability, Log, Partition, Record};
use tempfile::TempDir;

/// Records per appended batch.
const BATCH_RECORDS: usize = 100;
/// Records in the log unless `DURABLE_LOG_BENCH_RECORDS` says otherwise.
const DEFAULT_RECORDS: u64 = 1_000_000;
/// The `max_bytes` of the chunked scan.
const CHUNK_BYTES: usize = 1024 * 1024;

fn bench_root() -> PathBuf {
    let root = std::env::var_os("DURABLE_LOG_BENCH_DIR")
        .map_or_else(|| PathBuf::from("target/bench-data"), PathBuf::from);
    std::fs::create_dir_all(&root).expect("create the bench data directory");
    root
}

fn record_count() -> u64 {
    std::env::var("DURABLE_LOG_BENCH_RECORDS")
        .ok()
        .map(|v| v.parse().expect("DURABLE_LOG_BENCH_RECORDS is a number"))
        .unwrap_or(DEFAULT_RECORDS)
        .max(1)
}

/// The log under test. Fields drop in order: the log closes before its
/// directory is removed.
struct Fixture {
    _log: Log,
    partition: Partition,
    records: u64,
    _root: TempDir,
}

fn build(records: u64) -> Fixture {
    let root = tempfile::Builder::new()
        .prefix("read-")
        .tempdir_in(bench_root())
        .expect("create a temporary directory");
    let dir = root.path().join("log");
    let config = Config::default()
        .retention_age(None)
        .retention_bytes(None)
        .durability(Durability::None);
    let log = Log::open(&dir, config.clone()).expect("open");
    let partition = log.partition(0).expect("partition 0");
    let mut rng = SplitMix64(0x5EED_0002);
    let start_ms = 1_700_000_000_000;
    let mut written = 0u64;
    while written < records {
        let n = (records - written).min(BATCH_RECORDS as u64);
        let batch: Vec<Record> = (written..written + n)
            .map(|i| Record::new(log_line(&mut rng, start_ms + i)))
            .collect();
        partition.append(&batch).expect("append");
        written += n;
    }
    log.close().expect("close");
    let log = Log::open(&dir, config).expect("reopen");
    let partition = log.partition(0).expect("partition 0");
    assert_eq!(partition.end_offset(), records);
    println!(
        "read bench: {records} records, {} bytes in {} segment(s)",
        partition.size_bytes(),
        partition.segment_count()
    );
    Fixture {
        _log: log,
        partition,
        records,
        _root: root,
    }
}

fn scans(c: &mut Criterion, fixture: &Fixture) {
    let partition = &fixture.partition;
    let records = fixture.records;
    let mut group = c.benchmark_group("scan");
    group.throughput(Throughput::Elements(records));
    group.bench_function("reader", |b| {
        b.iter(|| {
            let mut count = 0u64;
            for record in partition.reader(0) {
                black_box(record.expect("read"));
                count += 1;
            }
            assert_eq!(count, records);
        });
    });
    group.bench_function("batches", |b| {
        b.iter(|| {
            let mut count = 0u64;
            for batch in partition.batches(0) {
                for record in batch.expect("read").records() {
                    black_box(record.expect("read"));
                    count += 1;
                }
            }
            assert_eq!(count, records);
        });
    });
    group.bench_function("read_1MiB", |b| {
        b.iter(|| {
            let mut offset = 0;
            let mut count = 0u64;
            while offset < records {
                let chunk = partition.read(offset, CHUNK_BYTES).expect("read");
                offset = chunk.last().expect("at least one record").offset + 1;
                count += chunk.len() as u64;
                black_box(chunk);
            }
            assert_eq!(count, records);
        });
    });
    group.finish();
}

fn point_reads(c: &mut Criterion, fixture: &Fixture) {
    let partition = &fixture.partition;
    let records = fixture.records;
    let mut group = c.benchmark_group("point");
    group.throughput(Throughput::Elements(1));
    group.bench_function("reader_next", |b| {
        let mut rng = SplitMix64(0x5EED_0003);
        b.iter(|| {
            let offset = rng.below(records);
            let record = partition
                .reader(offset)
                .next()
                .expect("a record")
                .expect("read");
            assert_eq!(record.offset, offset);
            black_box(record)
        });
    });
    group.bench_function("read_1_byte", |b| {
        let mut rng = SplitMix64(0x5EED_0004);
        b.iter(|| {
            let offset = rng.below(records);
            let chunk = partition.read(offset, 1).expect("read");
            assert_eq!(chunk.first().expect("a record").offset, offset);
            black_box(chunk)
        });
    });
    group.finish();
}

fn reads(c: &mut Criterion) {
    let fixture = build(record_count());
    scans(c, &fixture);
    point_reads(c, &fixture);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = reads
}
criterion_main!(benches);
