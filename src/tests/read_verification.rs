//! When reads verify a batch's checksum: at the first read of each batch by
//! the segment object that holds it, or at every read with
//! `Config::verify_every_read`. Bytes are damaged behind the log's back with
//! the simulated disk's `write_raw`, which reads see at once.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::segment::{LOG_SUFFIX, file_name};
use crate::storage::sim::{Fault, SimStorage};
use crate::{Config, Durability, Log, Partition, Record};

const DIR: &str = "/log";
const BATCHES: u64 = 6;
const RECORDS_PER_BATCH: u64 = 10;

fn config() -> Config {
    Config::default()
        .segment_bytes(1 << 20)
        .max_index_bytes(1024)
        .retention_age(None)
        .durability(Durability::Sync)
}

fn open(sim: &SimStorage, config: &Config) -> Log {
    Log::open_with_storage(Path::new(DIR), config.clone(), Arc::new(sim.clone())).unwrap()
}

/// About 500 bytes: a batch of ten is larger than the 4 KiB block the memo
/// keeps one batch for (smaller batches may evict each other).
fn value(offset: u64) -> String {
    format!("value of record {offset:04} {}", ".".repeat(480))
}

fn log_file(base: u64) -> PathBuf {
    Path::new(DIR).join("0").join(file_name(base, LOG_SUFFIX))
}

/// A log of `BATCHES` batches of `RECORDS_PER_BATCH` records in one segment.
fn build(sim: &SimStorage, config: &Config) -> Log {
    let log = open(sim, config);
    let p = log.partition(0).unwrap();
    for b in 0..BATCHES {
        let batch: Vec<Record> = (0..RECORDS_PER_BATCH)
            .map(|i| Record::new(value(b * RECORDS_PER_BATCH + i)))
            .collect();
        p.append(&batch).unwrap();
    }
    log
}

/// Flips a byte inside the value of the record at `offset`, in the segment
/// file starting at `base`, as another program writing into it would.
fn damage_value(sim: &SimStorage, base: u64, offset: u64) {
    let path = log_file(base);
    let contents = sim.file_contents(&path).unwrap();
    let needle = value(offset);
    let at = contents
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .expect("the value is stored uncompressed");
    let last = at + needle.len() - 1;
    sim.write_raw(&path, last as u64, &[contents[last] ^ 0x01])
        .unwrap();
}

fn read_one(p: &Partition, offset: u64) -> crate::Result<String> {
    let record = p.reader(offset).next().expect("a record")?;
    assert_eq!(record.offset, offset);
    Ok(String::from_utf8(record.value.unwrap().to_vec()).unwrap())
}

fn scan(p: &Partition) -> crate::Result<Vec<String>> {
    p.reader(0)
        .map(|r| r.map(|r| String::from_utf8(r.value.unwrap().to_vec()).unwrap()))
        .collect()
}

#[test]
fn damage_before_the_first_read_of_a_batch_is_found_in_both_modes() {
    for verify_every_read in [false, true] {
        let sim = SimStorage::new(1);
        let config = config().verify_every_read(verify_every_read);
        let log = build(&sim, &config);
        let p = log.partition(0).unwrap();
        // Other batches are read (and remembered) first.
        assert_eq!(read_one(&p, 5).unwrap(), value(5));
        assert_eq!(read_one(&p, 47).unwrap(), value(47));
        damage_value(&sim, 0, 23);
        for offset in [20, 23, 29] {
            let err = read_one(&p, offset).unwrap_err();
            assert!(err.is_corruption(), "{verify_every_read}: {err}");
        }
        assert!(scan(&p).unwrap_err().is_corruption());
        assert!(p.read(21, 1).unwrap_err().is_corruption());
        assert_eq!(read_one(&p, 47).unwrap(), value(47), "other batches read");
    }
}

#[test]
fn a_batch_already_verified_is_trusted_unless_every_read_verifies() {
    for verify_every_read in [false, true] {
        let sim = SimStorage::new(2);
        let config = config().verify_every_read(verify_every_read);
        let log = build(&sim, &config);
        let p = log.partition(0).unwrap();
        assert_eq!(scan(&p).unwrap().len() as u64, BATCHES * RECORDS_PER_BATCH);
        damage_value(&sim, 0, 33);
        let read = read_one(&p, 33);
        if verify_every_read {
            assert!(read.unwrap_err().is_corruption());
            assert!(read_one(&p, 31).unwrap_err().is_corruption());
            assert!(scan(&p).unwrap_err().is_corruption());
        } else {
            // The damage came after the batch passed its checksum: this
            // process trusts the batch, and hands out the bytes as they are.
            assert_ne!(read.unwrap(), value(33));
            assert_eq!(read_one(&p, 31).unwrap(), value(31));
            assert_eq!(scan(&p).unwrap().len() as u64, BATCHES * RECORDS_PER_BATCH);
        }
        // A reopen starts with nothing verified.
        drop(p);
        log.close().unwrap();
        let log = open(&sim, &config);
        let p = log.partition(0).unwrap();
        assert!(read_one(&p, 33).unwrap_err().is_corruption());
        assert_eq!(read_one(&p, 43).unwrap(), value(43));
    }
}

#[test]
fn a_segment_rewritten_by_truncation_verifies_its_batches_again() {
    let sim = SimStorage::new(3);
    let config = config();
    let log = build(&sim, &config);
    let p = log.partition(0).unwrap();
    assert!(scan(&p).is_ok());
    // Cutting inside the last batch writes a new file for the segment.
    p.truncate_to(55).unwrap();
    damage_value(&sim, 0, 12);
    assert!(read_one(&p, 12).unwrap_err().is_corruption());
    assert_eq!(read_one(&p, 54).unwrap(), value(54));
}

#[test]
fn after_a_failed_fsync_every_read_verifies() {
    let sim = SimStorage::new(4);
    let config = config();
    let log = build(&sim, &config);
    let p = log.partition(0).unwrap();
    assert!(scan(&p).is_ok());
    sim.fail_after(1, Fault::SyncFails);
    assert!(p.append(&[Record::new("lost")]).is_err());
    damage_value(&sim, 0, 7);
    assert!(read_one(&p, 7).unwrap_err().is_corruption());
    assert_eq!(read_one(&p, 17).unwrap(), value(17));
}

#[test]
fn point_reads_anywhere_in_a_batch_agree_with_a_scan() {
    // Point reads in an order that makes them learn where records start
    // (the marks of each batch) and then use it, checked against the scan.
    let sim = SimStorage::new(5);
    let log = build(&sim, &config());
    let p = log.partition(0).unwrap();
    let all = scan(&p).unwrap();
    for round in 0..3 {
        for offset in (0..BATCHES * RECORDS_PER_BATCH).rev() {
            assert_eq!(
                read_one(&p, offset).unwrap(),
                all[offset as usize],
                "{round}"
            );
            let chunk = p.read(offset, 1).unwrap();
            assert_eq!(chunk[0].offset, offset);
        }
    }
}
