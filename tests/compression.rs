//! Per-batch compression through the public API.

use durable_log::{Compression, Config, Durability, Error, Log, Record};

fn log_line(i: u64) -> String {
    format!(
        "{{\"ts\":{},\"level\":\"INFO\",\"service\":\"orders\",\"msg\":\"order {i} accepted\"}}",
        1_700_000_000_000u64 + i
    )
}

fn batch(from: u64, n: u64) -> Vec<Record> {
    (from..from + n)
        .map(|i| {
            Record::new(log_line(i))
                .with_key(format!("k{}", i % 7))
                .with_header("i", i.to_string())
        })
        .collect()
}

fn check_all(log: &Log, end: u64) {
    let p = log.partition(0).unwrap();
    let records: Vec<_> = p.reader(0).collect::<Result<_, _>>().unwrap();
    assert_eq!(records.len() as u64, end);
    for (i, r) in records.iter().enumerate() {
        let i = i as u64;
        assert_eq!(r.offset, i);
        assert_eq!(r.value.as_deref(), Some(log_line(i).as_bytes()));
        assert_eq!(r.key.as_deref(), Some(format!("k{}", i % 7).as_bytes()));
        assert_eq!(
            r.headers[0].value.as_deref(),
            Some(i.to_string().as_bytes())
        );
    }
}

#[test]
fn compressed_batches_read_back_identically_and_take_less_space() {
    let mut sizes = Vec::new();
    for compression in [
        Compression::None,
        Compression::Lz4,
        Compression::Zstd { level: 1 },
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::default()
            .compression(compression)
            .durability(Durability::None);
        let log = Log::open(dir.path(), config).unwrap();
        let p = log.partition(0).unwrap();
        for b in 0..20 {
            p.append(&batch(b * 100, 100)).unwrap();
        }
        check_all(&log, 2000);
        sizes.push(p.size_bytes());
        log.close().unwrap();
        let log = Log::open(dir.path(), Config::default()).unwrap();
        check_all(&log, 2000);
    }
    assert!(
        sizes[1] * 2 < sizes[0],
        "lz4 {} vs none {}",
        sizes[1],
        sizes[0]
    );
    assert!(
        sizes[2] * 3 < sizes[0],
        "zstd {} vs none {}",
        sizes[2],
        sizes[0]
    );
}

#[test]
fn one_partition_holds_batches_of_every_codec() {
    let dir = tempfile::tempdir().unwrap();
    let codecs = [
        Compression::Lz4,
        Compression::None,
        Compression::Zstd { level: 5 },
        Compression::Lz4,
    ];
    let mut end = 0;
    for (round, compression) in codecs.into_iter().enumerate() {
        let config = Config::default()
            .compression(compression)
            .segment_bytes(8 * 1024);
        let log = Log::open(dir.path(), config).unwrap();
        let p = log.partition(0).unwrap();
        for _ in 0..5 {
            let a = p.append(&batch(end, 50)).unwrap();
            assert_eq!(a.base_offset, end);
            end += 50;
        }
        check_all(&log, end);
        if round % 2 == 1 {
            drop(log);
        } else {
            log.close().unwrap();
        }
    }
    let log = Log::open(dir.path(), Config::default()).unwrap();
    check_all(&log, end);
    assert!(log.partition(0).unwrap().segment_count() > 1);
}

#[test]
fn truncating_into_a_compressed_batch_keeps_its_first_records() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default().compression(Compression::Zstd { level: 3 });
    let log = Log::open(dir.path(), config).unwrap();
    let p = log.partition(0).unwrap();
    p.append(&batch(0, 100)).unwrap();
    p.append(&batch(100, 100)).unwrap();
    p.truncate_to(150).unwrap();
    assert_eq!(p.end_offset(), 150);
    check_all(&log, 150);
    let a = p.append(&batch(150, 10)).unwrap();
    assert_eq!(a.base_offset, 150);
    log.close().unwrap();
    let log = Log::open(dir.path(), Config::default()).unwrap();
    check_all(&log, 160);
}

#[test]
fn invalid_compression_settings_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    for level in [0, 23, 1000] {
        let config = Config::default().compression(Compression::Zstd { level });
        let err = Log::open(dir.path(), config).unwrap_err();
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
    }
    let config = Config::default()
        .compression(Compression::Lz4)
        .max_batch_bytes(u32::MAX - 1);
    let err = Log::open(dir.path(), config).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidConfig {
                field: "max_batch_bytes",
                ..
            }
        ),
        "{err}"
    );
}
