//! Reopen time after a clean and after an unclean shutdown.
//!
//! A log of at least `DURABLE_LOG_BENCH_RECOVERY_BYTES` (default 1 GiB) is
//! built once per run, with segments of
//! `DURABLE_LOG_BENCH_RECOVERY_SEGMENT_BYTES` (default 256 MiB) so there are
//! several, in a temporary directory under `DURABLE_LOG_BENCH_DIR` (default
//! `./target/bench-data`). It is built by a child process (this bench binary
//! run again with `DURABLE_LOG_BENCH_RECOVERY_CHILD` naming the directory)
//! that appends until its last segment is full, says `ready`, and is killed
//! with SIGKILL: the log's last shutdown is unclean, and its last segment has
//! to be scanned. Measured:
//!
//! - `reopen/clean_open` and `reopen/clean_open_close`: `Log::open` (and
//!   `Log::close`) of the log after a clean close, which reads no segment
//!   data;
//! - `reopen/unclean_open`: `Log::open` of the log as the killed child left
//!   it.
//!
//! Every open rewrites the partition's `checkpoint` (clearing the clean
//! mark), an unclean one also recreates the last segment's `.index` and
//! `.timeindex` from its scan, and the close that follows marks the log
//! clean again, trims the indexes and may write other state files. So the
//! unclean state is saved right after the kill — every file of the partition
//! but the segments' `.log` files — and put back, untimed, before every
//! unclean open, with any file created since removed. The `.log` files are
//! not changed by these reopens (a kill between appends leaves no torn
//! tail), which the restore checks.
//!
//! The segment data is in the page cache, so the unclean figure is the cost
//! of reading and checking the last segment from memory, not from the disk.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use criterion::{BatchSize, Criterion, SamplingMode, criterion_group};
mod common;

use common::{SplitMix64, log_line};
use durable_log::{Config, Durability, Log, Partition, Record};
use tempfile::TempDir;

/// Set (to the log directory) in the child process that builds the log.
const CHILD_ENV: &str = "DURABLE_LOG_BENCH_RECOVERY_CHILD";
/// Records per appended batch.
const BATCH_RECORDS: usize = 100;
const DEFAULT_LOG_BYTES: u64 = 1024 * 1024 * 1024;
const DEFAULT_SEGMENT_BYTES: u64 = 256 * 1024 * 1024;

fn env_bytes(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} is a number")))
        .unwrap_or(default)
}

fn log_bytes() -> u64 {
    env_bytes("DURABLE_LOG_BENCH_RECOVERY_BYTES", DEFAULT_LOG_BYTES).max(1)
}

fn config() -> Config {
    Config::default()
        .segment_bytes(env_bytes(
            "DURABLE_LOG_BENCH_RECOVERY_SEGMENT_BYTES",
            DEFAULT_SEGMENT_BYTES,
        ))
        .retention_age(None)
        .retention_bytes(None)
        .durability(Durability::None)
}

fn bench_root() -> PathBuf {
    let root = std::env::var_os("DURABLE_LOG_BENCH_DIR")
        .map_or_else(|| PathBuf::from("target/bench-data"), PathBuf::from);
    std::fs::create_dir_all(&root).expect("create the bench data directory");
    root
}

/// The child: fills the log until it holds at least `log_bytes()` and its
/// last segment is full, reports, then waits to be killed. If the parent
/// goes away first (its end of stdin closes), it exits without closing the
/// log, which is just as unclean.
fn child_build(dir: &Path) -> ! {
    let config = config();
    let segment_bytes = config.segment_bytes;
    let log = Log::open(dir, config).expect("open");
    let partition = log.partition(0).expect("partition 0");
    let mut rng = SplitMix64(0x5EED_0005);
    let start_ms = 1_700_000_000_000u64;
    let mut next_offset = 0u64;
    let mut append = |partition: &Partition| {
        let batch: Vec<Record> = (next_offset..next_offset + BATCH_RECORDS as u64)
            .map(|i| Record::new(log_line(&mut rng, start_ms + i)))
            .collect();
        partition.append(&batch).expect("append");
        next_offset += BATCH_RECORDS as u64;
    };
    append(&partition);
    // Every batch has the same size, so the number that fills a segment
    // exactly (the next one would roll it) is known.
    let batch_bytes = partition.size_bytes();
    let per_segment = (segment_bytes / batch_bytes).max(1);
    let segments = log_bytes().div_ceil(per_segment * batch_bytes);
    for _ in 1..segments * per_segment {
        append(&partition);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "ready {} {} {}",
        partition.end_offset(),
        partition.size_bytes(),
        partition.segment_count()
    )
    .expect("report");
    out.flush().expect("report");
    let mut rest = String::new();
    let _ = std::io::stdin().read_line(&mut rest);
    // Not `drop(log)`: that would close the log cleanly.
    std::process::exit(2);
}

/// Kills the child if the parent panics before it does.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A copy, taken right after the kill, of every file of the partition but
/// the segments' `.log` files, which a reopen of this log leaves alone.
struct Saved {
    partition_dir: PathBuf,
    files: Vec<(String, Vec<u8>)>,
    log_lengths: Vec<(String, u64)>,
}

fn sorted_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list the partition")
        .map(|e| {
            e.expect("list the partition")
                .file_name()
                .into_string()
                .expect("UTF-8 names")
        })
        .collect();
    names.sort();
    names
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).expect("file length").len()
}

impl Saved {
    fn take(partition_dir: &Path) -> Saved {
        let (logs, others): (Vec<String>, Vec<String>) = sorted_names(partition_dir)
            .into_iter()
            .partition(|n| n.ends_with(".log"));
        let files = others
            .into_iter()
            .map(|name| {
                let bytes = std::fs::read(partition_dir.join(&name)).expect("save a file");
                (name, bytes)
            })
            .collect();
        let log_lengths = logs
            .into_iter()
            .map(|name| {
                let len = file_len(&partition_dir.join(&name));
                (name, len)
            })
            .collect();
        Saved {
            partition_dir: partition_dir.to_path_buf(),
            files,
            log_lengths,
        }
    }

    /// Puts the saved files back and removes files created since, after
    /// checking that the segments' `.log` files are as they were.
    fn restore(&self) {
        let names = sorted_names(&self.partition_dir);
        let logs: Vec<(String, u64)> = names
            .iter()
            .filter(|n| n.ends_with(".log"))
            .map(|n| (n.clone(), file_len(&self.partition_dir.join(n))))
            .collect();
        assert_eq!(logs, self.log_lengths, "a reopen changed the segments");
        for name in names.iter().filter(|n| !n.ends_with(".log")) {
            if !self.files.iter().any(|(saved, _)| saved == name) {
                std::fs::remove_file(self.partition_dir.join(name)).expect("remove a new file");
            }
        }
        for (name, bytes) in &self.files {
            std::fs::write(self.partition_dir.join(name), bytes).expect("restore a file");
        }
    }
}

/// The log built by a killed child, with its unclean state saved.
struct Fixture {
    dir: PathBuf,
    saved: Saved,
    _root: TempDir,
}

fn build() -> Fixture {
    let root = tempfile::Builder::new()
        .prefix("recovery-")
        .tempdir_in(bench_root())
        .expect("create a temporary directory");
    let dir = root.path().join("log");
    let exe = std::env::current_exe().expect("the bench binary");
    let child = Command::new(exe)
        .env(CHILD_ENV, &dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the child");
    let mut child = Killed(child);
    let mut line = String::new();
    BufReader::new(child.0.stdout.as_mut().expect("piped"))
        .read_line(&mut line)
        .expect("read the child's report");
    let report: Vec<u64> = line
        .strip_prefix("ready ")
        .unwrap_or_else(|| panic!("the child failed: {line:?}"))
        .split_whitespace()
        .map(|n| n.parse().expect("a number"))
        .collect();
    drop(child);
    println!(
        "recovery bench: {} records, {} bytes in {} segments, writer killed",
        report[0], report[1], report[2]
    );
    let saved = Saved::take(&dir.join("0"));
    Fixture {
        dir,
        saved,
        _root: root,
    }
}

fn reopen(c: &mut Criterion) {
    let fixture = build();
    let dir = fixture.dir.as_path();

    fixture.saved.restore();
    let log = Log::open(dir, config()).expect("unclean open");
    println!("unclean open: {:?}", log.recovery_reports());
    log.close().expect("close");
    let log = Log::open(dir, config()).expect("clean open");
    println!("clean open:   {:?}", log.recovery_reports());
    log.close().expect("close");

    let mut group = c.benchmark_group("reopen");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    // Each iteration closes the log when its output is dropped, untimed,
    // which leaves it clean for the next.
    group.bench_function("clean_open", |b| {
        b.iter_batched(
            || (),
            |()| Log::open(dir, config()).expect("open"),
            BatchSize::PerIteration,
        );
    });
    group.bench_function("clean_open_close", |b| {
        b.iter(|| {
            Log::open(dir, config())
                .expect("open")
                .close()
                .expect("close");
        });
    });
    group.sampling_mode(SamplingMode::Flat);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("unclean_open", |b| {
        b.iter_batched(
            || fixture.saved.restore(),
            |()| Log::open(dir, config()).expect("open"),
            BatchSize::PerIteration,
        );
    });
    group.finish();

    fixture.saved.restore();
    let log = Log::open(dir, config()).expect("unclean open");
    let report = &log.recovery_reports()[0];
    assert!(!report.clean, "the restored state is unclean");
    assert_eq!(
        report.truncated_bytes, 0,
        "a killed writer leaves no torn tail"
    );
    log.close().expect("close");
}

criterion_group!(benches, reopen);

fn main() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        child_build(Path::new(&dir));
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
