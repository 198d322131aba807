//! Three consumers of one group share a log's partitions through the
//! in-process group coordinator, while a producer thread appends records.
//! Midway one consumer stops polling, as a hung or crashed process would;
//! once its session times out, its partitions move to the two others, which
//! go on from its last commits. Every change of ownership is printed.
//!
//! ```text
//! cargo run --release --example consumer_group
//! ```
//!
//! The log lives in a temporary directory. `CONSUMER_GROUP_RECORDS` sets
//! how many records the producer appends (default 5,000).
//!
//! At the end the example prints how many records were processed, and how
//! many of them more than once (the stopped consumer's records since its
//! last auto-commit are processed again by their new owners). It exits with
//! a non-zero status if any record was never processed.

use std::collections::BTreeMap;
use std::error::Error;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use durable_log::offsets::{
    AutoOffsetReset, Consumer, ConsumerConfig, GroupConfig, GroupCoordinator,
};
use durable_log::{Config, Log, Record};

const PARTITIONS: u32 = 6;
const DEFAULT_RECORDS: u64 = 5_000;
const BATCH_RECORDS: u64 = 50;
const SESSION_TIMEOUT: Duration = Duration::from_secs(2);
/// When the second consumer stops polling, after it started.
const STOP_AFTER: Duration = Duration::from_millis(1_500);
/// How long the survivors may take to process everything before the
/// example gives up.
const DEADLINE: Duration = Duration::from_secs(30);

/// How often each (partition, offset) was processed.
type Processed = Mutex<BTreeMap<(u32, u64), u32>>;

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn records_to_produce() -> u64 {
    std::env::var("CONSUMER_GROUP_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_RECORDS)
}

fn run() -> Result<bool, Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let log = Log::open(dir.path(), Config::default().partitions(PARTITIONS))?;
    let groups = GroupCoordinator::new(
        PARTITIONS,
        GroupConfig::default()
            .session_timeout(SESSION_TIMEOUT)
            .rebalance_timeout(Duration::from_secs(10))
            // The three consumers start together: one generation for all.
            .initial_rebalance_delay(Duration::from_millis(300)),
    )?;
    let total = records_to_produce();
    let produced = AtomicBool::new(false);
    let processed: Processed = Mutex::new(BTreeMap::new());
    let started = Instant::now();

    thread::scope(|s| -> Result<(), Box<dyn Error>> {
        let producer = s.spawn(|| produce(&log, total, &produced));
        let consumers: Vec<_> = (1..=3)
            .map(|n| {
                let (log, groups, produced, processed) = (&log, &groups, &produced, &processed);
                s.spawn(move || consume(n, log, groups, produced, processed, started))
            })
            .collect();
        let producer_result = producer.join().map_err(|_| "the producer panicked")?;
        producer_result?;
        for consumer in consumers {
            consumer.join().map_err(|_| "a consumer panicked")??;
        }
        Ok(())
    })?;

    let processed = processed
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    let mut missing = 0u64;
    let mut duplicates = 0u64;
    let mut stored = 0u64;
    for p in 0..PARTITIONS {
        let end = log.partition(p)?.end_offset();
        stored += end;
        for offset in 0..end {
            match processed.get(&(p, offset)) {
                None => missing += 1,
                Some(&times) => duplicates += u64::from(times.saturating_sub(1)),
            }
        }
    }
    println!(
        "{stored} records stored, {} processed at least once, {duplicates} processed again, {missing} never processed",
        stored - missing
    );
    log.close()?;
    Ok(missing == 0 && stored == total)
}

fn produce(log: &Log, total: u64, produced: &AtomicBool) -> durable_log::Result<()> {
    let mut sent = 0;
    while sent < total {
        let batch = BATCH_RECORDS.min(total - sent);
        for i in sent..sent + batch {
            log.append(Record::new(format!("record {i}")).with_key(format!("key-{i}")))?;
        }
        sent += batch;
        thread::sleep(Duration::from_millis(30));
    }
    produced.store(true, Ordering::Release);
    println!("producer: {total} records appended");
    Ok(())
}

fn consume(
    n: u32,
    log: &Log,
    groups: &GroupCoordinator,
    produced: &AtomicBool,
    processed: &Processed,
    started: Instant,
) -> durable_log::Result<()> {
    let name = format!("consumer-{n}");
    let config = ConsumerConfig::new("example")
        .client_id(name.clone())
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .auto_commit_interval(Duration::from_millis(200))
        .heartbeat_interval(Duration::from_millis(200));
    let mut consumer = Consumer::new(log, config)?;
    consumer.subscribe(groups)?;
    let mut owned: (Option<u32>, Vec<u32>) = (None, Vec::new());
    loop {
        if n == 2 && started.elapsed() >= STOP_AFTER {
            println!(
                "[{name}] stops polling at {:.1} s, holding {:?}",
                started.elapsed().as_secs_f64(),
                owned.1
            );
            // A hung process: no more polls, no commit, no leave.
            while started.elapsed() < DEADLINE && !all_processed(log, produced, processed) {
                thread::sleep(Duration::from_millis(100));
            }
            drop(consumer);
            return Ok(());
        }
        let records = consumer.poll(Duration::from_millis(100))?;
        let mut assignment = consumer.assignment();
        assignment.sort_unstable();
        let now = (consumer.generation(), assignment);
        if now != owned {
            owned = now;
            println!(
                "[{name}] {:>4.1} s  generation {}  owns {:?}",
                started.elapsed().as_secs_f64(),
                owned.0.map_or_else(|| "-".to_owned(), |g| g.to_string()),
                owned.1
            );
        }
        {
            let mut processed = processed.lock().unwrap_or_else(PoisonError::into_inner);
            for r in &records {
                *processed.entry((r.partition, r.offset)).or_insert(0) += 1;
            }
        }
        if started.elapsed() >= DEADLINE || all_processed(log, produced, processed) {
            break;
        }
    }
    consumer.close()
}

/// Whether the producer is done and every record it appended was
/// processed.
fn all_processed(log: &Log, produced: &AtomicBool, processed: &Processed) -> bool {
    if !produced.load(Ordering::Acquire) {
        return false;
    }
    let processed = processed.lock().unwrap_or_else(PoisonError::into_inner);
    (0..PARTITIONS).all(|p| {
        log.partition(p)
            .map(|partition| (0..partition.end_offset()).all(|o| processed.contains_key(&(p, o))))
            .unwrap_or(true)
    })
}
