//! Peak memory of a durable-log writer and reader, for a log of 100 MB and
//! one of 1 GB: each runs in a child process (this binary, re-executed with
//! [`CHILD_ENV`] set) so that its peaks are its own.
//!
//! Two figures per child, both from `/proc/self/status`:
//!
//! - the largest `RssAnon` seen (sampled every 1,000 batches or 100,000
//!   records, and at the end): the process's own memory, heap included;
//! - `VmHWM` at the end: the peak resident set, which also counts the pages
//!   of the log's files mapped into the process — page-cache pages, shared
//!   and reclaimable, that the kernel holds whether or not they are mapped.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use durable_log::{Config, Durability, Log, Record};

use crate::stats::Figures;
use crate::subjects::durable::DurableLog;
use crate::subjects::{Result, Subject, error};
use crate::workload::{self, BATCH_RECORDS, RECORD_BYTES};

/// Set to `write` or `read`, makes this binary a memory child.
const CHILD_ENV: &str = "COMPARE_MEMORY_CHILD";
/// The child's log directory.
const CHILD_DIR_ENV: &str = "COMPARE_MEMORY_DIR";
/// Records the writer appends.
const CHILD_RECORDS_ENV: &str = "COMPARE_MEMORY_RECORDS";

/// Distinct records the writer cycles through: its input stays 10 MB
/// whatever the size of the log.
const DISTINCT_RECORDS: usize = 100_000;

/// The name that selects this measurement in `COMPARE_SYSTEMS`.
pub const NAME: &str = "memory";

/// The log sizes measured, in MB of records.
const SIZES_MB: [usize; 2] = [100, 1_000];

/// If this process is a memory child, runs it and exits; otherwise returns.
pub fn run_child_if_asked() {
    let Ok(role) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = PathBuf::from(std::env::var_os(CHILD_DIR_ENV).expect("the child's directory"));
    let records = workload::env_usize(CHILD_RECORDS_ENV, 0);
    let result = match role.as_str() {
        "write" => write(&dir, records),
        "read" => read(&dir, records),
        other => Err(error(format!("unknown memory child {other}"))),
    };
    match result {
        Ok(peak) => {
            println!("{} {}", peak.anon_kib, peak.hwm_kib);
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("memory child {role}: {e}");
            std::process::exit(1);
        }
    }
}

/// Peaks of one child, in KiB.
#[derive(Debug, Default, Clone, Copy)]
struct Peak {
    anon_kib: u64,
    hwm_kib: u64,
}

impl Peak {
    fn sample(&mut self) -> Result<()> {
        self.anon_kib = self.anon_kib.max(status_kib("RssAnon:")?);
        Ok(())
    }

    fn finish(mut self) -> Result<Peak> {
        self.sample()?;
        self.hwm_kib = status_kib("VmHWM:")?;
        Ok(self)
    }
}

/// A `/proc/self/status` field given in kB.
fn status_kib(field: &str) -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse().ok())
        .ok_or_else(|| error(format!("no {field} in /proc/self/status")))
}

fn config() -> Config {
    DurableLog::config(crate::subjects::Mode::Buffered)
}

/// Appends `count` records in batches of 100, then closes the log.
fn write(dir: &Path, count: usize) -> Result<Peak> {
    let payloads = workload::records(DISTINCT_RECORDS);
    let mut peak = Peak::default();
    peak.sample()?;
    let log = Log::open(dir, config())?;
    assert_eq!(log.config().durability, Durability::None);
    let partition = log.partition(0)?;
    let mut batch: Vec<Record> = Vec::with_capacity(BATCH_RECORDS);
    let payloads = payloads.iter().cycle().take(count);
    for (i, payload) in payloads.enumerate() {
        batch.push(Record::new(Bytes::clone(payload)));
        if batch.len() == BATCH_RECORDS {
            partition.append(&batch)?;
            batch.clear();
            if (i + 1).is_multiple_of(1_000 * BATCH_RECORDS) {
                peak.sample()?;
            }
        }
    }
    if !batch.is_empty() {
        partition.append(&batch)?;
    }
    peak.sample()?;
    log.close()?;
    peak.finish()
}

/// Opens the log and reads every record with a `Reader`, checking the
/// count.
fn read(dir: &Path, count: usize) -> Result<Peak> {
    let mut peak = Peak::default();
    let log = Log::open(dir, config())?;
    let partition = log.partition(0)?;
    let mut read = 0usize;
    let mut bytes = 0usize;
    for record in partition.reader(0) {
        let record = record?;
        bytes += record.value.as_ref().map_or(0, Bytes::len);
        read += 1;
        if read.is_multiple_of(100_000) {
            peak.sample()?;
        }
        if read == count {
            break;
        }
    }
    if read != count || bytes != count * RECORD_BYTES {
        return Err(error(format!(
            "read {read} records ({bytes} bytes), {count} written"
        )));
    }
    let peak = peak.finish()?;
    drop(partition);
    log.close()?;
    Ok(peak)
}

/// Runs a writer and then a reader child for each size in [`SIZES_MB`],
/// under `dir`, and records their peaks in MiB.
pub fn measure(dir: &Path, figures: &mut Figures) -> Result<()> {
    for mb in SIZES_MB {
        let records = mb * 1_000_000 / RECORD_BYTES;
        let log_dir = dir.join(format!("memory-{mb}"));
        let _ = std::fs::remove_dir_all(&log_dir);
        for role in ["write", "read"] {
            let output = Command::new(std::env::current_exe()?)
                .env(CHILD_ENV, role)
                .env(CHILD_DIR_ENV, &log_dir)
                .env(CHILD_RECORDS_ENV, records.to_string())
                .output()?;
            std::io::stderr().write_all(&output.stderr)?;
            if !output.status.success() {
                return Err(error(format!("memory child {role} ({mb} MB) failed")));
            }
            let text = String::from_utf8_lossy(&output.stdout);
            let numbers: Vec<u64> = text
                .split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect();
            let [anon_kib, hwm_kib] = numbers[..] else {
                return Err(error(format!("memory child {role} printed {text:?}")));
            };
            let name = DurableLog::NAME;
            figures.add(
                &format!("memory.{role}.{mb}.anon_mib"),
                name,
                anon_kib as f64 / 1024.0,
            );
            figures.add(
                &format!("memory.{role}.{mb}.hwm_mib"),
                name,
                hwm_kib as f64 / 1024.0,
            );
        }
        std::fs::remove_dir_all(&log_dir)?;
    }
    Ok(())
}
