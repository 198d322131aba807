//! The log as a durable in-process queue.
//!
//! A producer thread appends records in batches of 100 while a consumer
//! thread tails the partition and checks that it sees every record once, in
//! order. Then the log is closed, reopened, and read back from the start.
//!
//! ```text
//! cargo run --release --example quickstart [DIR]
//! ```
//!
//! The log lives in `DIR`, `./quickstart-data` by default. A log left there
//! by an earlier run is removed first, so every run starts empty; a directory
//! that holds anything else is refused. `QUICKSTART_RECORDS` sets how many
//! records to append (default 100,000).
//!
//! Exits with a non-zero status if any record is missing or out of order.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use durable_log::{Config, Log, Partition, Record};

const DEFAULT_RECORDS: u64 = 100_000;
const BATCH_RECORDS: u64 = 100;
/// Bytes of payload after the 8-byte sequence number, so a record is about
/// the size of a short log line.
const FILLER_BYTES: usize = 92;

type AnyResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("\nFAILED: records are missing or out of order (see above).");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("\nerror: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Returns whether every check passed.
fn run() -> AnyResult<bool> {
    let dir = std::env::args_os()
        .nth(1)
        .map_or_else(|| PathBuf::from("quickstart-data"), PathBuf::from);
    let records = match std::env::var("QUICKSTART_RECORDS") {
        Ok(n) => n.parse::<u64>()?.max(1),
        Err(_) => DEFAULT_RECORDS,
    };
    prepare(&dir)?;
    let shown = std::path::absolute(&dir).unwrap_or_else(|_| dir.clone());
    println!("durable-log quickstart");
    println!("  log directory: {}", shown.display());
    println!(
        "  {records} records of {} bytes, in batches of {BATCH_RECORDS}, durability: Sync (the default)",
        8 + FILLER_BYTES
    );

    // Part 1: a producer and a consumer share one partition.
    let log = Log::open(&dir, Config::default())?;
    let partition = log.partition(0)?;
    let producer_done = AtomicBool::new(false);
    let started = Instant::now();
    let (produced, consumed) = thread::scope(|s| {
        let producer = s.spawn(|| {
            let result = produce(&partition, records);
            producer_done.store(true, Ordering::Release);
            result
        });
        let consumer = s.spawn(|| consume(&partition, records, &producer_done));
        (join(producer), join(consumer))
    });
    let produced = produced?;
    let consumed = consumed?;
    let elapsed = started.elapsed();

    println!("\nProducer");
    println!(
        "  appended {} records in {} batches in {:.2} s: {:.0} records/s, {:.1} MB/s of payload",
        produced.records,
        produced.batches,
        produced.elapsed.as_secs_f64(),
        per_second(produced.records, produced.elapsed),
        per_second(
            produced.records * (8 + FILLER_BYTES) as u64,
            produced.elapsed
        ) / 1e6,
    );
    println!(
        "  every append returned after its batch was fsynced (durable offset now {})",
        partition.durable_offset()
    );
    println!("\nConsumer (tailing with wait_for + reader)");
    println!(
        "  saw {} records, offsets {} to {}, {}",
        consumed.records,
        consumed.first.map_or("-".into(), |o| o.to_string()),
        consumed.last.map_or("-".into(), |o| o.to_string()),
        if consumed.problems == 0 {
            "each once and in order".to_string()
        } else {
            format!("with {} problems", consumed.problems)
        }
    );
    println!(
        "  woke up {} times; finished {:.2} s after the start",
        consumed.wakeups,
        elapsed.as_secs_f64()
    );
    println!(
        "\nOn disk: {} bytes in {} segment(s)",
        partition.size_bytes(),
        partition.segment_count()
    );
    let mut ok =
        produced.records == records && consumed.records == records && consumed.problems == 0;

    // Part 2: close cleanly, reopen, and check everything is still there.
    drop(partition);
    log.close()?;
    println!("\nClosed the log; reopening it.");
    let log = Log::open(&dir, Config::default())?;
    let report = &log.recovery_reports()[0];
    println!(
        "  recovery report: clean={}, segments scanned={}, indexes rebuilt={}, bytes truncated={}",
        report.clean, report.segments_scanned, report.indexes_rebuilt, report.truncated_bytes
    );
    let partition = log.partition(0)?;
    let reread = check_all(&partition, records)?;
    println!(
        "  read back {} records, offsets {} to {} (start offset {}, end offset {}), {}",
        reread.records,
        reread.first.map_or("-".into(), |o| o.to_string()),
        reread.last.map_or("-".into(), |o| o.to_string()),
        partition.start_offset(),
        partition.end_offset(),
        if reread.problems == 0 {
            "all in order".to_string()
        } else {
            format!("with {} problems", reread.problems)
        }
    );
    ok &= report.clean && reread.records == records && reread.problems == 0;
    log.close()?;

    if ok {
        println!(
            "\nOK: every record appended was read once, in order, before and after reopening."
        );
        println!(
            "The files are left in {} for a look (FORMAT.md describes them).",
            shown.display()
        );
    }
    Ok(ok)
}

/// Removes a log left by an earlier run. Anything else in the way is refused
/// rather than deleted.
fn prepare(dir: &Path) -> AnyResult<()> {
    if !dir.exists() {
        return Ok(());
    }
    let is_log = dir.join("meta").is_file();
    let is_empty = dir.is_dir() && std::fs::read_dir(dir)?.next().is_none();
    if is_log || is_empty {
        std::fs::remove_dir_all(dir)?;
        return Ok(());
    }
    Err(format!(
        "{} exists and is not a log from an earlier run; pass another directory",
        dir.display()
    )
    .into())
}

fn join<T>(handle: thread::ScopedJoinHandle<'_, AnyResult<T>>) -> AnyResult<T> {
    handle
        .join()
        .unwrap_or_else(|_| Err("a thread panicked".into()))
}

struct Produced {
    records: u64,
    batches: u64,
    elapsed: Duration,
}

/// Appends `records` records numbered from 0, in batches. Each record's
/// value starts with its number, so a reader can check it against the
/// offset the log gave it.
fn produce(partition: &Partition, records: u64) -> AnyResult<Produced> {
    let filler = vec![b'.'; FILLER_BYTES];
    let started = Instant::now();
    let mut next = 0u64;
    let mut batches = 0u64;
    while next < records {
        let count = BATCH_RECORDS.min(records - next);
        let batch: Vec<Record> = (next..next + count)
            .map(|n| {
                let mut value = n.to_le_bytes().to_vec();
                value.extend_from_slice(&filler);
                Record::new(value).with_key(format!("sensor-{}", n % 8))
            })
            .collect();
        let appended = partition.append(&batch)?;
        if appended.base_offset != next || appended.last_offset != next + count - 1 {
            return Err(format!(
                "expected offsets {next}..={}, got {}..={}",
                next + count - 1,
                appended.base_offset,
                appended.last_offset
            )
            .into());
        }
        next += count;
        batches += 1;
    }
    Ok(Produced {
        records: next,
        batches,
        elapsed: started.elapsed(),
    })
}

#[derive(Default)]
struct Seen {
    records: u64,
    first: Option<u64>,
    last: Option<u64>,
    problems: u64,
    wakeups: u64,
}

impl Seen {
    /// Checks one record against the offset expected next.
    fn check(&mut self, offset: u64, value: Option<&[u8]>) {
        let expected = self.last.map_or(0, |last| last + 1);
        let number = value
            .and_then(|v| v.get(..8))
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
        if offset != expected || number != Some(offset) {
            if self.problems < 5 {
                eprintln!(
                    "  problem: expected offset {expected}, got offset {offset} holding record {number:?}"
                );
            }
            self.problems += 1;
        }
        self.first.get_or_insert(offset);
        self.last = Some(offset);
        self.records += 1;
    }
}

/// Tails the partition until `records` records were seen, or the producer
/// stopped and nothing more is coming.
fn consume(partition: &Partition, records: u64, producer_done: &AtomicBool) -> AnyResult<Seen> {
    let mut seen = Seen::default();
    let mut reader = partition.reader(0);
    while seen.records < records {
        let next = reader.next_offset();
        // Blocks until a record at `next` exists; the timeout only lets the
        // loop notice a producer that stopped early.
        if !partition.wait_for(next, Duration::from_millis(100))? {
            if producer_done.load(Ordering::Acquire) && partition.end_offset() <= next {
                break;
            }
            continue;
        }
        seen.wakeups += 1;
        // The reader ends at the current end offset; the next call to
        // `next` after that picks up records appended since.
        for record in reader.by_ref() {
            let record = record?;
            seen.check(record.offset, record.value.as_deref());
        }
    }
    Ok(seen)
}

/// Reads the whole partition from its start offset.
fn check_all(partition: &Partition, records: u64) -> AnyResult<Seen> {
    let mut seen = Seen::default();
    for record in partition.reader(partition.start_offset()) {
        let record = record?;
        seen.check(record.offset, record.value.as_deref());
    }
    if seen.records != records {
        eprintln!(
            "  problem: {} records were appended, {} are there",
            records, seen.records
        );
    }
    Ok(seen)
}

fn per_second(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}
