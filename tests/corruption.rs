//! Damage on disk, everywhere: truncation at every position of every file,
//! a flipped byte at every position, zeroed windows, swapped and deleted
//! indexes. Each case either opens and reads back only correct records
//! (a damaged batch is an `Error::Corrupt` naming its file), or fails to
//! open with a typed error. Never a panic, never wrong data.
//!
//! `DURABLE_LOG_CORRUPTION_STRIDE` tests every Nth position (default 13,
//! to keep `cargo test` short; 1 tests them all).

use std::collections::BTreeMap;
use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use durable_log::{Config, Durability, Error, Log, Record, StoredRecord};

fn config() -> Config {
    Config::default()
        .segment_bytes(700)
        .index_interval_bytes(100)
        .max_index_bytes(256)
        .durability(Durability::Sync)
        .retention_age(None)
}

fn stride() -> usize {
    std::env::var("DURABLE_LOG_CORRUPTION_STRIDE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(13)
}

/// A closed log of a few segments, and every record it holds by offset.
fn build(dir: &Path) -> BTreeMap<u64, StoredRecord> {
    let log = Log::open(dir, config()).unwrap();
    let p = log.partition(0).unwrap();
    for b in 0..14u64 {
        let batch: Vec<Record> = (0..=b % 3)
            .map(|i| {
                Record::new(format!("value {b}.{i}"))
                    .with_key(format!("k{}", b % 4))
                    .with_timestamp(1_700_000_000_000 + i64::try_from(b * 10 + i).unwrap())
                    .with_header("h", format!("{i}"))
            })
            .collect();
        p.append(&batch).unwrap();
    }
    let records = p
        .reader(0)
        .map(|r| r.unwrap())
        .map(|r| (r.offset, r))
        .collect();
    assert!(p.segment_count() >= 3, "the log must span several segments");
    drop(p);
    log.close().unwrap();
    records
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Every file of the log, relative to its directory.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = PathBuf::from(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            out.extend(files(&entry.path()).into_iter().map(|f| name.join(f)));
        } else if name != Path::new("lock") {
            out.push(name);
        }
    }
    out.sort();
    out
}

/// Opens the damaged copy and checks the rules; returns a description of
/// the first violation.
fn check(dir: &Path, original: &BTreeMap<u64, StoredRecord>, what: &str) -> Result<(), String> {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let log = match Log::open(dir, config()) {
            Ok(log) => log,
            Err(Error::Corrupt { .. } | Error::NotALog { .. }) => return Ok(()),
            Err(e) => return Err(format!("{what}: open failed with an unexpected error: {e}")),
        };
        let p = log.partition(0).map_err(|e| e.to_string())?;
        let end = p.end_offset();
        if end > original.len() as u64 {
            return Err(format!(
                "{what}: end offset {end} is past the {} records written",
                original.len()
            ));
        }
        for offset in p.start_offset()..end {
            match p.read(offset, 1) {
                Ok(records) => {
                    for r in records {
                        if original.get(&r.offset) != Some(&r) {
                            return Err(format!(
                                "{what}: offset {} read back wrong: {r:?}",
                                r.offset
                            ));
                        }
                    }
                }
                Err(Error::Corrupt { path, .. }) if path.starts_with(dir) => {}
                Err(e) => return Err(format!("{what}: reading {offset} gave {e}")),
            }
        }
        // What is left must still take appends.
        let a = p
            .append(&[Record::new("after")])
            .map_err(|e| format!("{what}: append: {e}"));
        if let Err(message) = a {
            // A damaged file the append must read (an index, the tail) may
            // refuse it as corrupt; anything else is wrong.
            if !message.contains("corrupt") {
                return Err(message);
            }
        }
        Ok(())
    }));
    match outcome {
        Ok(result) => result,
        Err(_) => Err(format!("{what}: panicked")),
    }
}

fn damage_everywhere(name: &str, damage: impl Fn(&Path, usize, usize) -> bool) {
    let work = tempfile::tempdir().unwrap();
    let clean = work.path().join("clean");
    let original = build(&clean);
    let mut failures = Vec::new();
    let mut cases = 0;
    for file in files(&clean) {
        let len = fs::metadata(clean.join(&file)).unwrap().len() as usize;
        for position in (0..len.max(1)).step_by(stride()) {
            let copy = work.path().join("case");
            let _ = fs::remove_dir_all(&copy);
            copy_dir(&clean, &copy);
            if !damage(&copy.join(&file), position, len) {
                continue;
            }
            cases += 1;
            let what = format!("{name} {} at {position}", file.display());
            if let Err(message) = check(&copy, &original, &what) {
                failures.push(message);
            }
        }
    }
    assert!(cases > 400 / stride(), "only {cases} cases ran");
    assert!(
        failures.is_empty(),
        "{} of {cases} cases broke the rules:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_truncation_of_every_file_recovers_or_is_reported() {
    damage_everywhere("truncated", |path, position, _| {
        fs::OpenOptions::new()
            .write(true)
            .open(path)
            .unwrap()
            .set_len(position as u64)
            .unwrap();
        true
    });
}

#[test]
fn a_damaged_byte_anywhere_recovers_or_is_reported() {
    damage_everywhere("flipped", |path, position, len| {
        if position >= len {
            return false;
        }
        let mut bytes = fs::read(path).unwrap();
        bytes[position] ^= 0xA5;
        fs::write(path, bytes).unwrap();
        true
    });
}

#[test]
fn zeroed_ranges_recover_or_are_reported() {
    damage_everywhere("zeroed", |path, position, len| {
        if position >= len || position % 16 != 0 {
            return false;
        }
        let mut bytes = fs::read(path).unwrap();
        let end = (position + 64).min(len);
        bytes[position..end].fill(0);
        fs::write(path, bytes).unwrap();
        true
    });
}

#[test]
fn swapped_or_deleted_indexes_are_rebuilt_or_reported() {
    let work = tempfile::tempdir().unwrap();
    let clean = work.path().join("clean");
    let original = build(&clean);
    let indexes: Vec<PathBuf> = files(&clean)
        .into_iter()
        .filter(|f| {
            f.extension()
                .is_some_and(|e| e == "index" || e == "timeindex")
        })
        .collect();
    assert!(indexes.len() >= 6);
    let mut failures = Vec::new();
    for a in &indexes {
        for b in &indexes {
            let copy = work.path().join("case");
            let _ = fs::remove_dir_all(&copy);
            copy_dir(&clean, &copy);
            let what = if a == b {
                fs::remove_file(copy.join(a)).unwrap();
                format!("deleted {}", a.display())
            } else {
                let (pa, pb) = (copy.join(a), copy.join(b));
                let (ba, bb) = (fs::read(&pa).unwrap(), fs::read(&pb).unwrap());
                fs::write(&pa, bb).unwrap();
                fs::write(&pb, ba).unwrap();
                format!("swapped {} and {}", a.display(), b.display())
            };
            if let Err(message) = check(&copy, &original, &what) {
                failures.push(message);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn stray_and_foreign_files_change_nothing() {
    let work = tempfile::tempdir().unwrap();
    let clean = work.path().join("clean");
    let original = build(&clean);
    let copy = work.path().join("case");
    copy_dir(&clean, &copy);
    fs::write(copy.join("0").join("notes.txt"), b"mine").unwrap();
    fs::write(copy.join("0").join("00000000000000099999.index"), [7u8; 40]).unwrap();
    fs::write(
        copy.join("0").join("00000000000000000000.log.rewrite"),
        [1u8; 99],
    )
    .unwrap();
    fs::create_dir(copy.join("0").join("subdir")).unwrap();
    let log = Log::open(&copy, config()).unwrap();
    let p = log.partition(0).unwrap();
    let back: Vec<_> = p.reader(0).map(|r| r.unwrap()).collect();
    assert_eq!(back, original.values().cloned().collect::<Vec<_>>());
    drop(p);
    drop(log);
    check(&copy, &original, "stray files").unwrap();
    assert!(
        copy.join("0").join("notes.txt").exists(),
        "a foreign file is left alone"
    );
    assert!(
        !copy.join("0").join("00000000000000099999.index").exists(),
        "a stray index is removed"
    );
}
