//! Delivery across a real crash: this test binary runs itself again as a
//! consumer process that polls and commits in a fixed pattern, prints what
//! it polled and committed, and then waits to be killed with SIGKILL (so no
//! destructor runs and neither the log nor the offset store is closed). The
//! test then reopens the log and checks, at exact offsets, what a new
//! consumer of the group reads.

#![cfg(feature = "offsets")]
#![cfg(unix)]

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use durable_log::offsets::{AutoOffsetReset, Consumer, ConsumerConfig};
use durable_log::{Config, Log, Record};

/// Set in the consumer process: the log directory.
const CHILD_DIR_ENV: &str = "DURABLE_LOG_CONSUMER_KILL_DIR";
/// Set in the consumer process: which pattern to run.
const CHILD_MODE_ENV: &str = "DURABLE_LOG_CONSUMER_KILL_MODE";
/// Name of the test function that is the consumer.
const CHILD_TEST: &str = "consumer_process";
/// A consumer left behind by a parent that died stops after this long.
const CHILD_LIFETIME: Duration = Duration::from_secs(60);
const RECORDS: u64 = 40;

fn config(mode: &str) -> ConsumerConfig {
    let config = ConsumerConfig::new("g")
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .max_poll_records(10);
    if mode == "auto-commit" {
        config
            .auto_commit(true)
            .auto_commit_interval(Duration::ZERO)
    } else {
        config.auto_commit(false)
    }
}

/// Not a test on its own: the consumer process. Without its environment
/// variables (a normal test run) it returns at once.
#[test]
fn consumer_process() {
    let (Some(dir), Ok(mode)) = (
        std::env::var_os(CHILD_DIR_ENV),
        std::env::var(CHILD_MODE_ENV),
    ) else {
        return;
    };
    let log = Log::open(&dir, Config::default()).expect("child: open");
    let mut c = Consumer::new(&log, config(&mode)).expect("child: consumer");
    c.assign(&[0]).expect("child: assign");
    let poll = |c: &mut Consumer| {
        for r in c.poll(Duration::ZERO).expect("child: poll") {
            println!("POLLED {}", r.offset);
        }
    };
    let commit = |c: &mut Consumer| {
        c.commit_sync().expect("child: commit");
        println!("COMMITTED {}", c.committed(0).unwrap().unwrap());
    };
    match mode.as_str() {
        "process-then-commit" => {
            poll(&mut c);
            // processed
            commit(&mut c);
            poll(&mut c);
            // processed; killed before the commit
        }
        "commit-then-process" => {
            poll(&mut c);
            commit(&mut c);
            // processed
            poll(&mut c);
            commit(&mut c);
            // killed before processing
        }
        "auto-commit" => {
            for _ in 0..3 {
                poll(&mut c);
            }
            println!("COMMITTED {}", c.committed(0).unwrap().unwrap());
        }
        other => panic!("unknown mode {other}"),
    }
    println!("READY");
    std::thread::sleep(CHILD_LIFETIME);
    std::process::exit(4);
}

/// What the consumer process printed before it was killed.
struct Run {
    polled: Vec<u64>,
    committed: Vec<u64>,
}

fn run_and_kill(dir: &Path, mode: &str) -> Run {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads", "1"])
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_MODE_ENV, mode)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the consumer");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
    let mut run = Run {
        polled: Vec::new(),
        committed: Vec::new(),
    };
    let mut ready = false;
    let mut line = String::new();
    while !ready {
        line.clear();
        if stdout.read_line(&mut line).expect("read") == 0 {
            break;
        }
        // The harness may have printed the test's name on the same line.
        let start = ["POLLED", "COMMITTED", "READY"]
            .iter()
            .filter_map(|word| line.find(word))
            .min()
            .unwrap_or(line.len());
        let mut fields = line[start..].split_whitespace();
        match (fields.next(), fields.next().map(str::parse::<u64>)) {
            (Some("POLLED"), Some(Ok(o))) => run.polled.push(o),
            (Some("COMMITTED"), Some(Ok(o))) => run.committed.push(o),
            (Some("READY"), None) => ready = true,
            _ => {}
        }
    }
    child.kill().expect("SIGKILL the consumer");
    let status = child.wait().expect("wait for the consumer");
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    assert!(
        ready && status.code().is_none(),
        "{mode}: the consumer did not get to the kill ({status}):\n{stderr}"
    );
    run
}

/// A log of `RECORDS` records, closed, and what a consumer of the group
/// reads after the consumer process running `mode` was killed.
fn scenario(mode: &str) -> (Run, Option<u64>, Vec<u64>) {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), Config::default()).unwrap();
        let records: Vec<Record> = (0..RECORDS).map(|o| Record::new(format!("r{o}"))).collect();
        log.partition(0).unwrap().append(&records).unwrap();
        log.close().unwrap();
    }
    let run = run_and_kill(dir.path(), mode);
    let log = Log::open(dir.path(), Config::default()).expect("reopen after the kill");
    assert!(
        !log.recovery_reports()[0].clean,
        "{mode}: the kill left a clean log"
    );
    let mut c = Consumer::new(&log, config(mode).auto_commit(false)).unwrap();
    c.assign(&[0]).unwrap();
    let committed = c.committed(0).unwrap();
    let mut read = Vec::new();
    loop {
        let records = c.poll(Duration::ZERO).unwrap();
        if records.is_empty() {
            break;
        }
        read.extend(records.iter().map(|r| r.offset));
    }
    (run, committed, read)
}

#[test]
fn process_then_commit_redelivers_the_uncommitted_records_after_sigkill() {
    let (run, committed, read) = scenario("process-then-commit");
    assert_eq!(run.polled, (0..20).collect::<Vec<_>>());
    assert_eq!(run.committed, [10]);
    assert_eq!(committed, Some(10));
    // 10..20 were processed and are delivered again; nothing is skipped.
    assert_eq!(read, (10..RECORDS).collect::<Vec<_>>());
}

#[test]
fn commit_then_process_skips_the_unprocessed_records_after_sigkill() {
    let (run, committed, read) = scenario("commit-then-process");
    assert_eq!(run.polled, (0..20).collect::<Vec<_>>());
    assert_eq!(run.committed, [10, 20]);
    assert_eq!(committed, Some(20));
    // 10..20 were never processed and are never delivered again.
    assert_eq!(read, (20..RECORDS).collect::<Vec<_>>());
}

#[test]
fn auto_commit_redelivers_the_polls_since_the_last_auto_commit_after_sigkill() {
    let (run, committed, read) = scenario("auto-commit");
    assert_eq!(run.polled, (0..30).collect::<Vec<_>>());
    // The third poll committed what the first two returned.
    assert_eq!(run.committed, [20]);
    assert_eq!(committed, Some(20));
    // Exactly the last poll's records come again.
    assert_eq!(read, (20..RECORDS).collect::<Vec<_>>());
}
