//! The `durable-log` command-line tool, run as a process: exit codes,
//! human output that names the damaged file, and JSON that parses.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};

use durable_log::{Config, Durability, Log, Record};

const BIN: &str = env!("CARGO_BIN_EXE_durable-log");

/// Serialises the tests of this file. A process spawned by one test holds
/// copies of every descriptor of the test process until it execs, the
/// directory lock of a `Log` another test just closed included; that lock
/// would then still be held for a moment.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(args: &[&str]) -> Run {
    let output = Command::new(BIN).args(args).output().unwrap();
    Run {
        code: output.status.code().expect("exited, not killed"),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

fn config() -> Config {
    Config::default()
        .partitions(2)
        .segment_bytes(1024)
        .index_interval_bytes(100)
        .retention_age(None)
        .durability(Durability::None)
}

/// A closed log of two partitions, 60 records each, several segments.
fn build(dir: &Path) {
    let log = Log::open(dir, config()).unwrap();
    for p in 0..2 {
        let partition = log.partition(p).unwrap();
        for b in 0..12u64 {
            let records: Vec<Record> = (b * 5..b * 5 + 5)
                .map(|i| Record::new(format!("value-{i}")).with_key(format!("key-{i}")))
                .collect();
            partition.append(&records).unwrap();
        }
    }
    log.close().unwrap();
}

fn segments(dir: &Path, partition: u32) -> Vec<PathBuf> {
    let mut logs: Vec<PathBuf> = fs::read_dir(dir.join(partition.to_string()))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs
}

fn text(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Checks that `s` is one JSON value and nothing else.
fn assert_json(s: &str) {
    let bytes = s.trim_end().as_bytes();
    let mut at = 0;
    if let Err(e) = json_value(bytes, &mut at).and_then(|()| {
        if at == bytes.len() {
            Ok(())
        } else {
            Err(format!("trailing bytes at {at}"))
        }
    }) {
        panic!("not JSON ({e}): {s}");
    }
}

fn skip_ws(b: &[u8], at: &mut usize) {
    while *at < b.len() && b" \t\r\n".contains(&b[*at]) {
        *at += 1;
    }
}

fn json_value(b: &[u8], at: &mut usize) -> Result<(), String> {
    skip_ws(b, at);
    match b.get(*at) {
        Some(b'{') => json_seq(b, at, b'}', |b, at| {
            json_string(b, at)?;
            skip_ws(b, at);
            if b.get(*at) != Some(&b':') {
                return Err(format!("expected `:` at {at}"));
            }
            *at += 1;
            json_value(b, at)
        }),
        Some(b'[') => json_seq(b, at, b']', json_value),
        Some(b'"') => json_string(b, at),
        Some(b't') => json_word(b, at, "true"),
        Some(b'f') => json_word(b, at, "false"),
        Some(b'n') => json_word(b, at, "null"),
        Some(c) if *c == b'-' || c.is_ascii_digit() => {
            let start = *at;
            while *at < b.len() && (b[*at].is_ascii_digit() || b"+-.eE".contains(&b[*at])) {
                *at += 1;
            }
            let number = std::str::from_utf8(&b[start..*at]).unwrap();
            number
                .parse::<f64>()
                .map(drop)
                .map_err(|_| format!("bad number {number}"))
        }
        other => Err(format!("unexpected {other:?} at {at}")),
    }
}

fn json_seq(
    b: &[u8],
    at: &mut usize,
    close: u8,
    item: fn(&[u8], &mut usize) -> Result<(), String>,
) -> Result<(), String> {
    *at += 1;
    skip_ws(b, at);
    if b.get(*at) == Some(&close) {
        *at += 1;
        return Ok(());
    }
    loop {
        skip_ws(b, at);
        item(b, at)?;
        skip_ws(b, at);
        match b.get(*at) {
            Some(b',') => *at += 1,
            Some(c) if *c == close => {
                *at += 1;
                return Ok(());
            }
            other => return Err(format!("unexpected {other:?} at {at}")),
        }
    }
}

fn json_string(b: &[u8], at: &mut usize) -> Result<(), String> {
    if b.get(*at) != Some(&b'"') {
        return Err(format!("expected a string at {at}"));
    }
    *at += 1;
    while let Some(&c) = b.get(*at) {
        *at += 1;
        match c {
            b'"' => return Ok(()),
            b'\\' => match b.get(*at) {
                Some(b'u') => *at += 5,
                Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => *at += 1,
                other => return Err(format!("bad escape {other:?}")),
            },
            c if c < 0x20 => return Err(format!("raw control byte at {at}")),
            _ => {}
        }
    }
    Err("unterminated string".into())
}

fn json_word(b: &[u8], at: &mut usize, word: &str) -> Result<(), String> {
    if b[*at..].starts_with(word.as_bytes()) {
        *at += word.len();
        Ok(())
    } else {
        Err(format!("bad literal at {at}"))
    }
}

#[test]
fn help_and_usage_errors() {
    let _serial = serial();
    let help = run(&["--help"]);
    assert_eq!(help.code, 0);
    assert!(help.stdout.contains("Usage:"));
    assert!(help.stdout.contains("--truncate-at-first-invalid"));
    for args in [
        &[][..],
        &["verify"],
        &["bogus", "/tmp"],
        &["verify", "--records", "/tmp"],
        &["stats", "--dry-run", "/tmp"],
        &["verify", "--nope", "/tmp"],
        &["dump", "/a", "/b"],
    ] {
        let r = run(args);
        assert_eq!(r.code, 2, "{args:?}");
        assert!(r.stderr.contains("--help"), "{args:?}: {}", r.stderr);
        assert!(r.stdout.is_empty());
    }
}

#[test]
fn a_clean_log_verifies_and_measures() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let r = run(&["verify", text(dir.path())]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("OK: no problems found"));
    let r = run(&["verify", "--json", text(dir.path())]);
    assert_eq!(r.code, 0);
    assert_json(&r.stdout);
    assert!(r.stdout.contains("\"ok\":true"));
    assert!(r.stdout.contains("\"records\":120"));
    assert!(r.stdout.contains("\"problems\":[]"));

    let r = run(&["stats", text(dir.path())]);
    assert_eq!(r.code, 0);
    assert!(
        r.stdout.contains("partition 1: offsets 0..60"),
        "{}",
        r.stdout
    );
    let r = run(&["stats", "--json", text(dir.path())]);
    assert_eq!(r.code, 0);
    assert_json(&r.stdout);
    assert!(r.stdout.contains("\"records\":120"));
    assert!(r.stdout.contains("\"end_offset\":60"));
    assert!(r.stdout.contains("\"compression_ratio\":1"));
}

#[test]
fn verify_names_the_damaged_file_and_fails() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let first = &segments(dir.path(), 1)[0];
    let mut bytes = fs::read(first).unwrap();
    bytes[300] ^= 0x10;
    fs::write(first, bytes).unwrap();
    let batch = durable_log::inspect::dump_segment(first)
        .unwrap()
        .invalid
        .unwrap()
        .position;

    let r = run(&["verify", text(dir.path())]);
    assert_eq!(r.code, 1);
    assert!(
        r.stdout
            .contains(&format!("{} at byte {batch}:", first.display())),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("checksum mismatch"));
    assert!(r.stdout.contains("FAILED"));

    let r = run(&["verify", "--json", text(dir.path())]);
    assert_eq!(r.code, 1);
    assert_json(&r.stdout);
    assert!(r.stdout.contains("\"ok\":false"));
    assert!(r.stdout.contains(&format!(
        "{{\"path\":\"{}\",\"position\":{batch},\"kind\":\"invalid_batch\"",
        first.display()
    )));
    assert!(r.stdout.contains("\"corruption\":\"checksum\""));

    // Repair leaves damage outside the last segment in place, and says so.
    let r = run(&["repair", text(dir.path())]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("Left in place"), "{}", r.stdout);
    assert!(r.stdout.contains(text(first)));
    let r = run(&[
        "repair",
        "--truncate-at-first-invalid",
        "--json",
        text(dir.path()),
    ]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_json(&r.stdout);
    assert!(r.stdout.contains("\"mode\":\"truncate_at_first_invalid\""));
    assert!(r.stdout.contains(&format!("\"position\":{batch}")));
}

#[test]
fn repair_cuts_a_torn_tail_after_a_dry_run() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let last = segments(dir.path(), 0).last().unwrap().clone();
    let length = fs::metadata(&last).unwrap().len();
    OpenOptions::new()
        .append(true)
        .open(&last)
        .unwrap()
        .write_all(&[0x5a; 100])
        .unwrap();

    let r = run(&["repair", "--dry-run", text(dir.path())]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(r.stdout.contains("dry run"));
    assert!(
        r.stdout.contains(&format!(
            "would be cut at byte {length} of {}",
            last.display()
        )),
        "{}",
        r.stdout
    );
    assert_eq!(fs::metadata(&last).unwrap().len(), length + 100);

    let r = run(&["repair", "--json", text(dir.path())]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_json(&r.stdout);
    assert!(r.stdout.contains("\"dry_run\":false"));
    assert!(r.stdout.contains("\"bytes_removed\":100"));
    assert!(r.stdout.contains("\"complete\":true"));
    assert_eq!(fs::metadata(&last).unwrap().len(), length);

    // The indexes of the cut segment come back at the next open.
    let r = run(&["verify", text(dir.path())]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("index file is missing"), "{}", r.stdout);
    Log::open(dir.path(), config()).unwrap().close().unwrap();
    assert_eq!(run(&["verify", text(dir.path())]).code, 0);
    let r = run(&["repair", text(dir.path())]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("Nothing to repair."));
}

#[test]
fn dump_reads_a_segment_of_an_open_log_and_whole_logs() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let log = Log::open(dir.path(), config()).unwrap();
    let first = &segments(dir.path(), 0)[0];

    let r = run(&["dump", "--records", text(first)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains(text(first)));
    assert!(r.stdout.contains("value \"value-3\""), "{}", r.stdout);
    assert!(r.stdout.contains("valid batches"));
    let r = run(&["dump", "--json", "--records", text(first)]);
    assert_eq!(r.code, 0);
    assert_json(&r.stdout);
    assert!(r.stdout.contains("\"base_offset\":0,"));
    assert!(r.stdout.contains("\"value\":{\"text\":\"value-3\"}"));

    // A directory needs the lock.
    let r = run(&["dump", text(dir.path())]);
    assert_eq!(r.code, 3);
    assert!(r.stderr.contains("locked"), "{}", r.stderr);
    log.close().unwrap();

    let r = run(&["dump", "--json", text(dir.path())]);
    assert_eq!(r.code, 0);
    assert_json(&r.stdout);
    for p in 0..2 {
        for segment in segments(dir.path(), p) {
            assert!(r.stdout.contains(text(&segment)));
        }
    }
    let r = run(&["dump", text(&dir.path().join("1"))]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains(text(&segments(dir.path(), 1)[0])));
    assert!(!r.stdout.contains(text(&segments(dir.path(), 0)[0])));

    // A damaged segment stops the dump at the bad batch.
    let mut bytes = fs::read(first).unwrap();
    let end = bytes.len();
    bytes[end - 5] ^= 1;
    fs::write(first, bytes).unwrap();
    let r = run(&["dump", text(first)]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("INVALID batch at byte"), "{}", r.stdout);
}

#[test]
fn a_locked_or_foreign_directory_cannot_be_inspected() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let log = Log::open(dir.path(), config()).unwrap();
    for command in ["verify", "repair", "stats"] {
        let r = run(&[command, text(dir.path())]);
        assert_eq!(r.code, 3, "{command}");
        assert!(r.stderr.contains("locked"), "{command}: {}", r.stderr);
    }
    log.close().unwrap();
    let other = tempfile::tempdir().unwrap();
    let r = run(&["verify", text(other.path())]);
    assert_eq!(r.code, 3);
    assert!(r.stderr.contains("not a readable durable-log directory"));
}
