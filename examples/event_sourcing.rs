//! A compacted log as a key-value changelog: the balances of bank accounts.
//!
//! Every change to an account appends a record keyed by the account, holding
//! its new balance; closing an account appends a tombstone (a record without
//! a value). With `Cleanup::Compact` the log keeps only the latest record of
//! each account, so replaying it from the start rebuilds the current state
//! however long the history grows — the state store of an event-sourced
//! service, or the changelog behind a cache.
//!
//! The example writes the history through a `Producer`, compacts, closes,
//! reopens, rebuilds the balances by reading every partition from its start,
//! and checks them against the balances it kept in memory.
//!
//! ```text
//! cargo run --release --example event_sourcing [DIR]
//! ```
//!
//! The log lives in `DIR` (which must not exist yet, or be empty), or in a
//! temporary directory that is removed at the end. Exits with a non-zero
//! status if the rebuilt state differs.

use std::collections::HashMap;
use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use durable_log::{Cleanup, Config, Log, Producer, ProducerConfig, Record};

const PARTITIONS: u32 = 4;
const ACCOUNTS: u64 = 1_000;
const TRANSFERS: u64 = 50_000;
const CLOSED_ACCOUNTS: u64 = 100;
const OPENING_BALANCE: i64 = 1_000;

type AnyResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("\nFAILED: the rebuilt state differs from the one written.");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("\nerror: {e}");
            ExitCode::FAILURE
        }
    }
}

/// xorshift64*: a fixed sequence of transfers, the same on every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

fn account(id: u64) -> String {
    format!("account-{id:04}")
}

/// The log's settings: compacted, with small segments so that most of the
/// history is in closed segments, which are the ones compaction cleans.
fn config() -> Config {
    Config::default()
        .partitions(PARTITIONS)
        .cleanup(Cleanup::Compact)
        .segment_bytes(64 * 1024)
        // Deletes stay in the log for a day after the clean that first sees
        // them, so that a consumer replaying it meanwhile sees them too.
        .delete_retention(Duration::from_secs(24 * 60 * 60))
}

/// Rebuilds the balances by reading every partition from its start: the
/// latest record of each account wins, and a tombstone removes it.
fn rebuild(log: &Log) -> AnyResult<(HashMap<String, i64>, u64)> {
    let mut state = HashMap::new();
    let mut records = 0;
    for id in 0..log.partition_count() {
        let partition = log.partition(id)?;
        for record in partition.reader(partition.start_offset()) {
            let record = record?;
            records += 1;
            let key = String::from_utf8(record.key.map(|k| k.to_vec()).unwrap_or_default())?;
            match record.value {
                Some(value) => {
                    state.insert(key, std::str::from_utf8(&value)?.parse::<i64>()?);
                }
                None => {
                    state.remove(&key);
                }
            }
        }
    }
    Ok((state, records))
}

/// Returns whether the rebuilt state matched.
fn run() -> AnyResult<bool> {
    let temp;
    let dir = match std::env::args_os().nth(1) {
        Some(dir) => PathBuf::from(dir),
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_path_buf()
        }
    };
    let started = Instant::now();
    println!("durable-log event sourcing: account balances in a compacted log");
    println!("log directory: {}", dir.display());

    let log = Log::open(&dir, config())?;
    let producer = Producer::new(&log, ProducerConfig::default())?;
    let mut balances: HashMap<String, i64> = HashMap::new();
    let mut sent = Vec::new();
    let mut set = |balances: &mut HashMap<String, i64>, id: u64, balance: i64| {
        balances.insert(account(id), balance);
        producer
            .send(Record::new(balance.to_string()).with_key(account(id)))
            .map(|handle| sent.push(handle))
    };
    for id in 0..ACCOUNTS {
        set(&mut balances, id, OPENING_BALANCE)?;
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..TRANSFERS {
        let from = rng.below(ACCOUNTS);
        let to = rng.below(ACCOUNTS);
        let amount = rng.below(100) as i64;
        if from == to || balances[&account(from)] < amount {
            continue;
        }
        let (a, b) = (balances[&account(from)], balances[&account(to)]);
        set(&mut balances, from, a - amount)?;
        set(&mut balances, to, b + amount)?;
    }
    // Close some accounts: a tombstone deletes the key.
    for id in (0..ACCOUNTS).step_by((ACCOUNTS / CLOSED_ACCOUNTS) as usize) {
        balances.remove(&account(id));
        sent.push(producer.send(Record::tombstone(account(id)))?);
    }
    producer.close()?;
    // Each record's outcome: appended, and durable by the log's setting.
    for handle in sent {
        handle.wait()?;
    }

    let (_, before) = rebuild(&log)?;
    let report = log.compact()?;
    let (_, after) = rebuild(&log)?;
    println!(
        "history: {before} records; after compaction: {after} records \
         ({} removed, {} segments rewritten into {}, {} KiB -> {} KiB; \
         the active segment of each partition is never cleaned)",
        report.records_removed,
        report.segments_cleaned,
        report.segments_written,
        report.bytes_before / 1024,
        report.bytes_after / 1024,
    );
    log.close()?;

    // A restart: the state is whatever replaying the log gives.
    let log = Log::open(&dir, config())?;
    let (rebuilt, replayed) = rebuild(&log)?;
    log.close()?;
    println!("after reopening: replayed {replayed} records");

    let total: i64 = rebuilt.values().sum();
    println!(
        "{} open accounts, {} closed, total balance {total}",
        rebuilt.len(),
        ACCOUNTS as usize - rebuilt.len()
    );
    let mut sorted: Vec<(&String, &i64)> = rebuilt.iter().collect();
    sorted.sort();
    for (key, balance) in sorted.iter().take(5) {
        println!("  {key}: {balance}");
    }
    println!("  …");
    println!("done in {:.2?}", started.elapsed());
    Ok(rebuilt == balances && replayed == after && after < before)
}
