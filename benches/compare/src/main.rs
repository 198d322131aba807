//! Runs one workload on durable-log, its peers (`commitlog`, `okaywal`,
//! `raft-engine`) and a naive baseline, and prints the medians and ratios as
//! Markdown tables.
//!
//! ```text
//! cargo run --release                      # the full workload
//! COMPARE_RECORDS=20000 COMPARE_RUNS=1 cargo run --release   # a quick look
//! ```
//!
//! Workloads (records are 100-byte JSON-like lines, appended in batches of
//! 100):
//!
//! - W1: append every record without syncing, then sync once.
//! - W2: one writer, a sync after every batch.
//! - W3: reopen, then read everything from the first record.
//! - W4: point reads at fixed-seed random offsets.
//! - W5: reopen time after a clean close, and after SIGKILL of a writer
//!   (with a check of what was recovered).
//! - W6 (durable-log only): 8 threads appending with `Durability::Sync`.
//! - W7 (durable-log only): latency from `append` to a tailing reader,
//!   next to an `mpsc` channel.
//! - durable-log's W1 and W3 with LZ4 and Zstandard, and lz4_flex alone.
//! - durable-log's peak memory as a writer and as a reader of a 100 MB and
//!   a 1 GB log, each in a child process.
//! - The machine's limits: page-cache write bandwidth, fdatasync latency,
//!   memcpy bandwidth.
//!
//! See `workload::Params` for the `COMPARE_*` variables that size the run.
//! Each system works in its own directory under `COMPARE_DIR`, deleted after
//! each workload, so the systems never share the page cache's dirty data.

mod crash;
mod durable_only;
mod machine;
mod memory;
mod report;
mod stats;
mod subjects;
mod workload;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use bytes::Bytes;

use crate::stats::{Figures, rate};
use crate::subjects::baseline::Baseline;
use crate::subjects::commitlog::CommitLogSubject;
use crate::subjects::durable::DurableLog;
use crate::subjects::okaywal::OkayWal;
use crate::subjects::raft::RaftEngine;
use crate::subjects::{Mode, Result, Subject, error};
use crate::workload::{BATCH_RECORDS, Check, Digest, Params};

fn main() {
    crash::run_child_if_asked();
    memory::run_child_if_asked();
    let params = Params::from_env();
    eprintln!("{params:?}");
    let records = workload::records(params.records);
    let expected = Expected::new(&params, &records);
    let mut figures = Figures::default();
    let load_before = load_average();
    let started = Instant::now();
    for run in 1..=params.runs {
        eprintln!(
            "run {run}/{} ({:.0?} so far)",
            params.runs,
            started.elapsed()
        );
        // Each run starts with a different system, so that none always runs
        // right after the same neighbour (whose deleted files the file
        // system may still be reclaiming).
        let mut systems: [MeasureFn; 5] = [
            measure::<Baseline>,
            measure::<CommitLogSubject>,
            measure::<OkayWal>,
            measure::<RaftEngine>,
            measure::<DurableLog>,
        ];
        let first = (run - 1) % systems.len();
        systems.rotate_left(first);
        for measure_system in systems {
            measure_system(&params, &records, &expected, &mut figures);
        }
        if params.runs_system(durable_only::NAME)
            && let Err(e) = durable_only::run(&params, &records, &mut figures)
        {
            eprintln!("durable-log only workloads failed: {e}");
            figures.note("failed", DurableLog::NAME, format!("durable-log only: {e}"));
        }
        // Near the end, as its gigabyte of writes disturbs what follows it
        // most.
        if params.runs_system(machine::MACHINE) {
            let dir = params.dir.join("machine");
            machine::measure(&params, &dir, &mut figures);
            remove_dir(&dir).expect("remove the probe directory");
        }
        // After the machine's probe: the gigabyte the memory children write
        // and free would otherwise leave the probe memory the host has
        // already backed, and the probe measured writes four times faster
        // than any workload above sees.
        if params.runs_system(memory::NAME)
            && let Err(e) = memory::measure(&params.dir, &mut figures)
        {
            eprintln!("memory measurement failed: {e}");
            figures.note("failed", DurableLog::NAME, format!("memory: {e}"));
        }
    }
    let elapsed = started.elapsed();
    eprintln!("done in {elapsed:.0?}");
    println!(
        "Took {elapsed:.0?}. Load average (1, 5, 15 min) before: {load_before}; after: {}.\n",
        load_average()
    );
    report::print(&params, &figures);
}

/// Runs W1–W5 for one system.
type MeasureFn = fn(&Params, &[Bytes], &Expected, &mut Figures);

/// What the reads must return, computed once.
struct Expected {
    /// Digest of all records.
    scan: Digest,
    /// W4's offsets.
    offsets: Vec<u64>,
    /// Sum of the touch values of the records at those offsets.
    reads: u64,
}

impl Expected {
    fn new(params: &Params, records: &[Bytes]) -> Expected {
        let offsets = workload::read_offsets(records.len(), params.reads);
        let reads = offsets.iter().fold(0u64, |sum, &offset| {
            sum.wrapping_add(Check::Touch.value(&records[offset as usize]))
        });
        Expected {
            scan: Digest::of(Check::Touch, records),
            offsets,
            reads,
        }
    }
}

/// Runs W1–W5 for `S` once; a failure is reported and noted, and the
/// remaining workloads of `S` are skipped for this run.
fn measure<S: Subject>(
    params: &Params,
    records: &[Bytes],
    expected: &Expected,
    figures: &mut Figures,
) {
    if !params.runs_system(S::NAME) {
        return;
    }
    let dir = params.dir.join(S::NAME);
    eprintln!("  {}", S::NAME);
    let result = measure_reads::<S>(&dir, records, expected, figures)
        .and_then(|()| measure_synced::<S>(&dir, params, records, figures))
        .and_then(|()| measure_crash::<S>(&dir, params, figures));
    if let Err(e) = result {
        eprintln!("  {} failed: {e}", S::NAME);
        figures.note("failed", S::NAME, e.to_string());
    }
    let _ = remove_dir(&dir);
}

/// W1, then W5 (clean reopen), W3 and W4 on the log W1 wrote.
fn measure_reads<S: Subject>(
    dir: &Path,
    records: &[Bytes],
    expected: &Expected,
    figures: &mut Figures,
) -> Result<()> {
    let name = S::NAME;
    fresh_dir(dir)?;
    let mut subject = S::open(dir, Mode::Buffered)?;
    let times = subject.append_then_sync(records)?;
    figures.add("w1", name, rate(records.len(), times.appended));
    figures.add("w1_sync", name, rate(records.len(), times.synced));
    subject.close()?;
    figures.add("disk_mb", name, disk_bytes(dir)? as f64 / 1e6);

    let start = Instant::now();
    let mut subject = S::open(dir, Mode::Buffered)?;
    figures.add("w5_clean_ms", name, start.elapsed().as_secs_f64() * 1e3);

    let start = Instant::now();
    let digest = subject.scan(Check::Touch)?;
    let elapsed = start.elapsed();
    if digest != expected.scan {
        return Err(error(format!(
            "W3 read {} records, or wrong ones",
            digest.count
        )));
    }
    figures.add("w3", name, rate(records.len(), elapsed));
    subject.other_scans(&expected.scan, figures)?;

    let start = Instant::now();
    let mut sum = 0u64;
    for &offset in &expected.offsets {
        sum = sum.wrapping_add(subject.read(offset)?);
    }
    let elapsed = start.elapsed();
    if sum != expected.reads {
        return Err(error("W4 returned wrong records"));
    }
    figures.add("w4", name, rate(expected.offsets.len(), elapsed));

    subject.other_point_reads(&expected.offsets, expected.reads, figures)?;
    subject.close()?;
    remove_dir(dir)
}

/// W2: a sync after every batch.
fn measure_synced<S: Subject>(
    dir: &Path,
    params: &Params,
    records: &[Bytes],
    figures: &mut Figures,
) -> Result<()> {
    fresh_dir(dir)?;
    let mut subject = S::open(dir, Mode::Synced)?;
    let batches = &records[..params.w2_batches * BATCH_RECORDS];
    let start = Instant::now();
    for batch in batches.chunks(BATCH_RECORDS) {
        subject.append_synced(batch)?;
    }
    figures.add("w2", S::NAME, rate(params.w2_batches, start.elapsed()));
    subject.close()?;
    remove_dir(dir)
}

/// W5 after SIGKILL of a writer.
fn measure_crash<S: Subject>(dir: &Path, params: &Params, figures: &mut Figures) -> Result<()> {
    fresh_dir(dir)?;
    let trial = crash::trial::<S>(dir, params.kill_batches)?;
    figures.add("w5_kill_ms", S::NAME, trial.open.as_secs_f64() * 1e3);
    let note = match &trial.outcome {
        Ok(()) => format!(
            "all {} acknowledged recovered ({} records)",
            trial.acknowledged, trial.recovered
        ),
        Err(why) => format!(
            "{} acknowledged, {} recovered: {why}",
            trial.acknowledged, trial.recovered
        ),
    };
    figures.add(
        "w5_kill_ok",
        S::NAME,
        if trial.outcome.is_ok() { 1.0 } else { 0.0 },
    );
    figures.note("w5_kill", S::NAME, note);
    remove_dir(dir)
}

/// The first three fields of `/proc/loadavg`: how busy the machine was.
fn load_average() -> String {
    fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "unknown".to_owned(),
        |text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(", ")
        },
    )
}

/// Empties (creating if needed) `dir`.
pub fn fresh_dir(dir: &Path) -> Result<()> {
    remove_dir(dir)?;
    fs::create_dir_all(dir)?;
    Ok(())
}

/// Removes `dir` and everything in it, if it exists, then flushes the file
/// system (`sync`) so the next measurement does not pay for this one.
pub fn remove_dir(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
        _ => {}
    }
    Command::new("sync").status()?;
    Ok(())
}

/// Bytes allocated on disk to the files under `dir` (as `du` counts them:
/// sparse, preallocated-but-unwritten space is not counted).
pub fn disk_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let metadata = entry.metadata()?;
        total += if metadata.is_dir() {
            disk_bytes(&entry.path())?
        } else {
            metadata.blocks() * 512
        };
    }
    Ok(total)
}
