//! `Partition::batches`: the same records as `Partition::reader`, borrowed
//! from their batch; damage is an error, as for every read.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;

use durable_log::{Compression, Config, Durability, Log, Partition, Record, StoredRecord};

fn config(compression: Compression) -> Config {
    Config::default()
        .segment_bytes(2048)
        .max_index_bytes(1024)
        .durability(Durability::None)
        .compression(compression)
}

/// Batches of 1 to 12 records with keys, tombstones and headers, across
/// several segments.
fn fill(p: &Partition) {
    for b in 0..40u64 {
        let batch: Vec<Record> = (0..1 + b % 12)
            .map(|i| {
                let n = b * 100 + i;
                match n % 5 {
                    0 => Record::tombstone(format!("key {n}")),
                    1 => Record::new(format!("value {n} {}", "v".repeat((n % 40) as usize)))
                        .with_header("h", format!("{n}"))
                        .with_header("", ""),
                    _ => Record::new(format!("value {n}")).with_key(format!("key {n}")),
                }
            })
            .collect();
        p.append(&batch).unwrap();
    }
}

/// What `batches(from)` yields, as owned records.
fn via_batches(p: &Partition, from: u64) -> Vec<StoredRecord> {
    let mut out = Vec::new();
    for batch in p.batches(from) {
        let batch = batch.unwrap();
        assert!(batch.last_offset() >= from);
        for record in batch.records() {
            let r = record.unwrap();
            assert!(r.offset >= batch.base_offset() && r.offset <= batch.last_offset());
            out.push(StoredRecord {
                offset: r.offset,
                timestamp: r.timestamp,
                key: r.key.map(|k| k.to_vec().into()),
                value: r.value.map(|v| v.to_vec().into()),
                headers: r
                    .headers()
                    .map(|h| durable_log::Header {
                        key: h.key.to_owned(),
                        value: h.value.map(|v| v.to_vec().into()),
                    })
                    .collect(),
            });
        }
    }
    out
}

#[test]
fn batches_hold_the_records_the_reader_returns() {
    for compression in [Compression::None, Compression::Lz4] {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), config(compression)).unwrap();
        let p = log.partition(0).unwrap();
        fill(&p);
        assert!(p.segment_count() > 3);
        let end = p.end_offset();
        for from in (0..=end).step_by(7).chain([1, end - 1, end]) {
            let expected: Vec<StoredRecord> = p.reader(from).map(Result::unwrap).collect();
            assert_eq!(
                via_batches(&p, from),
                expected,
                "{compression:?} from {from}"
            );
        }
    }
}

#[test]
fn batches_go_on_with_what_is_appended_later() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config(Compression::None)).unwrap();
    let p = log.partition(0).unwrap();
    p.append(&[Record::new("a"), Record::new("b")]).unwrap();
    let mut batches = p.batches(1);
    let first = batches.next().unwrap().unwrap();
    let values: Vec<_> = first.records().map(|r| r.unwrap().value.unwrap()).collect();
    assert_eq!(values, [&b"b"[..]]);
    assert!(batches.next().is_none());
    p.append(&[Record::new("c")]).unwrap();
    let next = batches.next().unwrap().unwrap();
    assert_eq!(next.base_offset(), 2);
    assert_eq!(batches.next_offset(), 3);
    assert!(matches!(
        p.batches(4).next(),
        Some(Err(durable_log::Error::OffsetOutOfRange { .. }))
    ));
}

#[test]
fn a_damaged_batch_is_an_error_and_ends_the_iteration() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config(Compression::None).segment_bytes(1 << 20)).unwrap();
    let p = log.partition(0).unwrap();
    fill(&p);
    let path = dir.path().join("0").join(format!("{:020}.log", 0));
    let contents = fs::read(&path).unwrap();
    let at = contents.windows(9).position(|w| w == b"value 702").unwrap();
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.write_at(b"X", at as u64).unwrap();
    let mut seen = 0;
    let mut errors = 0;
    for batch in p.batches(0) {
        match batch {
            Ok(batch) => seen += batch.records().count(),
            Err(e) => {
                assert!(e.is_corruption(), "{e}");
                errors += 1;
            }
        }
    }
    assert_eq!(errors, 1);
    assert_eq!(seen, (0..7u64).map(|b| 1 + b % 12).sum::<u64>() as usize);
}

#[test]
fn borrowed_records_compare_by_their_fields_and_headers() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config(Compression::None)).unwrap();
    let p = log.partition(0).unwrap();
    p.append(&[
        Record::new("v").with_key("k").with_header("h", "1"),
        Record::new("v").with_key("k").with_header("h", "2"),
    ])
    .unwrap();
    let (a, b) = (
        p.batches(0).next().unwrap().unwrap(),
        p.batches(0).next().unwrap().unwrap(),
    );
    let (a, b): (Vec<_>, Vec<_>) = (
        a.records().map(Result::unwrap).collect(),
        b.records().map(Result::unwrap).collect(),
    );
    assert_eq!(a, b, "the same records read twice");
    assert_ne!(
        a[0].headers().collect::<Vec<_>>(),
        a[1].headers().collect::<Vec<_>>()
    );
    let mut second = a[1];
    second.offset = a[0].offset;
    second.timestamp = a[0].timestamp;
    assert_ne!(a[0], second, "the same fields but another header value");
    assert!(format!("{:?}", a[0]).contains("\"h\""));
}
