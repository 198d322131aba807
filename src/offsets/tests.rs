//! Consumers on a simulated disk: what a power loss does to delivery.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, Durability};
use crate::error::Error;
use crate::log::Log;
use crate::record::Record;
use crate::storage::sim::{Fault, SimStorage};

use super::store::OFFSETS_DIR;
use super::{AutoOffsetReset, Consumer, ConsumerConfig, OffsetStore};

const LOG_DIR: &str = "/log";

fn open(sim: &SimStorage) -> (Log, OffsetStore) {
    let log = Log::open_with_storage(
        Path::new(LOG_DIR),
        Config::default()
            .durability(Durability::Sync)
            .max_index_bytes(4096),
        Arc::new(sim.clone()),
    )
    .expect("open log");
    let store = OffsetStore::open_on(
        &Path::new(LOG_DIR).join(OFFSETS_DIR),
        Arc::new(sim.clone()),
        1 << 20,
        1,
    )
    .expect("open store");
    (log, store)
}

fn consumer(log: &Log, store: &OffsetStore) -> Consumer {
    let config = ConsumerConfig::new("g")
        .auto_commit(false)
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .max_poll_records(3);
    let mut consumer = Consumer::with_store(log, store.clone(), config).expect("consumer");
    consumer.assign(&[0]).expect("assign");
    consumer
}

/// Process-then-commit across power losses at random moments: every
/// acknowledged record is delivered, in order, and a restart goes back at
/// most to the last acknowledged commit.
#[test]
fn power_loss_never_skips_an_acknowledged_record() {
    for seed in 0..16 {
        let sim = SimStorage::new(seed);
        let mut acked = 0u64;
        // The offset after the last record delivered, over all runs.
        let mut delivered_to = 0u64;
        let mut committed_acked = 0u64;
        for round in 0..4u64 {
            let (log, store) = open(&sim);
            let p = log.partition(0).expect("partition");
            assert!(p.end_offset() >= acked, "seed {seed}: the log lost records");
            let mut c = consumer(&log, &store);
            let start = c.position(0).expect("position");
            assert!(
                start >= committed_acked && start <= delivered_to,
                "seed {seed} round {round}: restart at {start}, committed {committed_acked}, delivered to {delivered_to}"
            );
            let mut expected = start;
            for step in 0..6u64 {
                let value = format!("{round}-{step}");
                p.append(&[Record::new(value)]).expect("append");
                acked = p.end_offset();
                for record in c.poll(Duration::ZERO).expect("poll") {
                    assert_eq!(record.offset, expected, "seed {seed}: a gap or a repeat");
                    expected += 1;
                }
                delivered_to = delivered_to.max(expected);
                if step % 2 == 1 {
                    c.commit_sync().expect("commit");
                    committed_acked = c.committed(0).expect("committed").unwrap_or(0);
                }
            }
            // A power loss, with this round's consumer and log still open.
            sim.crash();
            drop(c);
            drop(store);
            drop(log);
        }
    }
}

/// A record written but not synced (its fsync failed) is never returned.
#[test]
fn a_record_that_is_not_durable_is_not_returned() {
    let sim = SimStorage::new(7);
    let (log, store) = open(&sim);
    let p = log.partition(0).expect("partition");
    p.append(&[Record::new("durable")]).expect("append");
    let mut c = consumer(&log, &store);
    let first = c.poll(Duration::ZERO).expect("poll");
    assert_eq!(first.len(), 1);
    sim.fail_after(1, Fault::SyncFails);
    assert!(p.append(&[Record::new("lost")]).is_err());
    assert_eq!((p.durable_offset(), p.end_offset()), (1, 2));
    assert_eq!(c.poll(Duration::ZERO).expect("poll"), []);
    assert!(matches!(
        c.poll(Duration::from_secs(5)),
        Err(Error::Poisoned { partition: 0 })
    ));
    assert_eq!(c.position(0).expect("position"), 1);
}
