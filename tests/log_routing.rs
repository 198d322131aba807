//! `Log::append` routing: keyed records go where Kafka's default
//! partitioner would put them; unkeyed ones stick to a partition for a
//! while, then move on.

mod log_common;

use std::collections::{BTreeSet, HashMap};

use durable_log::{Config, Durability, Record};

/// Routing does not depend on durability; skipping fsyncs keeps these fast.
fn config(partitions: u32) -> Config {
    Config::default()
        .partitions(partitions)
        .durability(Durability::None)
}
use log_common::*;

/// Kafka's murmur2 of these keys (test vectors of Kafka's `UtilsTest`).
const MURMUR2_VECTORS: [(&str, i32); 6] = [
    ("21", -973_932_308),
    ("foobar", -790_332_482),
    ("a-little-bit-long-string", -985_981_536),
    ("a-little-bit-longer-string", -1_486_304_829),
    (
        "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
        -58_897_971,
    ),
    ("abc", 479_470_107),
];

/// Kafka's `toPositive(murmur2(key)) % partitions`.
fn kafka_partition(hash: i32, partitions: u32) -> u32 {
    ((hash & 0x7fff_ffff) as u32) % partitions
}

#[test]
fn keyed_records_land_on_the_partition_kafka_would_choose() {
    for partitions in [1, 2, 3, 7, 31] {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), config(partitions));
        for (key, hash) in MURMUR2_VECTORS {
            let expected = kafka_partition(hash, partitions);
            assert_eq!(
                log.partition_for_key(key.as_bytes()),
                expected,
                "key {key:?} over {partitions} partitions"
            );
            let a = log.append(Record::new("v").with_key(key)).unwrap();
            assert_eq!(a.partition, expected, "key {key:?} over {partitions}");
            let stored = &log
                .partition(a.partition)
                .unwrap()
                .read(a.base_offset, 1)
                .unwrap()[0];
            assert_eq!(stored.key.as_deref(), Some(key.as_bytes()));
        }
    }
}

#[test]
fn the_same_key_always_goes_to_the_same_partition_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), config(5));
    let mut placed: HashMap<String, u32> = HashMap::new();
    for round in 0..4 {
        for k in 0..40 {
            let key = format!("user-{k}");
            let a = log
                .append(Record::new(format!("{key}/{round}")).with_key(key.clone()))
                .unwrap();
            let first = *placed.entry(key.clone()).or_insert(a.partition);
            assert_eq!(a.partition, first, "{key} moved");
            assert_eq!(a.partition, log.partition_for_key(key.as_bytes()));
        }
    }
    let used: BTreeSet<u32> = placed.values().copied().collect();
    assert!(
        used.len() > 1,
        "40 keys spread over more than one partition"
    );
    // Within its partition, each key's records keep their order.
    for id in 0..5 {
        let mut rounds: HashMap<String, Vec<u32>> = HashMap::new();
        for r in read_all(&log.partition(id).unwrap()) {
            let value = String::from_utf8(r.value.unwrap().to_vec()).unwrap();
            let (key, round) = value.split_once('/').unwrap();
            assert_eq!(r.key.as_deref(), Some(key.as_bytes()));
            assert_eq!(placed[key], id);
            rounds
                .entry(key.to_string())
                .or_default()
                .push(round.parse().unwrap());
        }
        for (key, seen) in rounds {
            assert_eq!(seen, vec![0, 1, 2, 3], "{key}");
        }
    }
}

#[test]
fn an_empty_key_is_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), config(8));
    let expected = log.partition_for_key(b"");
    for _ in 0..20 {
        assert_eq!(
            log.append(Record::new("v").with_key("")).unwrap().partition,
            expected
        );
    }
}

#[test]
fn unkeyed_records_stick_to_a_partition_then_move_on() {
    let dir = tempfile::tempdir().unwrap();
    let partitions = 4;
    let log = open(dir.path(), config(partitions));
    let count = 400u64;
    let mut route = Vec::new();
    for i in 0..count {
        let a = log
            .append(Record::new(vec![(i % 256) as u8; 1024]))
            .unwrap();
        route.push(a.partition);
    }
    // Runs of consecutive records on one partition.
    let mut runs: Vec<(u32, usize)> = Vec::new();
    for &p in &route {
        match runs.last_mut() {
            Some((last, n)) if *last == p => *n += 1,
            _ => runs.push((p, 1)),
        }
    }
    assert!(runs.len() > 4, "unkeyed records moved between partitions");
    let complete = &runs[..runs.len() - 1];
    let run_length = complete[0].1;
    assert!(run_length > 1, "records stick to a partition");
    assert!(
        complete.iter().all(|&(_, n)| n == run_length),
        "equal-sized records switch after the same number: {runs:?}"
    );
    let used: BTreeSet<u32> = route.iter().copied().collect();
    assert!(used.len() >= 3, "the load spreads: {used:?}");
    // Nothing is lost or duplicated.
    let total: u64 = (0..partitions)
        .map(|id| log.partition(id).unwrap().end_offset())
        .sum();
    assert_eq!(total, count);
}

#[test]
fn a_log_with_one_partition_takes_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), config(1));
    for i in 0..10u64 {
        let keyed = log.append(record(i)).unwrap();
        assert_eq!((keyed.partition, keyed.base_offset), (0, 2 * i));
        let unkeyed = log.append(Record::new("x")).unwrap();
        assert_eq!((unkeyed.partition, unkeyed.base_offset), (0, 2 * i + 1));
    }
}
