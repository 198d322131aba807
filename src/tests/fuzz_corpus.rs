//! Replays the saved fuzz corpora (`fuzz/corpus/<target>/`) through the
//! harnesses on stable, so every input that once found a bug or new
//! coverage keeps being checked by `cargo test`.

use std::fs;
use std::path::PathBuf;

use crate::fuzzing::{fuzz_batch, fuzz_open_partition, fuzz_operations};

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("corpus")
        .join(target);
    let mut files: Vec<(PathBuf, Vec<u8>)> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {} is missing: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.is_file())
        .map(|path| {
            let bytes = fs::read(&path).expect("corpus file");
            (path, bytes)
        })
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "corpus {} is empty: the replay would prove nothing",
        dir.display()
    );
    files
}

fn replay(target: &str, harness: fn(&[u8])) {
    let failing: Vec<String> = corpus(target)
        .into_iter()
        .filter(|(_, bytes)| std::panic::catch_unwind(|| harness(bytes)).is_err())
        .map(|(path, _)| path.display().to_string())
        .collect();
    assert!(
        failing.is_empty(),
        "inputs that fail their harness: {failing:#?}"
    );
}

#[test]
fn batch_corpus_replays() {
    replay("batch", fuzz_batch);
}

#[test]
fn open_partition_corpus_replays() {
    replay("open_partition", fuzz_open_partition);
}

#[test]
fn operations_corpus_replays() {
    replay("operations", fuzz_operations);
}

/// splitmix64, for deterministic pseudo-random inputs.
fn pseudo_random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) as u8
        })
        .collect()
}

/// Inputs for the smoke runs; `DURABLE_LOG_FUZZ_SMOKE_INPUTS` raises the
/// count.
fn smoke_inputs() -> u64 {
    std::env::var("DURABLE_LOG_FUZZ_SMOKE_INPUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

/// Runs a harness over pseudo-random inputs of several lengths: a cheap
/// stand-in for a fuzzing run on stable.
fn smoke(harness: fn(&[u8])) {
    for seed in 0..smoke_inputs() {
        let len = [8, 64, 300, 1500][(seed % 4) as usize];
        let bytes = pseudo_random_bytes(seed, len);
        let outcome = std::panic::catch_unwind(|| harness(&bytes));
        assert!(outcome.is_ok(), "seed {seed} (len {len}) fails its harness");
    }
}

#[test]
fn batch_smoke() {
    smoke(fuzz_batch);
}

#[test]
fn open_partition_smoke() {
    smoke(fuzz_open_partition);
}

#[test]
fn operations_smoke() {
    smoke(fuzz_operations);
}

/// Writes the seed corpora into `fuzz/corpus/<target>/`: valid batches as
/// the log encodes them, and inputs that steer the other harnesses into
/// each of their modes. Run once by hand (`cargo test --lib -- --ignored
/// write_seed_corpora`); the fuzzer grows the corpora from there.
#[test]
#[ignore = "writes files into fuzz/corpus; run by hand to regenerate seeds"]
fn write_seed_corpora() {
    use bytes::Bytes;

    use crate::record::batch::{EncodedBatch, ProducerStamp};
    use crate::record::{Header, Record};

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("corpus");
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = root.join(target);
        fs::create_dir_all(&dir).expect("mkdir");
        fs::write(dir.join(name), bytes).expect("write seed");
    };

    let batches: Vec<(&str, Vec<Record>, Vec<u64>, u64)> = vec![
        (
            "one_record",
            vec![Record::new("hello").with_timestamp(1_000)],
            vec![0],
            0,
        ),
        (
            "keyed_tombstone",
            vec![
                Record::new("v").with_key("k").with_timestamp(5),
                Record::tombstone("k").with_timestamp(4),
            ],
            vec![0, 1],
            42,
        ),
        (
            "headers",
            vec![Record {
                key: None,
                value: Some(Bytes::new()),
                timestamp: Some(-7),
                headers: vec![
                    Header {
                        key: "trace".into(),
                        value: Some(Bytes::from_static(b"abc")),
                    },
                    Header {
                        key: String::new(),
                        value: None,
                    },
                ],
            }],
            vec![0],
            7,
        ),
        (
            "offset_gaps",
            (0..4)
                .map(|i| Record::new(vec![i as u8; 20]).with_timestamp(i64::MAX - i))
                .collect(),
            vec![0, 2, 3, 9],
            1 << 40,
        ),
        (
            "extreme_timestamps",
            vec![
                Record::new("a").with_timestamp(i64::MIN),
                Record::new("b").with_timestamp(i64::MAX),
            ],
            vec![0, 1],
            u64::MAX - 1,
        ),
    ];
    for (name, records, deltas, base) in &batches {
        let mut batch = EncodedBatch::encode_with_deltas(records, |i| deltas[i], 0, u32::MAX)
            .expect("seed batch encodes");
        if *name == "keyed_tombstone" {
            batch.set_producer(ProducerStamp {
                producer_id: 9,
                producer_epoch: 1,
                base_sequence: 100,
            });
            batch.set_leader_epoch(3);
        }
        write("batch", name, batch.seal(*base));
    }
    for (name, compression) in [
        ("compressed_lz4", crate::Compression::Lz4),
        ("compressed_zstd", crate::Compression::Zstd { level: 3 }),
    ] {
        let records: Vec<Record> = (0..6)
            .map(|i| {
                Record::new(vec![b'x'; 40])
                    .with_key(format!("key-{i}"))
                    .with_timestamp(1_000 + i)
            })
            .collect();
        let mut batch = EncodedBatch::encode(&records, 0, u32::MAX).expect("seed batch encodes");
        batch.compress(compression);
        write("batch", name, batch.seal(3));
    }
    write("batch", "empty", b"");
    write("batch", "zero_header", &[0u8; 64]);

    for (i, mode) in [0u8, 0, 0, 0, 1, 1, 1, 2, 2, 2].into_iter().enumerate() {
        let mut bytes = pseudo_random_bytes(1000 + i as u64, [120, 400, 900][i % 3]);
        // Seed, two config bytes, then the mode.
        bytes[10] = mode;
        write("open_partition", &format!("seed_{i}_mode_{mode}"), &bytes);
    }
    for i in 0..8u64 {
        let bytes = pseudo_random_bytes(2000 + i, [64, 256, 700, 1500][(i % 4) as usize]);
        write("operations", &format!("seed_{i}"), &bytes);
    }
}

/// Runs one input through one harness, for following a crash found by the
/// fuzzer: `DURABLE_LOG_FUZZ_REPLAY=<target>:<file> cargo test --lib --
/// --ignored replay_one_input --nocapture` (with `DURABLE_LOG_FUZZ_TRACE=1`
/// to print each step).
#[test]
#[ignore = "replays the file named by DURABLE_LOG_FUZZ_REPLAY"]
fn replay_one_input() {
    let spec =
        std::env::var("DURABLE_LOG_FUZZ_REPLAY").expect("DURABLE_LOG_FUZZ_REPLAY=<target>:<file>");
    let (target, path) = spec.split_once(':').expect("<target>:<file>");
    let bytes = fs::read(path).expect("input file");
    let harness: fn(&[u8]) = match target {
        "batch" => fuzz_batch,
        "open_partition" => fuzz_open_partition,
        "operations" => fuzz_operations,
        other => panic!("unknown target {other}"),
    };
    harness(&bytes);
}

/// Inputs that reproduced bugs the fuzzers found, each named after its
/// bug; all are fixed, and each must stay so.
#[test]
fn open_partition_regressions_replay() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("regressions")
        .join("open_partition");
    let mut failing = Vec::new();
    for entry in fs::read_dir(&dir).expect("regressions directory") {
        let path = entry.expect("directory entry").path();
        let bytes = fs::read(&path).expect("regression input");
        if std::panic::catch_unwind(|| fuzz_open_partition(&bytes)).is_err() {
            failing.push(path.display().to_string());
        }
    }
    assert!(failing.is_empty(), "inputs that fail: {failing:#?}");
}

mod found_bugs {
    //! The fuzzers' findings in `src/`, reduced to direct tests.

    use std::path::Path;
    use std::sync::Arc;

    use crate::record::batch::{BASE_OFFSET_OFFSET, CRC_OFFSET, LENGTH_OFFSET};
    use crate::storage::Storage;
    use crate::storage::sim::SimStorage;
    use crate::{Config, Durability, Log, Record};

    const DIR: &str = "/log";

    fn open(sim: &SimStorage) -> crate::Result<Log> {
        let config = Config::default().durability(Durability::None);
        Log::open_with_storage(Path::new(DIR), config, Arc::new(sim.clone()))
    }

    fn segment(base: u64, suffix: &str) -> String {
        format!("{DIR}/0/{base:020}{suffix}")
    }

    /// Two batches of two records each, the same size, at offsets 0..=1
    /// and 2..=3 of one segment, closed cleanly; returns the size of one
    /// batch.
    fn two_batches(sim: &SimStorage) -> usize {
        let log = open(sim).expect("open");
        let p = log.partition(0).expect("partition");
        // No timestamps: records take the append time, so the segment is
        // young and does not roll.
        let batch = [Record::new("aaaa"), Record::new("bbbb")];
        p.append(&batch).expect("append");
        let one = p.size_bytes() as usize;
        p.append(&batch).expect("append");
        assert_eq!(p.segment_count(), 1);
        assert_eq!(p.size_bytes() as usize, 2 * one);
        log.close().expect("close");
        one
    }

    /// Recovery scans a segment that is not the last without bounding its
    /// offsets by the next segment's base, so a segment holding 0..=2
    /// followed by one based at 1 opens with end offset 1 and a reader
    /// that returns offsets 1 and 2 at and past it.
    #[test]

    fn a_segment_overlapping_the_next_is_corruption() {
        let sim = SimStorage::new(1);
        let log = open(&sim).expect("open");
        let p = log.partition(0).expect("partition");
        p.append(&[Record::new("a"), Record::new("b"), Record::new("c")])
            .expect("append");
        log.close().expect("close");
        sim.open(Path::new(&segment(1, ".log")), true)
            .expect("create");
        for path in [
            format!("{DIR}/0/checkpoint"),
            segment(0, ".index"),
            segment(0, ".timeindex"),
        ] {
            sim.remove_file(Path::new(&path)).expect("remove");
        }
        match open(&sim) {
            Err(e) => assert!(e.is_corruption(), "{e}"),
            Ok(log) => {
                let p = log.partition(0).expect("partition");
                let end = p.end_offset();
                for record in p.reader(p.start_offset()) {
                    let Ok(record) = record else { break };
                    assert!(
                        record.offset < end,
                        "offset {} at or past {end}",
                        record.offset
                    );
                }
            }
        }
    }

    /// Gives the second batch of [`two_batches`] the base offset `base`,
    /// with a valid checksum.
    fn rebase_second_batch(sim: &SimStorage, one: usize, base: u64) {
        let path = segment(0, ".log");
        let contents = sim.file_contents(&path).expect("segment");
        let mut moved = contents[one..2 * one].to_vec();
        moved[BASE_OFFSET_OFFSET..BASE_OFFSET_OFFSET + 8].copy_from_slice(&base.to_le_bytes());
        let crc = crc32fast::hash(&moved[LENGTH_OFFSET..]);
        moved[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
        sim.write_raw(&path, one as u64, &moved).expect("write");
    }

    /// A segment trusted by a clean shutdown is not read at open; a
    /// checksum-valid batch in it whose offsets (1..=2) overlap the batch
    /// before it (0..=1) is served by `Partition::read` as is: offsets 0,
    /// 1, 1, 2.
    #[test]

    fn read_never_returns_an_offset_twice() {
        let sim = SimStorage::new(2);
        let one = two_batches(&sim);
        rebase_second_batch(&sim, one, 1);
        let log = open(&sim).expect("open");
        let p = log.partition(0).expect("partition");
        match p.read(0, 1 << 20) {
            Err(e) => assert!(e.is_corruption(), "{e}"),
            Ok(records) => {
                let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
                assert!(
                    offsets.windows(2).all(|w| w[0] < w[1]),
                    "offsets {offsets:?}"
                );
            }
        }
    }

    /// As above, with the second batch's offsets moved to 5..=6 while the
    /// checkpoint says the partition ends at 4: the reader returns records
    /// at offsets past the end offset.
    #[test]

    fn a_reader_never_passes_the_end_offset() {
        let sim = SimStorage::new(3);
        let one = two_batches(&sim);
        rebase_second_batch(&sim, one, 5);
        let log = open(&sim).expect("open");
        let p = log.partition(0).expect("partition");
        let end = p.end_offset();
        assert_eq!(end, 4);
        for record in p.reader(0) {
            let Ok(record) = record else { break };
            assert!(record.offset < end, "offset {} past {end}", record.offset);
        }
    }
}
