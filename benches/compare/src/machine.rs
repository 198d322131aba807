//! The machine's own limits, measured in the same run as the systems: what
//! the disk, the page cache and memory allow at best.

use std::fs::{self, File};
use std::hint::black_box;
use std::io::{Seek, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::stats::{Figures, quantile, rate};
use crate::workload::Params;

/// Name of the machine's column in the figures.
pub const MACHINE: &str = "machine";

/// Size of each write of the bandwidth probe.
const WRITE_BYTES: usize = 1 << 20;
/// Size of each append of the fsync probe.
const FSYNC_BYTES: usize = 4096;
/// Size of the memcpy buffers.
const MEMCPY_BYTES: usize = 256 << 20;
/// Copies timed by the memcpy probe.
const MEMCPY_ROUNDS: usize = 8;

/// Measures everything once and adds it to `figures`.
pub fn measure(params: &Params, dir: &Path, figures: &mut Figures) {
    fs::create_dir_all(dir).expect("create the data directory");
    let path = dir.join("probe");

    let (buffered, synced) = write_bandwidth(&path, params.machine_bytes);
    figures.add("machine.write_gbps", MACHINE, buffered);
    figures.add("machine.write_sync_gbps", MACHINE, synced);
    fs::remove_file(&path).expect("remove the probe file");

    for (label, overwrite) in [("fsync", false), ("fsync_overwrite", true)] {
        let (p50, p99, per_second) = fsync_latency(&path, params.fsync_ops, overwrite);
        figures.add(&format!("machine.{label}_p50_us"), MACHINE, p50);
        figures.add(&format!("machine.{label}_p99_us"), MACHINE, p99);
        figures.add(&format!("machine.{label}_per_s"), MACHINE, per_second);
        fs::remove_file(&path).expect("remove the probe file");
    }

    figures.add("machine.memcpy_gbps", MACHINE, memcpy_bandwidth());
}

/// Buffered sequential writes of 1 MiB: GB/s into the page cache, and GB/s
/// counting one final fdatasync.
fn write_bandwidth(path: &Path, total: usize) -> (f64, f64) {
    let block = vec![0xA5u8; WRITE_BYTES];
    let mut file = File::create(path).expect("create the probe file");
    let start = Instant::now();
    for _ in 0..total / WRITE_BYTES {
        file.write_all(&block).expect("write the probe file");
    }
    let written = start.elapsed();
    file.sync_data().expect("fdatasync the probe file");
    let synced = start.elapsed();
    let gb = total as f64 / 1e9;
    (gb / written.as_secs_f64(), gb / synced.as_secs_f64())
}

/// 4 KiB writes each followed by fdatasync: p50 and p99 in microseconds,
/// and pairs per second. The writes append to a growing file, or with
/// `overwrite` go over zeros written and synced beforehand (space the file
/// system has already allocated, as a log that preallocates writes).
fn fsync_latency(path: &Path, ops: usize, overwrite: bool) -> (f64, f64, f64) {
    let block = vec![0x5Au8; FSYNC_BYTES];
    let mut file = File::create(path).expect("create the probe file");
    if overwrite {
        file.write_all(&vec![0u8; ops * FSYNC_BYTES])
            .expect("write the probe file");
        file.sync_all().expect("fsync the probe file");
        file.rewind().expect("rewind the probe file");
    }
    let mut latencies = Vec::with_capacity(ops);
    let start = Instant::now();
    for _ in 0..ops {
        let op = Instant::now();
        file.write_all(&block).expect("write the probe file");
        file.sync_data().expect("fdatasync the probe file");
        latencies.push(op.elapsed().as_secs_f64() * 1e6);
    }
    let total = start.elapsed();
    latencies.sort_by(f64::total_cmp);
    (
        quantile(&latencies, 0.5),
        quantile(&latencies, 0.99),
        rate(ops, total),
    )
}

/// Copies between two large buffers on one core: GB/s.
fn memcpy_bandwidth() -> f64 {
    let source = vec![1u8; MEMCPY_BYTES];
    let mut target = vec![0u8; MEMCPY_BYTES];
    // Touch the target once so page faults are not timed.
    target.copy_from_slice(&source);
    let mut best = Duration::MAX;
    for _ in 0..MEMCPY_ROUNDS {
        let start = Instant::now();
        target.copy_from_slice(black_box(&source));
        black_box(&mut target);
        best = best.min(start.elapsed());
    }
    MEMCPY_BYTES as f64 / 1e9 / best.as_secs_f64()
}
