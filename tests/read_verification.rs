//! Reads verify each batch's checksum at its first read in the process, or
//! at every read with `Config::verify_every_read`: a real segment file,
//! written into behind the log's back through another file descriptor
//! (which the log's memory mapping sees at once).

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use durable_log::{Config, Durability, Log, Partition, Record};

const BATCHES: u64 = 8;
const RECORDS_PER_BATCH: u64 = 10;

/// Large enough that each batch is larger than 4 KiB.
fn value(offset: u64) -> String {
    format!("record {offset:04} {}", "-".repeat(600))
}

fn config(verify_every_read: bool) -> Config {
    Config::default()
        .segment_bytes(1 << 20)
        .max_index_bytes(4096)
        .durability(Durability::None)
        .verify_every_read(verify_every_read)
}

fn build(dir: &Path, config: &Config) -> Log {
    let log = Log::open(dir, config.clone()).unwrap();
    let p = log.partition(0).unwrap();
    for b in 0..BATCHES {
        let batch: Vec<Record> = (0..RECORDS_PER_BATCH)
            .map(|i| Record::new(value(b * RECORDS_PER_BATCH + i)))
            .collect();
        p.append(&batch).unwrap();
    }
    log
}

fn segment_file(dir: &Path) -> PathBuf {
    dir.join("0").join(format!("{:020}.log", 0))
}

/// Flips the last byte of the value of record `offset` in the file.
fn damage(dir: &Path, offset: u64) {
    let path = segment_file(dir);
    let contents = fs::read(&path).unwrap();
    let needle = value(offset);
    let at = contents
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .unwrap()
        + needle.len()
        - 1;
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.write_at(&[contents[at] ^ 0x20], at as u64).unwrap();
}

fn read_one(p: &Partition, offset: u64) -> durable_log::Result<String> {
    let record = p.reader(offset).next().unwrap()?;
    assert_eq!(record.offset, offset);
    Ok(String::from_utf8(record.value.unwrap().to_vec()).unwrap())
}

#[test]
fn damage_before_a_batch_is_first_read_is_always_found() {
    for verify_every_read in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let log = build(dir.path(), &config(verify_every_read));
        let p = log.partition(0).unwrap();
        assert_eq!(read_one(&p, 3).unwrap(), value(3));
        damage(dir.path(), 44);
        let err = read_one(&p, 41).unwrap_err();
        assert!(err.is_corruption(), "{err}");
        let err = p.reader(0).find_map(Result::err).unwrap();
        assert!(err.is_corruption(), "{err}");
        assert_eq!(read_one(&p, 3).unwrap(), value(3));
    }
}

#[test]
fn damage_after_a_batch_was_verified_is_found_only_when_every_read_verifies() {
    for verify_every_read in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let config = config(verify_every_read);
        let log = build(dir.path(), &config);
        let p = log.partition(0).unwrap();
        assert_eq!(
            p.reader(0).filter(|r| r.is_ok()).count() as u64,
            BATCHES * RECORDS_PER_BATCH
        );
        damage(dir.path(), 27);
        if verify_every_read {
            assert!(read_one(&p, 27).unwrap_err().is_corruption());
            assert!(read_one(&p, 20).unwrap_err().is_corruption());
            assert!(p.read(25, 1).unwrap_err().is_corruption());
        } else {
            assert_ne!(read_one(&p, 27).unwrap(), value(27));
            assert_eq!(read_one(&p, 20).unwrap(), value(20));
        }
        drop(p);
        log.close().unwrap();
        // After a reopen, the first read of the batch verifies it again.
        let log = Log::open(dir.path(), config).unwrap();
        let p = log.partition(0).unwrap();
        assert!(read_one(&p, 20).unwrap_err().is_corruption());
        assert_eq!(read_one(&p, 30).unwrap(), value(30));
    }
}
