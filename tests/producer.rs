//! The batching, idempotent producer and idempotent appends.

use std::collections::HashMap;
use std::time::Duration;

use durable_log::{
    Compression, Config, Durability, Error, Log, Producer, ProducerConfig, Record, WhenFull,
};

#[test]
fn every_sent_record_lands_once_in_key_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), Config::default().partitions(4)).unwrap();
    let producer = Producer::new(&log, ProducerConfig::default().batch_bytes(2048)).unwrap();
    let mut handles = Vec::new();
    for i in 0..3000u32 {
        let key = format!("user-{}", i % 13);
        let record = Record::new(format!("{i}")).with_key(key.clone());
        handles.push((key, i, producer.send(record).unwrap()));
    }
    for i in 0..500u32 {
        handles.push((
            String::new(),
            10_000 + i,
            producer
                .send(Record::new(format!("{}", 10_000 + i)))
                .unwrap(),
        ));
    }
    producer.flush().unwrap();
    let mut last_offset: HashMap<(u32, String), u64> = HashMap::new();
    let mut landed: HashMap<(u32, u64), u32> = HashMap::new();
    for (key, i, handle) in handles {
        assert!(handle.is_done());
        let a = handle.wait().unwrap();
        assert_eq!(a.base_offset, a.last_offset);
        if !key.is_empty() {
            assert_eq!(a.partition, log.partition_for_key(key.as_bytes()));
            let previous = last_offset.insert((a.partition, key), a.base_offset);
            assert!(
                previous.is_none_or(|p| p < a.base_offset),
                "order within a key"
            );
        }
        assert!(
            landed.insert((a.partition, a.base_offset), i).is_none(),
            "two records, one offset"
        );
    }
    let mut total = 0;
    for p in 0..4 {
        let partition = log.partition(p).unwrap();
        for r in partition.reader(0) {
            let r = r.unwrap();
            let i = landed[&(p, r.offset)];
            assert_eq!(r.value.as_deref(), Some(i.to_string().as_bytes()));
            total += 1;
        }
    }
    assert_eq!(total, 3500);
    producer.close().unwrap();
}

#[test]
fn a_lone_record_is_sent_after_the_linger() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), Config::default()).unwrap();
    let producer = Producer::new(
        &log,
        ProducerConfig::default().linger(Duration::from_millis(20)),
    )
    .unwrap();
    let handle = producer.send(Record::new("alone")).unwrap();
    // No flush: the linger sends it.
    let a = handle.wait().unwrap();
    assert_eq!(a.base_offset, 0);
    assert_eq!(log.partition(0).unwrap().durable_offset(), 1);
}

#[test]
fn a_retried_batch_gets_its_original_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), Config::default()).unwrap();
    let p = log.partition(0).unwrap();
    let batch = |n: u32| -> Vec<Record> { (0..n).map(|i| Record::new(format!("v{i}"))).collect() };
    let first = p.append_idempotent(&batch(3), 7, 0, 0).unwrap();
    p.append(&batch(1)).unwrap();
    let retry = p.append_idempotent(&batch(3), 7, 0, 0).unwrap();
    assert_eq!(
        (retry.base_offset, retry.last_offset),
        (first.base_offset, first.last_offset)
    );
    assert_eq!(p.end_offset(), 4);
    let next = p.append_idempotent(&batch(2), 7, 0, 3).unwrap();
    assert_eq!(next.base_offset, 4);
    // A gap, an older epoch, a newer epoch not starting at 0.
    assert!(matches!(
        p.append_idempotent(&batch(1), 7, 0, 9),
        Err(Error::OutOfOrderSequence {
            producer_id: 7,
            expected: 5,
            found: 9
        })
    ));
    p.append_idempotent(&batch(1), 7, 1, 0).unwrap();
    assert!(matches!(
        p.append_idempotent(&batch(1), 7, 0, 5),
        Err(Error::ProducerFenced {
            producer_id: 7,
            epoch: 0,
            current_epoch: 1
        })
    ));
    assert!(matches!(
        p.append_idempotent(&batch(1), 7, 2, 4),
        Err(Error::OutOfOrderSequence { expected: 0, .. })
    ));
    assert_eq!(p.end_offset(), 7);
}

#[test]
fn producer_state_survives_reopen_and_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default().segment_bytes(1024);
    let batch = |i: u32| -> Vec<Record> {
        vec![Record::new(format!("value number {i} with some padding"))]
    };
    let mut originals = Vec::new();
    {
        let log = Log::open(dir.path(), config.clone()).unwrap();
        let p = log.partition(0).unwrap();
        for i in 0..40u32 {
            originals.push(
                p.append_idempotent(&batch(i), 1, 0, i32::try_from(i).unwrap())
                    .unwrap(),
            );
        }
        assert!(p.segment_count() > 3);
        log.close().unwrap();
    }
    let log = Log::open(dir.path(), config).unwrap();
    let p = log.partition(0).unwrap();
    // The last five batches are still recognised after a clean reopen.
    for i in 35..40u32 {
        let again = p
            .append_idempotent(&batch(i), 1, 0, i32::try_from(i).unwrap())
            .unwrap();
        assert_eq!(again, originals[i as usize]);
    }
    assert_eq!(p.end_offset(), 40);
    assert!(matches!(
        p.append_idempotent(&batch(0), 1, 0, 41),
        Err(Error::OutOfOrderSequence { expected: 40, .. })
    ));
    assert_eq!(
        p.append_idempotent(&batch(40), 1, 0, 40)
            .unwrap()
            .base_offset,
        40
    );
    // Truncation forgets the batches it cut.
    p.truncate_to(38).unwrap();
    let again = p.append_idempotent(&batch(38), 1, 0, 38).unwrap();
    assert_eq!(again.base_offset, 38, "appended anew after the truncation");
}

#[test]
fn a_restarted_producer_fences_its_old_instance() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), Config::default()).unwrap();
    let old = Producer::new(&log, ProducerConfig::default().identity((42, 0))).unwrap();
    old.send(Record::new("a").with_key("k"))
        .unwrap()
        .wait()
        .unwrap();
    let new = Producer::new(&log, ProducerConfig::default().identity((42, 1))).unwrap();
    new.send(Record::new("b").with_key("k"))
        .unwrap()
        .wait()
        .unwrap();
    let err = old
        .send(Record::new("zombie").with_key("k"))
        .unwrap()
        .wait()
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::ProducerFenced {
                producer_id: 42,
                epoch: 0,
                current_epoch: 1
            }
        ),
        "{err}"
    );
}

#[test]
fn producer_ids_are_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let log = Log::open(dir.path(), Config::default()).unwrap();
        for _ in 0..3 {
            let producer = Producer::new(&log, ProducerConfig::default()).unwrap();
            seen.push(producer.identity().unwrap().0);
        }
        drop(log);
    }
    let mut unique = seen.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "{seen:?}");
}

#[test]
fn a_full_buffer_is_refused_or_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), Config::default().durability(Durability::None)).unwrap();
    let config = ProducerConfig::default()
        .batch_bytes(1024)
        .buffer_bytes(1024)
        .linger(Duration::from_secs(3600))
        .when_full(WhenFull::Error);
    let producer = Producer::new(&log, config).unwrap();
    let mut refused = false;
    for _ in 0..100 {
        match producer.send(Record::new(vec![0u8; 100])) {
            Ok(_) => {}
            Err(Error::BufferFull { limit: 1024 }) => {
                refused = true;
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(refused);
    producer.flush().unwrap();
    producer.send(Record::new(vec![0u8; 100])).unwrap();
}

#[test]
fn a_producer_may_compress_differently_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), Config::default()).unwrap();
    let producer = Producer::new(
        &log,
        ProducerConfig::default().compression(Compression::Lz4),
    )
    .unwrap();
    for i in 0..1000 {
        producer
            .send(Record::new(format!("{{\"event\":\"click\",\"n\":{i}}}")).with_key("k"))
            .unwrap();
    }
    producer.flush().unwrap();
    let stats = log.partition(0).unwrap().stats();
    assert!(
        stats.compression_ratio() > 2.0,
        "{}",
        stats.compression_ratio()
    );
    assert_eq!(log.partition(0).unwrap().reader(0).count(), 1000);
}

#[test]
fn a_producer_codec_the_log_could_not_read_back_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), Config::default().max_batch_bytes(512 << 20)).unwrap();
    let err = Producer::new(
        &log,
        ProducerConfig::default().compression(Compression::Lz4),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidConfig {
                field: "compression",
                ..
            }
        ),
        "{err}"
    );
    Producer::new(&log, ProducerConfig::default()).unwrap();
}
