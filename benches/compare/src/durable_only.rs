//! Workloads only durable-log runs: group commit (W6), tailing latency
//! (W7), compression, and W4 through `Partition::read`.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use durable_log::{Compression, Durability, Partition, Record};

use crate::stats::{Figures, quantile, rate};
use crate::subjects::durable::{DurableLog, PointRead};
use crate::subjects::{Mode, Result, Subject, error};
use crate::workload::{BATCH_RECORDS, Check, Digest, Params};
use crate::{disk_bytes, fresh_dir, remove_dir};

/// The name that selects these workloads in `COMPARE_SYSTEMS`.
pub const NAME: &str = "durable-log-only";
/// Appending threads of W6.
const W6_THREADS: usize = 8;
/// How long the W7 reader waits before checking again.
const TAIL_WAIT: Duration = Duration::from_secs(1);

/// Runs every durable-log-only workload once, under `dir`.
pub fn run(params: &Params, records: &[Bytes], figures: &mut Figures) -> Result<()> {
    let name = DurableLog::NAME;
    let dir = params.dir.join(NAME);

    fresh_dir(&dir)?;
    let batches = params.w2_batches;
    let (per_second, group) = group_commit(&dir, &records[..batches * BATCH_RECORDS])?;
    figures.add("w6", name, per_second);
    figures.add("w6.batches_per_fsync", name, group);
    remove_dir(&dir)?;

    fresh_dir(&dir)?;
    let latencies = tail_latency(&dir, records, params.w7_records, params.w7_pace_us)?;
    remove_dir(&dir)?;
    for (figure, values) in [
        ("w7.log.returned", &latencies.log_returned),
        ("w7.log.called", &latencies.log_called),
        ("w7.mpsc.returned", &latencies.mpsc_returned),
        ("w7.mpsc.called", &latencies.mpsc_called),
    ] {
        let mut sorted: Vec<f64> = values.clone();
        sorted.sort_by(f64::total_cmp);
        for (suffix, q) in [("p50", 0.5), ("p99", 0.99), ("p999", 0.999)] {
            figures.add(&format!("{figure}.{suffix}"), name, quantile(&sorted, q));
        }
    }
    figures.add("w7.log.early", name, latencies.log_early as f64);

    let (speed, ratio) = lz4_blocks(records);
    figures.add("lz4_flex.records_per_s", name, speed);
    figures.add("lz4_flex.ratio", name, ratio);
    for (label, compression) in [
        ("none", Compression::None),
        ("lz4", Compression::Lz4),
        ("zstd1", Compression::Zstd { level: 1 }),
    ] {
        fresh_dir(&dir)?;
        compressed(&dir, records, compression, label, figures)?;
        remove_dir(&dir)?;
    }
    Ok(())
}

/// W4 again through `Partition::read(offset, 1)`, on the log W1 left; run
/// by the main W4 right after its own reads.
pub fn point_reads_with_read(
    log: &DurableLog,
    offsets: &[u64],
    expected: u64,
    figures: &mut Figures,
) -> Result<()> {
    let start = Instant::now();
    let mut sum = 0u64;
    for &offset in offsets {
        sum = sum.wrapping_add(log.read_with(offset, PointRead::Read)?);
    }
    let elapsed = start.elapsed();
    if sum != expected {
        return Err(error("read(offset, 1) returned wrong records"));
    }
    figures.add("w4.read", DurableLog::NAME, rate(offsets.len(), elapsed));
    Ok(())
}

/// W6: `W6_THREADS` threads append the batches (thread `t` takes batches
/// `t`, `t + W6_THREADS`, …) to one partition with `Durability::Sync`;
/// returns records per second, and the batches each group-commit fsync
/// covered on average (from the partition's own counters).
fn group_commit(dir: &Path, records: &[Bytes]) -> Result<(f64, f64)> {
    let log = DurableLog::open(dir, Mode::Synced)?;
    let partition = log.partition().clone();
    let batches: Vec<&[Bytes]> = records.chunks(BATCH_RECORDS).collect();
    let start = Instant::now();
    thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = (0..W6_THREADS)
            .map(|t| {
                let partition = partition.clone();
                let batches = &batches;
                scope.spawn(move || -> Result<()> {
                    let mut batch = Vec::with_capacity(BATCH_RECORDS);
                    for payloads in batches.iter().skip(t).step_by(W6_THREADS) {
                        batch.clear();
                        batch.extend(payloads.iter().map(|p| Record::new(p.clone())));
                        partition.append(&batch)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for worker in workers {
            worker.join().expect("W6 appender panicked")?;
        }
        Ok(())
    })?;
    let elapsed = start.elapsed();
    if partition.end_offset() != records.len() as u64 {
        return Err(error("W6 appended a wrong number of records"));
    }
    let group = partition.stats().average_group_commit();
    log.close()?;
    Ok((rate(records.len(), elapsed), group))
}

/// W7's latencies in microseconds, one per record.
struct Latencies {
    /// From `append` returning to the tailing reader holding the record.
    log_returned: Vec<f64>,
    /// From just before `append` was called to the reader holding it.
    log_called: Vec<f64>,
    /// Records the reader held before `append` had returned (their
    /// `log_returned` latency counts as 0).
    log_early: usize,
    /// From `send` returning to `recv` returning it.
    mpsc_returned: Vec<f64>,
    /// From just before `send` was called to `recv` returning it.
    mpsc_called: Vec<f64>,
}

/// Nanoseconds since `base`, for stamps shared between threads.
fn stamp(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Waits until `deadline`: paces the appends. Sleeps when far off, then
/// yields rather than spins, so that on a machine with few cores the reader
/// is not kept off a core by the waiting writer.
fn pace_until(deadline: Instant) {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        let left = deadline - now;
        if left > Duration::from_micros(200) {
            thread::sleep(left - Duration::from_micros(100));
        } else {
            thread::yield_now();
        }
    }
}

/// Shared stamps of one W7 run.
struct Stamps {
    called: Vec<AtomicU64>,
    returned: Vec<AtomicU64>,
    seen: Vec<AtomicU64>,
}

impl Stamps {
    fn new(count: usize) -> Stamps {
        let zeros = || (0..count).map(|_| AtomicU64::new(0)).collect();
        Stamps {
            called: zeros(),
            returned: zeros(),
            seen: zeros(),
        }
    }

    /// (from return, from call) latencies in microseconds, and how many
    /// records were seen before their append returned.
    fn latencies(&self) -> (Vec<f64>, Vec<f64>, usize) {
        let mut early = 0;
        let mut from_return = Vec::with_capacity(self.seen.len());
        let mut from_call = Vec::with_capacity(self.seen.len());
        for i in 0..self.seen.len() {
            let seen = self.seen[i].load(Ordering::Relaxed);
            let returned = self.returned[i].load(Ordering::Relaxed);
            let called = self.called[i].load(Ordering::Relaxed);
            if seen < returned {
                early += 1;
            }
            from_return.push(seen.saturating_sub(returned) as f64 / 1e3);
            from_call.push(seen.saturating_sub(called) as f64 / 1e3);
        }
        (from_return, from_call, early)
    }
}

/// W7: one thread appends `count` single-record batches, one every
/// `pace_us` microseconds, with `Durability::None`; another tails the
/// partition with `wait_for` and a `Reader`. Then the same two threads
/// hand the same records over an `mpsc` channel.
fn tail_latency(dir: &Path, records: &[Bytes], count: usize, pace_us: u64) -> Result<Latencies> {
    let pace = Duration::from_micros(pace_us);
    let payload = |i: usize| records[i % records.len()].clone();

    let log = DurableLog::open(dir, Mode::Buffered)?;
    let partition = log.partition().clone();
    let stamps = Stamps::new(count);
    let base = Instant::now();
    thread::scope(|scope| -> Result<()> {
        let reader = scope.spawn(|| tail(&partition, count as u64, &stamps, base));
        let start = Instant::now();
        for i in 0..count {
            pace_until(start + pace * u32::try_from(i)?);
            let record = Record::new(payload(i));
            stamps.called[i].store(stamp(base), Ordering::Relaxed);
            partition.append(std::slice::from_ref(&record))?;
            stamps.returned[i].store(stamp(base), Ordering::Relaxed);
        }
        reader.join().expect("W7 reader panicked")
    })?;
    log.close()?;
    let (log_returned, log_called, log_early) = stamps.latencies();

    let stamps = Stamps::new(count);
    let base = Instant::now();
    let (sender, receiver) = mpsc::channel::<Bytes>();
    thread::scope(|scope| -> Result<()> {
        let stamps = &stamps;
        let reader = scope.spawn(move || {
            for i in 0..count {
                let value = receiver.recv().expect("the sender outlives the reads");
                std::hint::black_box(value);
                stamps.seen[i].store(stamp(base), Ordering::Relaxed);
            }
        });
        let start = Instant::now();
        for i in 0..count {
            pace_until(start + pace * u32::try_from(i)?);
            let value = payload(i);
            stamps.called[i].store(stamp(base), Ordering::Relaxed);
            sender.send(value)?;
            stamps.returned[i].store(stamp(base), Ordering::Relaxed);
        }
        reader.join().expect("W7 channel reader panicked");
        Ok(())
    })?;
    let (mpsc_returned, mpsc_called, _) = stamps.latencies();
    Ok(Latencies {
        log_returned,
        log_called,
        log_early,
        mpsc_returned,
        mpsc_called,
    })
}

/// The tailing reader of W7: reads offsets `0..count` as they appear,
/// stamping each.
fn tail(partition: &Partition, count: u64, stamps: &Stamps, base: Instant) -> Result<()> {
    let mut reader = partition.reader(0);
    while reader.next_offset() < count {
        match reader.next() {
            Some(record) => {
                let record = record?;
                let at = stamp(base);
                let index = usize::try_from(record.offset)?;
                std::hint::black_box(record.value);
                stamps.seen[index].store(at, Ordering::Relaxed);
            }
            None => {
                partition.wait_for(reader.next_offset(), TAIL_WAIT)?;
            }
        }
    }
    Ok(())
}

/// W1 and W3 with `compression`: records per second, and the bytes the
/// partition's segments take.
fn compressed(
    dir: &Path,
    records: &[Bytes],
    compression: Compression,
    label: &str,
    figures: &mut Figures,
) -> Result<()> {
    let name = DurableLog::NAME;
    let config = DurableLog::config(Mode::Buffered).compression(compression);
    assert_eq!(config.durability, Durability::None);
    let mut log = DurableLog::open_with(dir, config.clone())?;
    let times = log.append_then_sync(records)?;
    figures.add(
        &format!("codec.{label}.w1"),
        name,
        rate(records.len(), times.appended),
    );
    figures.add(
        &format!("codec.{label}.w1_sync"),
        name,
        rate(records.len(), times.synced),
    );
    let segment_bytes = log.partition().size_bytes();
    log.close()?;
    figures.add(
        &format!("codec.{label}.segment_mb"),
        name,
        segment_bytes as f64 / 1e6,
    );
    figures.add(
        &format!("codec.{label}.disk_mb"),
        name,
        disk_bytes(dir)? as f64 / 1e6,
    );

    let mut log = DurableLog::open_with(dir, config)?;
    let start = Instant::now();
    let digest = log.scan(Check::Touch)?;
    let elapsed = start.elapsed();
    if digest != Digest::of(Check::Touch, records) {
        return Err(error(format!("{label}: the scan returned wrong records")));
    }
    figures.add(
        &format!("codec.{label}.w3"),
        name,
        rate(records.len(), elapsed),
    );
    log.close()?;
    Ok(())
}

/// lz4_flex's `compress_prepend_size` on the workload's records, 100 at a
/// time (their values back to back), as durable-log compresses a batch's
/// records: records per second and the compression ratio.
fn lz4_blocks(records: &[Bytes]) -> (f64, f64) {
    let blocks: Vec<Vec<u8>> = records
        .chunks(BATCH_RECORDS)
        .map(|batch| batch.concat())
        .collect();
    let start = Instant::now();
    let mut compressed = 0usize;
    for block in &blocks {
        compressed += std::hint::black_box(lz4_flex::block::compress_prepend_size(block)).len();
    }
    let elapsed = start.elapsed();
    let raw: usize = blocks.iter().map(Vec::len).sum();
    (rate(records.len(), elapsed), raw as f64 / compressed as f64)
}
