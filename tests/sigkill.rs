//! A real crash: this test binary runs itself again as a writer process that
//! appends with `Durability::Sync` from four threads and prints every
//! acknowledged record; the test kills it with SIGKILL at a random moment,
//! reopens the log, and checks that every acknowledged record is there,
//! intact, in order, once, at contiguous offsets.
//!
//! The same runs with `Durability::None`, where an append is acknowledged
//! when it returns: a killed process leaves the kernel's page cache behind,
//! so every returned append must survive too, whether its bytes went through
//! a system call or were stored into a mapping of the segment.
//!
//! `DURABLE_LOG_KILL_ROUNDS` (default 3) sets the number of kills, one after
//! the other on the same log; `DURABLE_LOG_KILL_SEED` fixes the random
//! delays (the seed used is printed).

#![cfg(unix)]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use durable_log::{Config, Durability, Log, Record, StoredRecord};

/// Set in the writer process: the log directory.
const CHILD_DIR_ENV: &str = "DURABLE_LOG_SIGKILL_WRITER_DIR";
/// Set in the writer process: the round number, part of every record.
const CHILD_ROUND_ENV: &str = "DURABLE_LOG_SIGKILL_WRITER_ROUND";
/// Set in the writer process: the configuration, one of [`Mode`]'s names.
const CHILD_MODE_ENV: &str = "DURABLE_LOG_SIGKILL_WRITER_MODE";
/// Name of the test function that is the writer.
const CHILD_TEST: &str = "sigkill_writer_process";
const WRITER_THREADS: u32 = 4;
/// A writer left behind by a parent that died stops after this long.
const WRITER_LIFETIME: Duration = Duration::from_secs(60);

/// How the writer's log is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `Durability::Sync`, small segments, so that the writer rolls while
    /// it is killed.
    Sync,
    /// `Durability::None` with the same small segments.
    Unsynced,
    /// `Durability::None` with segments large enough that the active one is
    /// mostly space reserved ahead of the data when the writer dies.
    UnsyncedLarge,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Sync => "sync",
            Mode::Unsynced => "unsynced",
            Mode::UnsyncedLarge => "unsynced-large",
        }
    }

    fn from_name(name: &str) -> Mode {
        [Mode::Sync, Mode::Unsynced, Mode::UnsyncedLarge]
            .into_iter()
            .find(|mode| mode.name() == name)
            .expect("a mode name")
    }

    fn config(self) -> Config {
        match self {
            Mode::Sync => Config::default()
                .segment_bytes(16 * 1024)
                .durability(Durability::Sync),
            Mode::Unsynced => Config::default()
                .segment_bytes(16 * 1024)
                .durability(Durability::None),
            Mode::UnsyncedLarge => Config::default()
                .segment_bytes(64 << 20)
                .durability(Durability::None),
        }
    }
}

/// Who wrote a record: the round (process), the thread, and the thread's
/// sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Id {
    round: u32,
    thread: u32,
    seq: u64,
}

/// The value of the record `id`: its id, then filler whose length and bytes
/// depend on it, so that a damaged or mixed-up record does not parse back.
fn value_of(id: Id) -> Vec<u8> {
    let mut value = format!("{} {} {} ", id.round, id.thread, id.seq).into_bytes();
    let filler = (id.seq % 97) as usize + 8;
    value.extend((0..filler).map(|i| b'a' + ((id.seq as usize + i) % 26) as u8));
    value
}

fn key_of(id: Id) -> Vec<u8> {
    format!("writer-{}-{}", id.round, id.thread).into_bytes()
}

fn parse_value(value: &[u8]) -> Option<Id> {
    let text = std::str::from_utf8(value).ok()?;
    let mut fields = text.splitn(4, ' ');
    let id = Id {
        round: fields.next()?.parse().ok()?,
        thread: fields.next()?.parse().ok()?,
        seq: fields.next()?.parse().ok()?,
    };
    (value_of(id) == value).then_some(id)
}

/// Not a test on its own: the writer process. Without its environment
/// variable (a normal test run) it returns at once.
#[test]
fn sigkill_writer_process() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let round: u32 = std::env::var(CHILD_ROUND_ENV)
        .expect("round")
        .parse()
        .expect("a number");
    let mode = Mode::from_name(&std::env::var(CHILD_MODE_ENV).expect("mode"));
    let log = Log::open(&dir, mode.config()).expect("writer: open");
    let partition = log.partition(0).expect("writer: partition 0");
    let started = Instant::now();
    std::thread::scope(|scope| {
        for thread in 0..WRITER_THREADS {
            let partition = partition.clone();
            scope.spawn(move || {
                let mut seq = 0u64;
                while started.elapsed() < WRITER_LIFETIME {
                    // Batches of one to three records.
                    let ids: Vec<Id> = (0..1 + seq % 3)
                        .map(|i| Id {
                            round,
                            thread,
                            seq: seq + i,
                        })
                        .collect();
                    let records: Vec<Record> = ids
                        .iter()
                        .map(|&id| Record::new(value_of(id)).with_key(key_of(id)))
                        .collect();
                    let appended = match partition.append(&records) {
                        Ok(appended) => appended,
                        Err(e) => {
                            eprintln!("writer: append failed: {e}");
                            std::process::exit(2);
                        }
                    };
                    let mut lines = String::new();
                    for (i, id) in ids.iter().enumerate() {
                        lines.push_str(&format!(
                            "ACK {} {} {} {}\n",
                            appended.base_offset + i as u64,
                            id.round,
                            id.thread,
                            id.seq
                        ));
                    }
                    let mut out = std::io::stdout().lock();
                    if out
                        .write_all(lines.as_bytes())
                        .and_then(|()| out.flush())
                        .is_err()
                    {
                        // The parent is gone.
                        std::process::exit(3);
                    }
                    seq += ids.len() as u64;
                }
            });
        }
    });
    std::process::exit(4);
}

/// splitmix64 for the delays.
fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn parse_ack(line: &str) -> Option<(u64, Id)> {
    let mut fields = line.strip_prefix("ACK ")?.split(' ');
    let offset = fields.next()?.parse().ok()?;
    let id = Id {
        round: fields.next()?.parse().ok()?,
        thread: fields.next()?.parse().ok()?,
        seq: fields.next()?.parse().ok()?,
    };
    fields.next().is_none().then_some((offset, id))
}

/// Runs one writer process until it has acknowledged something, lets it
/// run `delay` more, kills it, and returns every acknowledgement it printed.
fn run_and_kill(dir: &Path, mode: Mode, round: u32, delay: Duration) -> Vec<(u64, Id)> {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads", "1"])
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_ROUND_ENV, round.to_string())
        .env(CHILD_MODE_ENV, mode.name())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the writer");
    let stdout = child.stdout.take().expect("piped");
    let (lines_tx, lines_rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            match stdout.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                // A line cut by the kill has no newline and is not counted:
                // its record was acknowledged, but the test cannot know it.
                Ok(_) if line.ends_with('\n') => {
                    if lines_tx.send(line.trim_end().to_owned()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
            }
        }
    });
    let mut lines = Vec::new();
    // Wait for the first acknowledgement, so the kill lands while writing.
    for line in lines_rx.iter() {
        let acked = line.starts_with("ACK ");
        lines.push(line);
        if acked {
            break;
        }
    }
    std::thread::sleep(delay);
    child.kill().expect("SIGKILL the writer");
    let status = child.wait().expect("wait for the writer");
    reader.join().expect("stdout reader");
    lines.extend(lines_rx.try_iter());
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    assert!(
        status.code().is_none(),
        "round {round}: the writer exited by itself ({status}) instead of being killed:\n{stderr}"
    );
    let acks: Vec<(u64, Id)> = lines.iter().filter_map(|l| parse_ack(l)).collect();
    assert!(
        !acks.is_empty(),
        "round {round}: the writer acknowledged nothing:\n{stderr}"
    );
    acks
}

/// Opens the log as recovery leaves it and checks it against everything
/// acknowledged so far.
fn verify(dir: &Path, mode: Mode, acked: &BTreeMap<u64, Id>, round: u32) {
    let log = Log::open(dir, mode.config()).expect("open after SIGKILL");
    let p = log.partition(0).expect("partition 0");
    assert_eq!(p.start_offset(), 0);
    let records: Vec<StoredRecord> = p
        .reader(0)
        .collect::<durable_log::Result<_>>()
        .expect("every record reads back");
    assert_eq!(records.len() as u64, p.end_offset());
    let mut ids = Vec::with_capacity(records.len());
    for (i, record) in records.iter().enumerate() {
        assert_eq!(
            record.offset, i as u64,
            "round {round}: offsets not contiguous"
        );
        let value = record.value.as_deref().expect("a value");
        let id = parse_value(value).unwrap_or_else(|| {
            panic!(
                "round {round}: offset {i} holds a record no writer wrote: {:?}",
                String::from_utf8_lossy(value)
            )
        });
        assert_eq!(record.key.as_deref(), Some(&key_of(id)[..]), "offset {i}");
        ids.push(id);
    }
    // Every acknowledged record, at its offset.
    for (&offset, &id) in acked {
        let found = ids.get(offset as usize);
        assert_eq!(
            found,
            Some(&id),
            "round {round}: acknowledged record {id:?} at offset {offset} is missing or replaced"
        );
    }
    // Each writer thread's records appear once each, in order, with no
    // gap: a thread appended its next batch only after the previous one was
    // acknowledged, so only its last batch may be missing.
    let mut next_seq: HashMap<(u32, u32), u64> = HashMap::new();
    for (offset, id) in ids.iter().enumerate() {
        let next = next_seq.entry((id.round, id.thread)).or_insert(0);
        assert_eq!(
            id.seq, *next,
            "round {round}: offset {offset} holds {id:?}, expected sequence {next} of that writer"
        );
        *next += 1;
    }
    log.close().expect("close");
}

#[test]
fn acknowledged_records_survive_sigkill() {
    kill_and_verify(Mode::Sync);
}

#[test]
fn returned_appends_survive_sigkill_without_fsync() {
    kill_and_verify(Mode::Unsynced);
}

#[test]
fn returned_appends_survive_sigkill_into_reserved_space() {
    kill_and_verify(Mode::UnsyncedLarge);
}

fn kill_and_verify(mode: Mode) {
    let rounds: u32 = std::env::var("DURABLE_LOG_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let mut seed: u64 = std::env::var("DURABLE_LOG_KILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
    println!("DURABLE_LOG_KILL_SEED={seed}");
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut acked: BTreeMap<u64, Id> = BTreeMap::new();
    for round in 0..rounds {
        let delay = Duration::from_millis(200 + next_random(&mut seed) % 601);
        let acks = run_and_kill(dir.path(), mode, round, delay);
        for (offset, id) in acks {
            assert_eq!(id.round, round, "an acknowledgement from another round");
            if let Some(previous) = acked.insert(offset, id) {
                panic!("offset {offset} acknowledged twice: {previous:?}, then {id:?}");
            }
        }
        // Every other round the next writer recovers the killed log itself.
        if !round.is_multiple_of(2) || round + 1 == rounds {
            verify(dir.path(), mode, &acked, round);
        }
    }
}
