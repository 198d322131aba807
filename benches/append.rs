//! Append throughput through the public API.
//!
//! Records are 100-byte JSON-like log lines from a fixed-seed generator.
//! Batches of 1, 10, 100 and 1000 records are appended with
//! `Durability::None` (page cache only), and batches of 100 and 1000 with
//! `Durability::Sync` (one fsync per batch). Throughput is counted in
//! records.
//!
//! Each benchmark appends to one log, created in a temporary directory under
//! `DURABLE_LOG_BENCH_DIR` (default `./target/bench-data`), so the data sits
//! on the same disk as the build. The log keeps the default 1 GiB segments
//! and no retention; to bound the disk used, it is closed, deleted and
//! created again, outside the timed region, whenever the next run of appends
//! would take it past `DURABLE_LOG_BENCH_APPEND_CAP_BYTES` (default 256 MiB).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
mod common;

use common::{SplitMix64, log_line};
use durable_log::{Config, Durability, Log, Partition, Record};
use tempfile::TempDir;

/// Distinct records generated; batches cycle through them.
const POOL_RECORDS: usize = 10_000;
/// Default size at which a benchmark's log is recreated.
const DEFAULT_CAP_BYTES: u64 = 256 * 1024 * 1024;

fn record_pool() -> Vec<Record> {
    let mut rng = SplitMix64(0x5EED_0001);
    let start_ms = 1_700_000_000_000;
    (0..POOL_RECORDS)
        .map(|i| Record::new(log_line(&mut rng, start_ms + i as u64)))
        .collect()
}

fn bench_root() -> PathBuf {
    let root = std::env::var_os("DURABLE_LOG_BENCH_DIR")
        .map_or_else(|| PathBuf::from("target/bench-data"), PathBuf::from);
    std::fs::create_dir_all(&root).expect("create the bench data directory");
    root
}

fn cap_bytes() -> u64 {
    std::env::var("DURABLE_LOG_BENCH_APPEND_CAP_BYTES")
        .ok()
        .map(|v| {
            v.parse()
                .expect("DURABLE_LOG_BENCH_APPEND_CAP_BYTES is a number")
        })
        .unwrap_or(DEFAULT_CAP_BYTES)
}

/// A log that one benchmark appends to, recreated when it grows past a cap.
///
/// Fields drop in order: the log closes before its directory is removed.
struct Target {
    log: Option<Log>,
    partition: Partition,
    root: TempDir,
    config: Config,
    /// Bytes one batch takes on disk, measured by a first append.
    batch_bytes: u64,
    cap_bytes: u64,
}

impl Target {
    fn new(durability: Durability, batch: &[Record]) -> Target {
        let root = tempfile::Builder::new()
            .prefix("append-")
            .tempdir_in(bench_root())
            .expect("create a temporary directory");
        let config = Config::default()
            .retention_age(None)
            .retention_bytes(None)
            .durability(durability);
        let (log, partition) = open_fresh(&root.path().join("log"), &config);
        partition.append(batch).expect("append");
        let batch_bytes = partition.size_bytes();
        let cap_bytes = cap_bytes().max(batch_bytes * 2);
        Target {
            log: Some(log),
            partition,
            root,
            config,
            batch_bytes,
            cap_bytes,
        }
    }

    /// How many batches may be appended before the log reaches the cap,
    /// recreating it first if that is none.
    fn room(&mut self) -> u64 {
        let used = self.partition.size_bytes();
        let room = self.cap_bytes.saturating_sub(used) / self.batch_bytes;
        if room > 0 {
            return room;
        }
        let dir = self.root.path().join("log");
        self.log
            .take()
            .expect("the log is open")
            .close()
            .expect("close");
        std::fs::remove_dir_all(&dir).expect("remove the full log");
        let (log, partition) = open_fresh(&dir, &self.config);
        self.log = Some(log);
        self.partition = partition;
        self.cap_bytes / self.batch_bytes
    }
}

fn open_fresh(dir: &Path, config: &Config) -> (Log, Partition) {
    let log = Log::open(dir, config.clone()).expect("open");
    let partition = log.partition(0).expect("partition 0");
    (log, partition)
}

/// Batches of `size` records cut from the pool, cycled through in turn.
fn batches(pool: &[Record], size: usize) -> Vec<Vec<Record>> {
    let count = (pool.len() / size).max(1);
    (0..count)
        .map(|i| {
            (0..size)
                .map(|j| pool[(i * size + j) % pool.len()].clone())
                .collect()
        })
        .collect()
}

fn bench_appends(c: &mut Criterion, group_name: &str, durability: Durability, sizes: &[usize]) {
    let pool = record_pool();
    let mut group = c.benchmark_group(group_name);
    for &size in sizes {
        let batches = batches(&pool, size);
        let mut target = Target::new(durability, &batches[0]);
        group.throughput(Throughput::Elements(size as u64));
        group.bench_with_input(BenchmarkId::new("batch", size), &size, |b, _| {
            let mut next = 0usize;
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let run = left.min(target.room());
                    let partition = target.partition.clone();
                    let start = Instant::now();
                    for _ in 0..run {
                        partition.append(&batches[next]).expect("append");
                        next = (next + 1) % batches.len();
                    }
                    timed += start.elapsed();
                    left -= run;
                }
                timed
            });
        });
    }
    group.finish();
}

fn append_no_sync(c: &mut Criterion) {
    bench_appends(
        c,
        "append_durability_none",
        Durability::None,
        &[1, 10, 100, 1000],
    );
}

fn append_sync(c: &mut Criterion) {
    bench_appends(c, "append_durability_sync", Durability::Sync, &[100, 1000]);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = append_no_sync, append_sync
}
criterion_main!(benches);
