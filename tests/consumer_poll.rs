//! What a poll returns: order, limits, fairness between partitions, and
//! waking when a record arrives.

#![cfg(feature = "offsets")]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use durable_log::offsets::{AutoOffsetReset, Consumer, ConsumerConfig, ConsumerRecord};
use durable_log::{Config, Durability, Error, Log, Record};

/// Long enough never to be reached by a poll that works.
const LONG: Duration = Duration::from_secs(60);

fn open(dir: &Path, partitions: u32) -> Log {
    Log::open(dir, Config::default().partitions(partitions)).expect("open")
}

fn fill(log: &Log, p: u32, n: u64) {
    let partition = log.partition(p).expect("partition");
    let base = partition.end_offset();
    let records: Vec<Record> = (base..base + n)
        .map(|o| {
            Record::new(format!("{p}-{o}"))
                .with_key(format!("k{o}"))
                .with_header("h", format!("{o}"))
        })
        .collect();
    partition.append(&records).expect("append");
}

fn consumer(log: &Log, max_poll_records: usize, partitions: &[u32]) -> Consumer {
    let config = ConsumerConfig::new("g")
        .auto_commit(false)
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .max_poll_records(max_poll_records);
    let mut c = Consumer::new(log, config).expect("consumer");
    c.assign(partitions).expect("assign");
    c
}

fn counts(records: &[ConsumerRecord]) -> BTreeMap<u32, usize> {
    let mut counts = BTreeMap::new();
    for r in records {
        *counts.entry(r.partition).or_default() += 1;
    }
    counts
}

#[test]
fn records_come_in_offset_order_with_their_contents() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 1);
    for n in [1, 5, 3, 7, 1] {
        fill(&log, 0, n);
    }
    let timestamp = log
        .partition(0)
        .unwrap()
        .reader(0)
        .next()
        .unwrap()
        .unwrap()
        .timestamp;
    let mut c = consumer(&log, 4, &[0]);
    let mut seen = Vec::new();
    loop {
        let records = c.poll(Duration::ZERO).unwrap();
        if records.is_empty() {
            break;
        }
        assert!(records.len() <= 4, "max_poll_records");
        seen.extend(records);
    }
    assert_eq!(seen.len(), 17);
    for (i, r) in seen.iter().enumerate() {
        let o = i as u64;
        assert_eq!((r.partition, r.offset), (0, o));
        assert_eq!(r.value.as_deref(), Some(format!("0-{o}").as_bytes()));
        assert_eq!(r.key.as_deref(), Some(format!("k{o}").as_bytes()));
        assert_eq!(r.headers.len(), 1);
        assert_eq!(r.headers[0].key, "h");
        assert_eq!(
            r.headers[0].value.as_deref(),
            Some(format!("{o}").as_bytes())
        );
        assert!(r.timestamp >= timestamp);
    }
}

#[test]
fn partitions_share_each_poll() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 3);
    for p in 0..3 {
        fill(&log, p, 100);
    }
    let mut c = consumer(&log, 10, &[0, 1, 2]);
    let mut totals: BTreeMap<u32, usize> = BTreeMap::new();
    let mut next: BTreeMap<u32, u64> = BTreeMap::new();
    for _ in 0..9 {
        let records = c.poll(Duration::ZERO).unwrap();
        assert_eq!(records.len(), 10);
        let counts = counts(&records);
        assert_eq!(counts.len(), 3, "every partition in every poll: {counts:?}");
        assert!(counts.values().all(|&n| n == 3 || n == 4), "{counts:?}");
        for (p, n) in counts {
            *totals.entry(p).or_default() += n;
        }
        // Order within each partition holds across polls.
        for r in &records {
            let expected = next.entry(r.partition).or_default();
            assert_eq!(r.offset, *expected);
            *expected += 1;
        }
    }
    // The extra record goes round: 90 records, 30 each.
    assert!(totals.values().all(|&n| n == 30), "{totals:?}");
}

#[test]
fn one_record_per_poll_goes_round_the_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 3);
    for p in 0..3 {
        fill(&log, p, 5);
    }
    let mut c = consumer(&log, 1, &[0, 1, 2]);
    let order: Vec<(u32, u64)> = (0..6)
        .map(|_| {
            let records = c.poll(Duration::ZERO).unwrap();
            assert_eq!(records.len(), 1);
            (records[0].partition, records[0].offset)
        })
        .collect();
    assert_eq!(order, [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1)]);
}

#[test]
fn a_busy_partition_does_not_starve_a_quiet_one() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 2);
    fill(&log, 0, 1000);
    fill(&log, 1, 1);
    let mut c = consumer(&log, 10, &[0, 1]);
    let records = c.poll(Duration::ZERO).unwrap();
    assert_eq!(records.len(), 10);
    assert_eq!(counts(&records).get(&1), Some(&1));
    // And when the quiet one has nothing, the busy one fills the poll.
    let records = c.poll(Duration::ZERO).unwrap();
    assert_eq!(counts(&records), BTreeMap::from([(0, 10)]));
}

#[test]
fn a_poll_wakes_when_a_record_is_appended() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 3);
    for partitions in [&[1][..], &[0, 1, 2][..]] {
        let mut c = consumer(&log, 10, partitions);
        c.seek_to_end(1).unwrap();
        let _ = c.position(1).unwrap();
        let p = log.partition(1).unwrap();
        let appender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            p.append(&[Record::new("late")]).unwrap().base_offset
        });
        // Returns with the record, long before the timeout.
        let records = c.poll(LONG).unwrap();
        let offset = appender.join().unwrap();
        assert_eq!(records.len(), 1, "{partitions:?}");
        assert_eq!((records[0].partition, records[0].offset), (1, offset));
        assert_eq!(records[0].value.as_deref(), Some(&b"late"[..]));
    }
}

#[test]
fn a_poll_with_nothing_to_read_returns_nothing_after_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 2);
    let mut c = consumer(&log, 10, &[0, 1]);
    assert_eq!(c.poll(Duration::ZERO).unwrap(), []);
    assert_eq!(c.poll(Duration::from_millis(30)).unwrap(), []);
    let mut none = consumer(&log, 10, &[]);
    assert_eq!(none.poll(Duration::from_millis(1)).unwrap(), []);
}

#[test]
fn records_written_by_a_batching_producer_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 1);
    let mut c = consumer(&log, 100, &[0]);
    let producer = durable_log::Producer::new(&log, Default::default()).unwrap();
    let handles: Vec<_> = (0..20)
        .map(|i| producer.send(Record::new(format!("0-{i}"))).unwrap())
        .collect();
    let mut seen = Vec::new();
    while seen.len() < 20 {
        seen.extend(c.poll(LONG).unwrap().into_iter().map(|r| r.offset));
    }
    assert_eq!(seen, (0..20).collect::<Vec<u64>>());
    for h in handles {
        h.wait().unwrap();
    }
}

#[test]
fn without_sync_durability_records_are_read_before_they_are_synced() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), Config::default().durability(Durability::None)).unwrap();
    fill(&log, 0, 3);
    let p = log.partition(0).unwrap();
    assert!(p.durable_offset() < 3);
    let mut c = consumer(&log, 10, &[0]);
    assert_eq!(c.poll(Duration::ZERO).unwrap().len(), 3);
}

#[test]
fn a_closed_log_ends_polling() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 1);
    let mut c = consumer(&log, 10, &[0]);
    log.close().unwrap();
    assert!(matches!(c.poll(Duration::from_secs(1)), Err(Error::Closed)));
}

#[test]
fn a_consumer_can_move_to_another_thread() {
    fn send<T: Send>(_: &T) {}
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 1);
    fill(&log, 0, 2);
    let mut c = consumer(&log, 10, &[0]);
    send(&c);
    let records = std::thread::spawn(move || c.poll(Duration::ZERO).unwrap())
        .join()
        .unwrap();
    assert_eq!(records.len(), 2);
}
