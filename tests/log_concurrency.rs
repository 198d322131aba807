//! Appenders and tailing readers running at the same time.
//!
//! `DURABLE_LOG_TEST_RECORDS` sets how many batches each appender writes
//! (default 150).

mod log_common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use durable_log::{Config, Durability, Partition, Record, StoredRecord};
use log_common::*;

fn batches_per_writer() -> u64 {
    std::env::var("DURABLE_LOG_TEST_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150)
}

/// Records in writer `w`'s batch number `b`: 1, 2 or 3.
fn batch_len(w: u64, b: u64) -> u64 {
    (w + b) % 3 + 1
}

/// Parses a value written by `writer_record`.
fn parse(r: &StoredRecord) -> (u64, u64) {
    let text = std::str::from_utf8(r.value.as_deref().unwrap()).unwrap();
    let (w, seq) = text.split_once(':').unwrap();
    (w.parse().unwrap(), seq.parse().unwrap())
}

fn writer_record(w: u64, seq: u64) -> Record {
    Record::new(format!("{w}:{seq}")).with_key(format!("writer-{w}"))
}

/// Tails `p` from offset 0 until it has seen `total` records or the
/// writers are done and nothing more comes; returns what it saw.
fn tail(p: &Partition, total: u64, writers_done: &AtomicBool) -> Vec<StoredRecord> {
    let mut seen = Vec::new();
    let mut reader = p.reader(0);
    loop {
        for r in reader.by_ref() {
            seen.push(r.expect("a tailing read"));
        }
        if seen.len() as u64 >= total {
            return seen;
        }
        let next = seen.len() as u64;
        if !p.wait_for(next, Duration::from_millis(200)).unwrap()
            && writers_done.load(Ordering::Acquire)
            && p.end_offset() <= next
        {
            return seen;
        }
    }
}

/// Every offset once, in order; every writer's records once, in the order
/// it wrote them, each batch contiguous.
fn check_history(seen: &[StoredRecord], writers: u64, per_writer: &HashMap<u64, u64>) {
    let mut next_seq: HashMap<u64, u64> = HashMap::new();
    let mut batch_left: Option<(u64, u64)> = None;
    for (i, r) in seen.iter().enumerate() {
        assert_eq!(r.offset, i as u64, "offsets are contiguous from 0");
        let (w, seq) = parse(r);
        assert!(w < writers);
        let expected = next_seq.entry(w).or_insert(0);
        assert_eq!(seq, *expected, "writer {w}'s records in order, once each");
        *expected += 1;
        assert_eq!(r.key.as_deref(), Some(format!("writer-{w}").as_bytes()));
        if let Some((writer, left)) = batch_left {
            assert_eq!(writer, w, "a batch is not interleaved with another");
            batch_left = (left > 1).then_some((w, left - 1));
        } else {
            // The first record of a batch: find its length from the seq.
            let mut b = 0;
            let mut first = 0;
            while first + batch_len(w, b) <= seq {
                first += batch_len(w, b);
                b += 1;
            }
            assert_eq!(first, seq, "a batch starts with its first record");
            let len = batch_len(w, b);
            batch_left = (len > 1).then_some((w, len - 1));
        }
    }
    for w in 0..writers {
        assert_eq!(next_seq.get(&w).copied().unwrap_or(0), per_writer[&w]);
    }
}

#[test]
fn sync_appenders_and_tailing_readers_see_every_record_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default()
        .durability(Durability::Sync)
        .segment_bytes(4096)
        .index_interval_bytes(256);
    let log = open(dir.path(), config);
    let p = log.partition(0).unwrap();
    let writers = 4u64;
    let batches = batches_per_writer();
    let per_writer: HashMap<u64, u64> = (0..writers)
        .map(|w| (w, (0..batches).map(|b| batch_len(w, b)).sum()))
        .collect();
    let total: u64 = per_writer.values().sum();
    let writers_done = Arc::new(AtomicBool::new(false));

    let readers: Vec<_> = (0..2)
        .map(|_| {
            let p = p.clone();
            let done = writers_done.clone();
            thread::spawn(move || tail(&p, total, &done))
        })
        .collect();
    let monitor = {
        let p = p.clone();
        let done = writers_done.clone();
        thread::spawn(move || {
            let mut previous = 0;
            let mut samples = 0u64;
            while !done.load(Ordering::Acquire) {
                // Durable first: the end offset only grows after it.
                let durable = p.durable_offset();
                let end = p.end_offset();
                assert!(durable <= end, "durable {durable} > end {end}");
                assert!(durable >= previous, "the durable offset went back");
                previous = durable;
                samples += 1;
                thread::yield_now();
            }
            samples
        })
    };
    let appenders: Vec<_> = (0..writers)
        .map(|w| {
            let p = p.clone();
            thread::spawn(move || {
                let mut seq = 0;
                for b in 0..batches {
                    let n = batch_len(w, b);
                    let batch: Vec<Record> = (seq..seq + n).map(|s| writer_record(w, s)).collect();
                    let a = p.append(&batch).unwrap();
                    assert_eq!(a.last_offset - a.base_offset + 1, n);
                    assert!(
                        p.durable_offset() > a.last_offset,
                        "a Sync append is durable when it returns"
                    );
                    seq += n;
                }
            })
        })
        .collect();
    for a in appenders {
        a.join().unwrap();
    }
    writers_done.store(true, Ordering::Release);
    assert!(monitor.join().unwrap() > 0);
    assert_eq!(p.end_offset(), total);
    assert_eq!(p.durable_offset(), total);
    assert!(p.segment_count() > 1, "rolls happened while readers tailed");
    for r in readers {
        let seen = r.join().unwrap();
        assert_eq!(seen.len() as u64, total);
        check_history(&seen, writers, &per_writer);
    }
    check_history(&read_all(&p), writers, &per_writer);
}

#[test]
fn concurrent_keyed_appends_over_partitions_keep_per_key_order() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default()
        .partitions(3)
        .durability(Durability::Interval(Duration::from_millis(5)))
        .segment_bytes(2048);
    let log = Arc::new(open(dir.path(), config));
    let writers = 4u64;
    let per_writer = batches_per_writer();
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let log = log.clone();
            thread::spawn(move || {
                for seq in 0..per_writer {
                    let a = log.append(writer_record(w, seq)).unwrap();
                    assert_eq!(
                        a.partition,
                        log.partition_for_key(format!("writer-{w}").as_bytes())
                    );
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    log.sync().unwrap();
    let mut next_seq: HashMap<u64, u64> = HashMap::new();
    let mut total = 0;
    for id in 0..3 {
        let p = log.partition(id).unwrap();
        assert_eq!(p.durable_offset(), p.end_offset());
        let records = read_all(&p);
        assert_eq!(offsets(&records), (0..p.end_offset()).collect::<Vec<_>>());
        for r in &records {
            let (w, seq) = parse(r);
            let expected = next_seq.entry(w).or_insert(0);
            assert_eq!(seq, *expected, "writer {w} in order");
            *expected += 1;
        }
        total += records.len() as u64;
    }
    assert_eq!(total, writers * per_writer);
}

#[test]
fn readers_started_at_different_offsets_agree_while_appends_run() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::default().segment_bytes(3000));
    let p = log.partition(0).unwrap();
    let total = 3 * batches_per_writer();
    let done = Arc::new(AtomicBool::new(false));
    let appender = {
        let p = p.clone();
        thread::spawn(move || {
            for i in 0..total {
                p.append(&[record(i)]).unwrap();
            }
        })
    };
    let readers: Vec<_> = [0, 1, 7]
        .into_iter()
        .map(|start| {
            let p = p.clone();
            let done = done.clone();
            thread::spawn(move || {
                p.wait_for(start, Duration::from_secs(3600)).unwrap();
                let mut reader = p.reader(start);
                let mut got = Vec::new();
                while (got.len() as u64) < total - start {
                    match reader.next() {
                        Some(r) => got.push(r.unwrap()),
                        None => {
                            let next = start + got.len() as u64;
                            let more = p.wait_for(next, Duration::from_millis(200)).unwrap();
                            assert!(more || !done.load(Ordering::Acquire) || p.end_offset() > next);
                        }
                    }
                }
                (start, got)
            })
        })
        .collect();
    appender.join().unwrap();
    done.store(true, Ordering::Release);
    for r in readers {
        let (start, got) = r.join().unwrap();
        assert_eq!(offsets(&got), (start..total).collect::<Vec<_>>());
        for r in &got {
            assert_same(r, &record(r.offset));
        }
    }
}
