//! W5 after a crash: a child process (this binary, re-executed with
//! [`CHILD_ENV`] set) appends batches with a sync per batch and prints the
//! number of records acknowledged after each; the parent kills it with
//! SIGKILL once enough are acknowledged, then times the reopen and checks
//! what came back.

use std::io::{BufRead, BufReader, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::subjects::baseline::Baseline;
use crate::subjects::commitlog::CommitLogSubject;
use crate::subjects::durable::DurableLog;
use crate::subjects::okaywal::OkayWal;
use crate::subjects::raft::RaftEngine;
use crate::subjects::{Mode, Result, Subject, error};
use crate::workload::{self, BATCH_RECORDS, Check, Digest, env_usize};

/// Set to a system's name, makes this binary the crash child.
pub const CHILD_ENV: &str = "COMPARE_CHILD";
/// The child's data directory.
const CHILD_DIR_ENV: &str = "COMPARE_CHILD_DIR";
/// Batches the child appends before it stops and waits to be killed.
const CHILD_BATCHES_ENV: &str = "COMPARE_CHILD_BATCHES";

/// If this process is a crash child, runs it (it never returns: it is
/// killed); otherwise returns.
pub fn run_child_if_asked() {
    let Ok(system) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = PathBuf::from(std::env::var_os(CHILD_DIR_ENV).expect("the child's directory"));
    let batches = env_usize(CHILD_BATCHES_ENV, 1);
    let result = match system.as_str() {
        Baseline::NAME => child::<Baseline>(&dir, batches),
        CommitLogSubject::NAME => child::<CommitLogSubject>(&dir, batches),
        OkayWal::NAME => child::<OkayWal>(&dir, batches),
        RaftEngine::NAME => child::<RaftEngine>(&dir, batches),
        DurableLog::NAME => child::<DurableLog>(&dir, batches),
        other => Err(error(format!("unknown system {other}"))),
    };
    if let Err(e) = result {
        eprintln!("crash child for {system}: {e}");
        std::process::exit(1);
    }
    // Every batch is written: wait for the kill.
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The child: appends `batches` synced batches, printing after each the
/// count of records acknowledged so far.
fn child<S: Subject>(dir: &Path, batches: usize) -> Result<()> {
    let records = workload::records(batches * BATCH_RECORDS);
    let mut subject = S::open(dir, Mode::Synced)?;
    let mut stdout = std::io::stdout().lock();
    for (i, batch) in records.chunks(BATCH_RECORDS).enumerate() {
        subject.append_synced(batch)?;
        writeln!(stdout, "{}", (i + 1) * BATCH_RECORDS)?;
        stdout.flush()?;
    }
    // Keep the log open, as a writer killed mid-flight would.
    std::mem::forget(subject);
    Ok(())
}

/// What one crash trial found.
#[derive(Debug)]
pub struct Trial {
    /// Time to open the log after the kill.
    pub open: Duration,
    /// Records whose append had returned before the kill.
    pub acknowledged: u64,
    /// Records the reopened log holds.
    pub recovered: u64,
    /// `Ok` when every acknowledged record came back intact, in order, and
    /// a batch appended after recovery reads back after another reopen;
    /// otherwise what went wrong.
    pub outcome: Result<(), String>,
}

/// Runs one trial for `S` in the empty directory `dir`: kills the child
/// after `kill_after` acknowledged batches.
pub fn trial<S: Subject>(dir: &Path, kill_after: usize) -> Result<Trial> {
    // Enough batches that the child is still writing when it is killed.
    let child_batches = kill_after * 2 + 10;
    let mut child = Command::new(std::env::current_exe()?)
        .env(CHILD_ENV, S::NAME)
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_BATCHES_ENV, child_batches.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let mut acknowledged = 0u64;
    while acknowledged < (kill_after * BATCH_RECORDS) as u64 {
        match lines.next() {
            Some(line) => acknowledged = line?.trim().parse()?,
            None => {
                let status = child.wait()?;
                return Err(error(format!(
                    "crash child for {} exited: {status}",
                    S::NAME
                )));
            }
        }
    }
    child.kill()?;
    child.wait()?;
    // Lines written before the kill were acknowledged too.
    for line in lines {
        acknowledged = line?.trim().parse()?;
    }

    let records = workload::records((child_batches + 1) * BATCH_RECORDS);
    let start = Instant::now();
    let opened = catch_unwind(AssertUnwindSafe(|| S::open(dir, Mode::Synced)));
    let open = start.elapsed();
    let subject = match opened {
        Ok(Ok(subject)) => subject,
        Ok(Err(e)) => return Ok(failed(open, acknowledged, 0, format!("open failed: {e}"))),
        Err(panic) => {
            let message = panic_message(&panic);
            return Ok(failed(
                open,
                acknowledged,
                0,
                format!("open panicked: {message}"),
            ));
        }
    };
    let checked = catch_unwind(AssertUnwindSafe(|| {
        check_recovered(subject, dir, &records, acknowledged)
    }));
    let (recovered, outcome) = match checked {
        Ok((recovered, outcome)) => (recovered, outcome),
        Err(panic) => (0, Err(format!("panicked: {}", panic_message(&panic)))),
    };
    Ok(Trial {
        open,
        acknowledged,
        recovered,
        outcome,
    })
}

fn failed(open: Duration, acknowledged: u64, recovered: u64, why: String) -> Trial {
    Trial {
        open,
        acknowledged,
        recovered,
        outcome: Err(why),
    }
}

/// Checks the reopened log: every acknowledged record is there, intact and
/// in order; then one more batch is appended, and after another reopen the
/// whole log reads back. Returns the records recovered and the verdict.
fn check_recovered<S: Subject>(
    mut subject: S,
    dir: &Path,
    records: &[Bytes],
    acknowledged: u64,
) -> (u64, Result<(), String>) {
    let digest = match subject.scan(Check::Full) {
        Ok(digest) => digest,
        Err(e) => return (0, Err(format!("scan after the crash failed: {e}"))),
    };
    let recovered = digest.count;
    let kept = usize::try_from(recovered).expect("fits");
    if recovered < acknowledged {
        return (
            recovered,
            Err(format!(
                "lost {} acknowledged records",
                acknowledged - recovered
            )),
        );
    }
    if kept + BATCH_RECORDS > records.len() {
        return (
            recovered,
            Err(format!("{recovered} records: more than written")),
        );
    }
    if digest != Digest::of(Check::Full, &records[..kept]) {
        return (
            recovered,
            Err("recovered records differ from those written".into()),
        );
    }
    let appended = subject
        .append_synced(&records[kept..kept + BATCH_RECORDS])
        .and_then(|()| subject.close())
        .and_then(|()| S::open(dir, Mode::Synced))
        .and_then(|mut reopened| {
            let digest = reopened.scan(Check::Full)?;
            reopened.close()?;
            Ok(digest)
        });
    let outcome = match appended {
        Ok(digest) if digest == Digest::of(Check::Full, &records[..kept + BATCH_RECORDS]) => Ok(()),
        Ok(digest) => Err(format!(
            "after appending one more batch and reopening: {} records, contents differ",
            digest.count
        )),
        Err(e) => Err(format!("appending after recovery, then reading: {e}")),
    };
    (recovered, outcome)
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(message) = panic.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = panic.downcast_ref::<String>() {
        message.clone()
    } else {
        "a panic".to_owned()
    }
}
