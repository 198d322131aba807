//! Durability modes: what `durable_offset` says under `Sync`, `Interval`
//! and `None`, and that `sync` and `close` make everything durable.

mod log_common;

use std::time::{Duration, Instant};

use durable_log::{Config, Durability, Record};
use log_common::*;

#[test]
fn with_sync_every_append_is_durable_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::default().durability(Durability::Sync));
    let p = log.partition(0).unwrap();
    assert_eq!(p.durable_offset(), 0);
    for i in 0..10 {
        let a = p.append(&[record(2 * i), record(2 * i + 1)]).unwrap();
        assert_eq!(p.durable_offset(), a.last_offset + 1);
        assert_eq!(p.durable_offset(), p.end_offset());
    }
}

#[test]
fn with_none_appends_are_durable_only_after_sync() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default().durability(Durability::None);
    {
        let log = open(dir.path(), config.clone());
        let p = log.partition(0).unwrap();
        append_each(&p, 10, record);
        assert_eq!(p.end_offset(), 10);
        assert_eq!(p.durable_offset(), 0, "nothing synced yet");
        assert_eq!(
            offsets(&read_all(&p)),
            (0..10).collect::<Vec<_>>(),
            "but readable"
        );
        p.sync().unwrap();
        assert_eq!(p.durable_offset(), 10);
        append_each(&p, 5, record);
        assert_eq!(p.durable_offset(), 10);
        log.sync().unwrap();
        assert_eq!(p.durable_offset(), 15);
        append_each(&p, 5, record);
        log.close().unwrap();
    }
    let log = open(dir.path(), config);
    assert!(log.recovery_reports()[0].clean);
    let p = log.partition(0).unwrap();
    assert_eq!(p.durable_offset(), 20);
    let all = read_all(&p);
    assert_eq!(offsets(&all), (0..20).collect::<Vec<_>>());
    for r in &all {
        assert_same(r, &record(r.offset));
    }
}

#[test]
fn with_none_a_roll_makes_the_rolled_segment_durable() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default()
        .durability(Durability::None)
        .segment_bytes(500);
    let log = open(dir.path(), config);
    let p = log.partition(0).unwrap();
    append_each(&p, 20, record);
    let files = log_files(dir.path(), 0);
    assert!(files.len() > 2);
    let active_base = base_of(files.last().unwrap());
    assert_eq!(p.durable_offset(), active_base);
    assert!(p.durable_offset() < p.end_offset());
    p.sync().unwrap();
    assert_eq!(p.durable_offset(), p.end_offset());
}

#[test]
fn with_interval_appends_work_and_sync_makes_them_durable() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default()
        .partitions(2)
        .durability(Durability::Interval(Duration::from_secs(3600)));
    let log = open(dir.path(), config);
    for id in 0..2 {
        append_each(&log.partition(id).unwrap(), 10, record);
    }
    for id in 0..2 {
        let p = log.partition(id).unwrap();
        assert!(p.durable_offset() <= p.end_offset());
    }
    log.sync().unwrap();
    for id in 0..2 {
        let p = log.partition(id).unwrap();
        assert_eq!(p.durable_offset(), 10);
        assert_eq!(p.durable_offset(), p.end_offset());
    }
}

#[test]
fn with_interval_the_background_thread_syncs_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default().durability(Durability::Interval(Duration::from_millis(10)));
    let log = open(dir.path(), config);
    let p = log.partition(0).unwrap();
    p.append(&[Record::new("a"), Record::new("b")]).unwrap();
    // A liveness bound, not a speed requirement.
    let give_up = Instant::now() + Duration::from_secs(60);
    while p.durable_offset() < 2 && Instant::now() < give_up {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(p.durable_offset(), 2);
}

#[test]
fn closing_makes_every_mode_durable_and_clean() {
    for durability in [
        Durability::Sync,
        Durability::Interval(Duration::from_secs(3600)),
        Durability::None,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::default().durability(durability).segment_bytes(700);
        {
            let log = open(dir.path(), config.clone());
            append_each(&log.partition(0).unwrap(), 25, record);
            log.close().unwrap();
        }
        let log = open(dir.path(), config);
        let report = &log.recovery_reports()[0];
        assert!(report.clean, "{durability:?}");
        assert_eq!(report.segments_scanned, 0, "{durability:?}");
        let p = log.partition(0).unwrap();
        assert_eq!(p.durable_offset(), 25, "{durability:?}");
        let all = read_all(&p);
        assert_eq!(offsets(&all), (0..25).collect::<Vec<_>>(), "{durability:?}");
        for r in &all {
            assert_same(r, &record(r.offset));
        }
    }
}
