//! Harnesses shared by the fuzz targets (`fuzz/fuzz_targets/`) and by the
//! tests that replay their corpora on stable (`src/tests/fuzz_corpus.rs`).
//!
//! Each harness reads arbitrary bytes as a program of choices and never
//! panics on any of them: every `assert!` here is an invariant of the crate,
//! so a panic is a bug (in the crate, or in the harness's model of it).
//!
//! The bytes are read by [`Input`], which answers zero once they run out,
//! so every input is a complete program and a longer input only adds
//! choices; this keeps libFuzzer's mutations meaningful.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;

use crate::checkpoint::{Checkpoint, State};
use crate::codec::{CODEC_LZ4, CODEC_NONE, CODEC_ZSTD};
use crate::config::{Compression, Config, Durability};
use crate::error::Error;
use crate::log::Log;
use crate::partition::{Partition, now_ms};
use crate::record::batch::{
    BatchHeader, CRC_OFFSET, EncodedBatch, HEADER_BYTES, LENGTH_OFFSET, ProducerStamp, Records,
    verify_batch,
};
use crate::record::{Header, Record, StoredRecord};
use crate::segment::{INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX, file_name};
use crate::storage::Storage;
use crate::storage::sim::SimStorage;

/// Where the harnesses put the log on the simulated disk.
const LOG_DIR: &str = "/log";

/// Timestamps far in the future: never old enough for retention, never old
/// enough to roll a segment by age, whatever the clock says.
const FUTURE_MS: i64 = 1 << 60;

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// A segment age limit that no timestamp the harnesses write reaches,
/// except the most negative ones.
const NEVER: Duration = Duration::from_secs(1 << 40);

/// Bounds on what one input may build, so that a run stays fast and small.
const OPERATIONS_MAX: usize = 64;
const RECORDS_PER_BATCH_MAX: u8 = 4;
const LOG_FILE_BYTES_MAX: usize = 16 * 1024;

/// Prints what a harness does when `DURABLE_LOG_FUZZ_TRACE` is set, to
/// follow a failing input step by step.
macro_rules! trace {
    ($($arg:tt)*) => {
        if tracing() {
            eprintln!($($arg)*);
        }
    };
}

fn tracing() -> bool {
    static TRACING: OnceLock<bool> = OnceLock::new();
    *TRACING.get_or_init(|| std::env::var_os("DURABLE_LOG_FUZZ_TRACE").is_some())
}

/// Arbitrary bytes read as a sequence of choices; zero once exhausted.
struct Input<'a> {
    bytes: &'a [u8],
}

impl<'a> Input<'a> {
    fn new(bytes: &'a [u8]) -> Input<'a> {
        Input { bytes }
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn byte(&mut self) -> u8 {
        match self.bytes.split_first() {
            Some((&b, rest)) => {
                self.bytes = rest;
                b
            }
            None => 0,
        }
    }

    /// A number in `0..n` (`n` > 0).
    fn below(&mut self, n: u8) -> u8 {
        self.byte() % n
    }

    fn flag(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for b in &mut out {
            *b = self.byte();
        }
        out
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }

    /// Up to `max` bytes, the count chosen by one byte.
    fn take(&mut self, max: usize) -> &'a [u8] {
        let wanted = usize::from(self.byte()) % (max + 1);
        let n = wanted.min(self.bytes.len());
        let (taken, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        taken
    }
}

// ---------------------------------------------------------------------------
// Batches

/// Checks one batch as every read does (header, bounds, checksum, then each
/// record) and, when it decodes, re-encodes its records with the writer
/// (`EncodedBatch::encode_with_deltas`, as a truncation rewrites a batch)
/// and checks the round trip.
///
/// Run twice: on `data` as it is, and on a copy whose length and checksum
/// fields are made to match its bytes, so that the record decoder is reached
/// without the fuzzer having to forge a CRC-32.
///
/// A compressed batch (LZ4 or Zstandard) is also re-encoded compressed with
/// its codec and must decode to the same records.
///
/// The format is not canonical: a decoder accepts overlong varints, a
/// `max_timestamp` or `last_offset_delta` in the header that differs from
/// the records', the log-append-time attribute, and a first record whose
/// timestamp delta is not zero, none of which the encoder writes. So the
/// harness asserts that decoding the re-encoded batch gives the same records
/// and header fields, that the re-encoding is never longer than the input
/// when the header fields are the encoder's, and that it is byte-for-byte the
/// input exactly when it is as long (every varint minimal).
pub fn fuzz_batch(data: &[u8]) {
    check_batch(data);
    if data.len() >= HEADER_BYTES
        && let Ok(length) = u32::try_from(data.len())
    {
        let mut sealed = data.to_vec();
        sealed[LENGTH_OFFSET..LENGTH_OFFSET + 4].copy_from_slice(&length.to_le_bytes());
        let crc = crc32fast::hash(&sealed[LENGTH_OFFSET..]);
        sealed[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
        check_batch(&sealed);
    }
}

/// Decodes every record of a batch; `None` if the batch or a record does
/// not check out. Asserts that the record iterator ends after an error.
fn decode(bytes: &[u8]) -> Option<(BatchHeader, Vec<StoredRecord>)> {
    let header = verify_batch(bytes, u32::MAX).ok()?;
    assert_eq!(
        header.batch_length as usize,
        bytes.len(),
        "a verified batch is exactly its length"
    );
    let mut records = Vec::new();
    let mut iter = Records::new(header, Bytes::copy_from_slice(bytes));
    while let Some(item) = iter.next() {
        match item {
            Ok(record) => records.push(record),
            Err(_) => {
                assert!(iter.next().is_none(), "records end after an error");
                return None;
            }
        }
    }
    Some((header, records))
}

fn check_batch(bytes: &[u8]) {
    let Some((header, records)) = decode(bytes) else {
        return;
    };
    assert_eq!(records.len() as u64, u64::from(header.record_count));
    let mut previous: Option<u64> = None;
    for record in &records {
        assert!(record.offset >= header.base_offset && record.offset <= header.last_offset());
        assert!(
            previous.is_none_or(|p| record.offset > p),
            "offsets strictly increase within a batch"
        );
        previous = Some(record.offset);
    }

    if header.codec() != CODEC_NONE {
        let compression = match header.codec() {
            CODEC_LZ4 => Compression::Lz4,
            CODEC_ZSTD => Compression::Zstd { level: 1 },
            other => panic!("codec {other} passed verification"),
        };
        let recompressed = reencode(&header, &records, compression);
        let (_, redecoded) =
            decode(&recompressed).expect("a re-compressed batch verifies and decodes");
        assert_eq!(redecoded, records, "a re-compressed batch decodes the same");
    }
    let reencoded = reencode(&header, &records, Compression::None);
    let (again, redecoded) = decode(&reencoded).expect("a re-encoded batch verifies and decodes");
    assert_eq!(redecoded, records, "decode(encode(decode(x))) == decode(x)");
    assert_eq!(again.base_offset, header.base_offset);
    assert_eq!(again.record_count, header.record_count);
    assert_eq!(again.leader_epoch, header.leader_epoch);
    assert_eq!(again.producer_id, header.producer_id);
    assert_eq!(again.producer_epoch, header.producer_epoch);
    assert_eq!(again.base_sequence, header.base_sequence);
    assert_eq!(again.attributes, 0);
    let first = &records[0];
    let last = &records[records.len() - 1];
    let max_timestamp = records.iter().map(|r| r.timestamp).max().expect("records");
    assert_eq!(again.first_timestamp, first.timestamp);
    assert_eq!(again.max_timestamp, max_timestamp);
    assert_eq!(again.last_offset(), last.offset);

    // The header fields the encoder decides itself, as it would write them.
    let canonical_header = header.attributes == 0
        && header.first_timestamp == first.timestamp
        && header.max_timestamp == max_timestamp
        && header.last_offset() == last.offset;
    if canonical_header {
        assert!(
            reencoded.len() <= bytes.len(),
            "the encoder writes minimal varints: {} > {}",
            reencoded.len(),
            bytes.len()
        );
        if reencoded.len() == bytes.len() {
            assert_eq!(
                reencoded, bytes,
                "a batch without overlong varints encodes canonically"
            );
        }
    }
}

/// Encodes decoded records again, keeping offsets, timestamps, producer
/// stamp and leader epoch, as a truncation's rewrite does.
fn reencode(header: &BatchHeader, records: &[StoredRecord], compression: Compression) -> Vec<u8> {
    let deltas: Vec<u64> = records
        .iter()
        .map(|r| r.offset - header.base_offset)
        .collect();
    let owned: Vec<Record> = records
        .iter()
        .map(|r| Record {
            key: r.key.clone(),
            value: r.value.clone(),
            timestamp: Some(r.timestamp),
            headers: r.headers.clone(),
        })
        .collect();
    let mut batch =
        EncodedBatch::encode_with_deltas(&owned, |i| deltas[i], header.first_timestamp, u32::MAX)
            .expect("records that decoded from a batch fit in one");
    batch.set_producer(ProducerStamp {
        producer_id: header.producer_id,
        producer_epoch: header.producer_epoch,
        base_sequence: header.base_sequence,
    });
    batch.set_leader_epoch(header.leader_epoch);
    batch.compress(compression);
    batch.seal(header.base_offset).to_vec()
}

// ---------------------------------------------------------------------------
// Shared building blocks

/// A small configuration chosen by the input: tiny segments and indexes so
/// that a few records roll segments and fill indexes.
fn small_config(input: &mut Input<'_>) -> Config {
    let b = input.byte();
    let c = input.byte();
    Config::default()
        .partitions(1 + u32::from(b & 1))
        .segment_bytes([256, 1024, 4096, 16 * 1024][usize::from((b >> 1) & 3)])
        .index_interval_bytes([1, 100, 4096][usize::from((b >> 3) % 3)])
        .max_index_bytes([64, 100, 1024][usize::from((b >> 5) % 3)])
        .max_batch_bytes(4096)
        .segment_max_age(if c & 1 == 1 { DAY } else { NEVER })
        .retention_age(Some(DAY))
        .retention_bytes((c & 2 == 2).then_some(2048))
        .retention_check_interval(DAY)
        .durability(if c & 4 == 4 {
            Durability::None
        } else {
            Durability::Sync
        })
        .compression(compression(c >> 3))
}

/// A compression setting for a number.
fn compression(n: u8) -> Compression {
    match n % 4 {
        0 | 1 => Compression::None,
        2 => Compression::Lz4,
        _ => Compression::Zstd { level: 1 },
    }
}

/// A timestamp: mostly small ("old") or far in the future, sometimes an
/// extreme.
fn timestamp(input: &mut Input<'_>) -> i64 {
    let b = input.byte();
    match b % 8 {
        0..=2 => i64::from(b),
        3..=5 => FUTURE_MS + i64::from(b),
        6 => [i64::MIN, i64::MAX, -1, 0][usize::from(b >> 3) % 4],
        _ => input.u64() as i64,
    }
}

/// A record; its value starts with `serial`, so records are told apart.
fn record(input: &mut Input<'_>, serial: u32) -> Record {
    let flags = input.byte();
    let key = (flags & 1 == 1).then(|| Bytes::copy_from_slice(input.take(12)));
    let value = (flags & 2 == 0).then(|| {
        let filler = [0usize, 7, 100, 700][usize::from((flags >> 2) & 3)];
        let mut value = serial.to_le_bytes().to_vec();
        value.resize(value.len() + filler, flags);
        Bytes::from(value)
    });
    let mut headers = Vec::new();
    if flags & 0x10 == 0x10 {
        for _ in 0..=input.below(2) {
            headers.push(Header {
                key: String::from_utf8_lossy(input.take(6)).into_owned(),
                value: input.flag().then(|| Bytes::copy_from_slice(input.take(6))),
            });
        }
    }
    Record {
        key,
        value,
        timestamp: Some(timestamp(input)),
        headers,
    }
}

/// What reading `record` back at `offset` must give.
fn stored(record: &Record, offset: u64) -> StoredRecord {
    StoredRecord {
        offset,
        timestamp: record.timestamp.expect("the harnesses set timestamps"),
        key: record.key.clone(),
        value: record.value.clone(),
        headers: record.headers.clone(),
    }
}

fn open_log(sim: &SimStorage, config: &Config) -> crate::Result<Log> {
    Log::open_with_storage(Path::new(LOG_DIR), config.clone(), Arc::new(sim.clone()))
}

fn partition_dir(id: u32) -> PathBuf {
    Path::new(LOG_DIR).join(id.to_string())
}

/// Writes a whole file on the simulated disk (durably, so that it is the
/// disk's state whatever happens next).
fn put_file(sim: &SimStorage, path: &Path, bytes: &[u8]) {
    let file = sim
        .open(path, true)
        .expect("the simulated disk creates files");
    file.set_len(0).expect("set_len");
    file.write_at(bytes, 0).expect("write");
    file.sync_data().expect("sync");
}

// ---------------------------------------------------------------------------
// Opening a directory

/// Builds a log directory from the input on a simulated disk, opens it,
/// reads every partition, appends a record, closes it and opens it again.
///
/// The directory is either raw (a `meta` file, valid or not; partition 0's
/// checkpoint as raw bytes or as one or two checkpoint states chosen by the
/// input; up to two segments named by input-chosen base offsets, whose log
/// files mix raw bytes with valid batches, damaged batches and batches with
/// out-of-order offsets, and whose indexes are missing, raw, or entries
/// chosen by the input; leftover and orphan files) or a real log built by
/// appending records, then closed, crashed or left torn, with bytes
/// overwritten, files cut, extended or removed, and checkpoints rewritten at
/// input-chosen places.
///
/// Opening may fail, with an error. When it succeeds, the harness asserts
/// that reads return records in strictly increasing order within
/// `start_offset..end_offset`, no more of them than there are bytes, that an
/// append lands at the end offset and reads back, and that after a clean
/// close the log opens again (or reports corruption) with the record there.
/// A log built without damage must open.
pub fn fuzz_open_partition(data: &[u8]) {
    let mut input = Input::new(data);
    let sim = SimStorage::new(input.u64());
    let mut config = small_config(&mut input);
    let must_open = match input.below(3) {
        0 => {
            config.partitions = 1 + u32::from(input.below(3));
            raw_directory(&mut input, &sim);
            false
        }
        _ => {
            let damaged = built_directory(&mut input, &sim, &config);
            !damaged
        }
    };
    exercise(&sim, &config, must_open);
}

/// A valid `meta` file for `partitions` (1 to 3), as the log writes it.
fn valid_meta(partitions: u32) -> Vec<u8> {
    static METAS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    let metas = METAS.get_or_init(|| {
        (1..=3)
            .map(|n| {
                let sim = SimStorage::new(0);
                let log = open_log(&sim, &Config::default().partitions(n))
                    .expect("an empty disk holds a new log");
                log.close().expect("close");
                sim.file_contents(Path::new(LOG_DIR).join("meta"))
                    .expect("the log writes its meta file")
            })
            .collect()
    });
    metas[(partitions as usize - 1) % metas.len()].clone()
}

/// An offset near one of `anchors` (or anywhere).
fn offset_near(input: &mut Input<'_>, anchors: &[u64]) -> u64 {
    let anchor = match anchors.len() {
        0 => 0,
        n => anchors[usize::from(input.byte()) % n],
    };
    match input.below(6) {
        0 | 1 => anchor,
        2 => anchor.saturating_add(u64::from(input.byte())),
        3 => anchor.saturating_sub(u64::from(input.byte())),
        4 => u64::MAX - u64::from(input.below(8)),
        _ => input.u64(),
    }
}

/// Valid batches, as the log writes them, starting at `base_offset`, with
/// gaps between record offsets chosen by the input.
fn valid_batch(input: &mut Input<'_>, base_offset: u64, serial: &mut u32) -> Vec<u8> {
    let count = 1 + input.below(RECORDS_PER_BATCH_MAX);
    let mut records = Vec::new();
    let mut deltas = Vec::new();
    let mut delta = 0u64;
    for i in 0..count {
        if i > 0 {
            delta += 1 + u64::from(input.below(4) / 3);
        }
        deltas.push(delta);
        *serial += 1;
        records.push(record(input, *serial));
    }
    let mut batch = EncodedBatch::encode_with_deltas(&records, |i| deltas[i], 0, u32::MAX)
        .expect("small records fit");
    batch.compress(compression(input.byte()));
    if input.below(4) == 0 {
        batch.set_producer(ProducerStamp {
            producer_id: i64::from(input.byte()),
            producer_epoch: 0,
            base_sequence: i32::from(input.byte()),
        });
    }
    batch.seal(base_offset).to_vec()
}

/// The contents of a log file whose first batch should start at `base`.
fn log_file(input: &mut Input<'_>, base: u64, serial: &mut u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut next = base;
    for _ in 0..input.below(6) {
        if out.len() > LOG_FILE_BYTES_MAX {
            break;
        }
        match input.below(6) {
            0 => out.extend_from_slice(input.take(80)),
            1..=3 => {
                let at = if input.below(4) == 0 {
                    offset_near(input, &[base, next])
                } else {
                    next
                };
                let batch = valid_batch(input, at, serial);
                if let Ok(header) = verify_batch(&batch, u32::MAX) {
                    next = header.last_offset().saturating_add(1);
                }
                out.extend_from_slice(&batch);
            }
            4 => {
                // A batch with one byte changed.
                let mut batch = valid_batch(input, next, serial);
                let at = input.u32() as usize % batch.len();
                batch[at] ^= input.byte() | 1;
                out.extend_from_slice(&batch);
            }
            _ => {
                // A batch cut short: a torn write.
                let batch = valid_batch(input, next, serial);
                let keep = input.u32() as usize % batch.len();
                out.extend_from_slice(&batch[..keep]);
            }
        }
    }
    out
}

/// Index contents: raw bytes or entries of `entry_bytes` made from input.
fn index_file(input: &mut Input<'_>, entry_bytes: usize, log_len: usize) -> Option<Vec<u8>> {
    match input.below(4) {
        0 => None,
        1 => Some(input.take(3 * entry_bytes).to_vec()),
        2 => Some(Vec::new()),
        _ => {
            let mut out = Vec::new();
            let mut relative = 0u32;
            let mut position = 0u32;
            for i in 0..input.below(4) {
                if i > 0 {
                    relative = relative.saturating_add(u32::from(input.byte()));
                    position = position.saturating_add(u32::from(input.byte()) * 4);
                }
                if input.below(8) == 0 {
                    position = input.u32() % (log_len as u32 + 2);
                }
                if entry_bytes == 8 {
                    out.extend_from_slice(&relative.to_le_bytes());
                    out.extend_from_slice(&position.to_le_bytes());
                } else {
                    out.extend_from_slice(&timestamp(input).to_le_bytes());
                    out.extend_from_slice(&relative.to_le_bytes());
                }
            }
            Some(out)
        }
    }
}

/// A checkpoint state chosen by the input, near the segments in `bases`.
fn checkpoint_state(input: &mut Input<'_>, bases: &[(u64, u64)]) -> State {
    let offsets: Vec<u64> = bases.iter().map(|&(base, _)| base).collect();
    let (segment, len) = match bases.len() {
        0 => (0, 0),
        n => bases[usize::from(input.byte()) % n],
    };
    State {
        clean: input.flag(),
        log_start_offset: offset_near(input, &offsets),
        segment: if input.below(4) == 0 {
            offset_near(input, &offsets)
        } else {
            segment
        },
        position: match input.below(4) {
            0 | 1 => len,
            2 => u64::from(input.byte()),
            _ => input.u64(),
        },
        next_offset: offset_near(input, &offsets),
    }
}

/// Writes one or two checkpoint states with the log's own writer.
fn write_checkpoints(input: &mut Input<'_>, sim: &SimStorage, bases: &[(u64, u64)]) {
    let (mut checkpoint, _) =
        Checkpoint::open(sim, &partition_dir(0)).expect("the checkpoint opens");
    for _ in 0..=input.below(2) {
        let state = checkpoint_state(input, bases);
        checkpoint.write(state, true).expect("write checkpoint");
    }
}

fn raw_directory(input: &mut Input<'_>, sim: &SimStorage) {
    let dir = partition_dir(0);
    sim.create_dir_all(&dir).expect("mkdir");
    match input.below(4) {
        0 => {}
        1 => put_file(sim, &Path::new(LOG_DIR).join("meta"), input.take(24)),
        _ => {
            let meta = valid_meta(1 + u32::from(input.below(3)));
            put_file(sim, &Path::new(LOG_DIR).join("meta"), &meta);
        }
    }
    let mut serial = 0;
    let mut bases: Vec<(u64, u64)> = Vec::new();
    for _ in 0..input.below(3) {
        let previous: Vec<u64> = bases.iter().map(|&(base, _)| base).collect();
        let base = match input.below(3) {
            0 => 0,
            1 => offset_near(input, &previous),
            _ => previous
                .last()
                .map_or(0, |b| b.saturating_add(1 + u64::from(input.byte()))),
        };
        let log = log_file(input, base, &mut serial);
        put_file(sim, &dir.join(file_name(base, LOG_SUFFIX)), &log);
        if let Some(index) = index_file(input, 8, log.len()) {
            put_file(sim, &dir.join(file_name(base, INDEX_SUFFIX)), &index);
        }
        if let Some(index) = index_file(input, 12, log.len()) {
            put_file(sim, &dir.join(file_name(base, TIME_INDEX_SUFFIX)), &index);
        }
        bases.push((base, log.len() as u64));
    }
    if input.below(4) == 0 {
        // An index without its log file, and an interrupted rewrite.
        let base = offset_near(input, &[]);
        put_file(
            sim,
            &dir.join(file_name(base, INDEX_SUFFIX)),
            input.take(16),
        );
        let rewrite = format!("{}.rewrite", file_name(base, LOG_SUFFIX));
        put_file(sim, &dir.join(rewrite), input.take(16));
    }
    match input.below(3) {
        0 => {}
        1 => put_file(sim, &dir.join("checkpoint"), input.take(128)),
        _ => {
            bases.sort_unstable();
            write_checkpoints(input, sim, &bases);
        }
    }
}

/// Builds a real log, ends it cleanly or by a crash, then damages it as the
/// input says. Returns whether anything was damaged.
fn built_directory(input: &mut Input<'_>, sim: &SimStorage, config: &Config) -> bool {
    let log = open_log(sim, config).expect("an empty disk holds a new log");
    let mut serial = 0u32;
    for _ in 0..input.below(12) {
        let partition = log
            .partition(u32::from(input.byte()) % log.partition_count())
            .expect("partition");
        let records: Vec<Record> = (0..=input.below(RECORDS_PER_BATCH_MAX))
            .map(|_| {
                serial += 1;
                record(input, serial)
            })
            .collect();
        match partition.append(&records) {
            Ok(_) | Err(Error::RecordTooLarge { .. }) => {}
            Err(e) => panic!("append to a healthy log failed: {e}"),
        }
        if input.below(4) == 0 {
            partition.sync().expect("sync");
        }
    }
    match input.below(3) {
        0 => log.close().expect("close"),
        1 => {
            sim.crash();
            drop(log);
        }
        _ => {
            sim.crash_clean_prefix();
            drop(log);
        }
    }

    let mut files: Vec<PathBuf> = vec![Path::new(LOG_DIR).join("meta")];
    for id in 0..config.partitions {
        let dir = partition_dir(id);
        if let Ok(mut names) = sim.list_dir(&dir) {
            names.sort();
            files.extend(names.into_iter().map(|name| dir.join(name)));
        }
    }
    let mutations = input.below(6);
    for _ in 0..mutations {
        let path = files[usize::from(input.byte()) % files.len()].clone();
        let len = sim.file_contents(&path).map_or(0, |c| c.len() as u64);
        match input.below(7) {
            0 | 1 => {
                let at = u64::from(input.u32()) % (len + 8);
                let bytes = input.take(16);
                let _ = sim.write_raw(&path, at, bytes);
            }
            2 => {
                let at = u64::from(input.u32()) % (len + 1);
                let flip = input.byte() | 1;
                let mut byte = [0u8];
                if let Some(contents) = sim.file_contents(&path) {
                    byte[0] = contents.get(at as usize).copied().unwrap_or(0) ^ flip;
                    let _ = sim.write_raw(&path, at, &byte);
                }
            }
            3 => {
                let to = u64::from(input.u32()) % (len + 256);
                let _ = sim.set_len_raw(&path, to);
            }
            4 => {
                let _ = sim.remove_file(&path);
            }
            5 => {
                // A valid batch where the input says: out of order, or
                // appended past the end.
                let base = offset_near(input, &[0, len]);
                let batch = valid_batch(input, base, &mut serial);
                let at = if input.flag() {
                    len
                } else {
                    u64::from(input.u32()) % (len + 1)
                };
                let _ = sim.write_raw(&path, at, &batch);
            }
            _ => {
                if sim.is_dir(&partition_dir(0)).unwrap_or(false) {
                    write_checkpoints(input, sim, &[(0, len)]);
                }
            }
        }
    }
    mutations > 0
}

/// Checks what a reader of `partition` sees; reading errors are allowed.
fn read_all(partition: &Partition) {
    let start = partition.start_offset();
    let end = partition.end_offset();
    assert!(start <= end, "start offset {start} > end offset {end}");
    let limit = partition.size_bytes();
    if start > 0 {
        assert!(
            matches!(
                partition.reader(start - 1).next(),
                Some(Err(Error::OffsetOutOfRange { .. }))
            ),
            "reading below the start offset is out of range"
        );
    }
    let mut reader = partition.reader(start);
    let mut previous: Option<u64> = None;
    let mut count = 0u64;
    while let Some(item) = reader.next() {
        let Ok(record) = item else {
            assert!(reader.next().is_none(), "a reader ends after an error");
            break;
        };
        assert!(
            record.offset >= start && record.offset < end,
            "offset {} outside {start}..{end}",
            record.offset
        );
        assert!(
            previous.is_none_or(|p| record.offset > p),
            "offsets increase"
        );
        previous = Some(record.offset);
        count += 1;
        assert!(count <= limit, "more records than bytes");
    }
    if let Ok(records) = partition.read(start, 1 << 16) {
        let mut previous: Option<u64> = None;
        for record in &records {
            assert!(record.offset >= start && record.offset < end);
            assert!(previous.is_none_or(|p| record.offset > p));
            previous = Some(record.offset);
        }
    }
    for ts in [i64::MIN, 0, 7, FUTURE_MS, i64::MAX] {
        if let Ok(Some(offset)) = partition.offset_for_timestamp(ts) {
            assert!(
                offset >= start && offset < end,
                "offset_for_timestamp gave {offset} outside {start}..{end}"
            );
        }
    }
}

/// Prints the files of the log directory and their sizes.
fn trace_directory(sim: &SimStorage) {
    if !tracing() {
        return;
    }
    let mut dirs = vec![PathBuf::from(LOG_DIR)];
    while let Some(dir) = dirs.pop() {
        for name in sim.list_dir(&dir).unwrap_or_default() {
            let path = dir.join(name);
            match sim.file_contents(&path) {
                Some(contents) => eprintln!("{}: {} bytes", path.display(), contents.len()),
                None => dirs.push(path),
            }
        }
    }
    let checkpoint = partition_dir(0).join("checkpoint");
    if sim.exists(&checkpoint).unwrap_or(false)
        && let Ok((_, state)) = Checkpoint::open(sim, &partition_dir(0))
    {
        eprintln!("checkpoint: {state:?}");
    }
}

/// The record read at `offset` after appending `record` there. Recovery
/// trusts segments that were synced or closed cleanly without reading them,
/// so a batch with a valid checksum placed inside such a segment by the
/// damage can hold the same offset: then only the offset is certain.
fn check_read_back(back: &StoredRecord, record: &Record, offset: u64, undamaged: bool) {
    assert_eq!(back.offset, offset, "a read at the appended offset");
    if undamaged {
        assert_eq!(
            *back,
            stored(record, offset),
            "an appended record reads back"
        );
    }
}

fn exercise(sim: &SimStorage, config: &Config, must_open: bool) {
    trace_directory(sim);
    let log = match open_log(sim, config) {
        Ok(log) => log,
        Err(e) => {
            trace!("open failed: {e}");
            assert!(!must_open, "an undamaged log failed to open: {e}");
            return;
        }
    };
    for id in 0..log.partition_count() {
        read_all(&log.partition(id).expect("partition"));
    }
    let partition = log.partition(0).expect("partition 0");
    let end = partition.end_offset();
    trace!(
        "opened: {:?}; partition 0 holds {}..{end}",
        log.recovery_reports(),
        partition.start_offset()
    );
    let record = Record::new(&b"appended after open"[..])
        .with_key("k")
        .with_timestamp(7);
    let appended = partition.append(std::slice::from_ref(&record));
    if let Ok(a) = &appended {
        assert_eq!(a.base_offset, end, "an append lands at the end offset");
        assert_eq!(partition.end_offset(), end + 1);
        if let Some(Ok(back)) = partition.reader(end).next() {
            check_read_back(&back, &record, end, must_open);
        }
    }
    read_all(&partition);
    let closed = log.close();
    if appended.is_ok() && closed.is_ok() {
        match open_log(sim, config) {
            Ok(log) => {
                let partition = log.partition(0).expect("partition 0");
                assert_eq!(
                    partition.end_offset(),
                    end + 1,
                    "a clean close keeps the end"
                );
                if let Some(Ok(back)) = partition.reader(end).next() {
                    check_read_back(&back, &record, end, must_open);
                }
                read_all(&partition);
            }
            Err(e) => assert!(
                e.is_corruption(),
                "a log that opened and closed cleanly failed to reopen: {e}"
            ),
        }
    }
}

// ---------------------------------------------------------------------------
// Operations against a model

/// Runs a sequence of operations decoded from the input against a log on a
/// simulated disk and against a model of it (per partition: a start offset
/// and the records from there on), and asserts after each one that the log
/// matches the model exactly: offsets, start and end, every record's key,
/// value, timestamp and headers.
///
/// Operations: append a batch to a partition (refused as too large exactly
/// when its encoding exceeds `max_batch_bytes`), append one record through
/// the log (keyed records go to the key's partition), read from an offset
/// (below the start or past the end is out of range; otherwise the records
/// from exactly that offset, at least one batch), sync, `truncate_to`,
/// `delete_records_before`, `enforce_retention` (only records older than
/// the retention age go, and only from the front), `offset_for_timestamp`
/// (the first record at or after the time), clean reopen (reported clean,
/// nothing cut), and a power loss or a process crash followed by reopening.
/// After a crash, with [`Durability::Sync`] every acknowledged record
/// survives and nothing else changes; with [`Durability::None`] the log is a
/// prefix of the model that still holds everything below the durable offset
/// read before the crash.
pub fn fuzz_operations(data: &[u8]) {
    let mut input = Input::new(data);
    let sim = SimStorage::new(input.u64());
    let config = small_config(&mut input);
    trace!("{config:?}");
    let mut run = Run::new(sim, config);
    for _ in 0..OPERATIONS_MAX {
        if input.is_empty() {
            break;
        }
        run.step(&mut input);
        run.check_all();
    }
    run.reopen();
    run.check_all();
    let log = run.log.take().expect("open");
    log.close().expect("a healthy log closes");
}

/// A partition as the model sees it: records at `start..start + len`.
#[derive(Debug, Default)]
struct Model {
    start: u64,
    records: Vec<StoredRecord>,
}

impl Model {
    fn end(&self) -> u64 {
        self.start + self.records.len() as u64
    }

    fn truncate_to(&mut self, offset: u64) {
        if offset >= self.end() {
            return;
        }
        if offset <= self.start {
            self.start = offset;
            self.records.clear();
        } else {
            self.records.truncate((offset - self.start) as usize);
        }
    }

    fn delete_before(&mut self, offset: u64) {
        if offset > self.start {
            let n = ((offset - self.start) as usize).min(self.records.len());
            self.records.drain(..n);
            self.start = offset;
        }
    }

    fn get(&self, offset: u64) -> Option<&StoredRecord> {
        let i = usize::try_from(offset.checked_sub(self.start)?).ok()?;
        self.records.get(i)
    }
}

struct Run {
    sim: SimStorage,
    config: Config,
    log: Option<Log>,
    models: Vec<Model>,
    serial: u32,
}

impl Run {
    fn new(sim: SimStorage, config: Config) -> Run {
        let log = open_log(&sim, &config).expect("an empty disk holds a new log");
        let models = (0..config.partitions).map(|_| Model::default()).collect();
        Run {
            sim,
            config,
            log: Some(log),
            models,
            serial: 0,
        }
    }

    fn log(&self) -> &Log {
        self.log
            .as_ref()
            .expect("the log is open between operations")
    }

    fn partition(&self, id: usize) -> Partition {
        self.log().partition(id as u32).expect("partition")
    }

    fn pick_partition(&self, input: &mut Input<'_>) -> usize {
        usize::from(input.byte()) % self.models.len()
    }

    /// An offset near the model's interesting places.
    fn pick_offset(&self, input: &mut Input<'_>, id: usize) -> u64 {
        let model = &self.models[id];
        let (start, end) = (model.start, model.end());
        match input.below(8) {
            0 => start,
            1 => end,
            2 | 3 => start + u64::from(input.u32()) % (end - start + 1),
            4 => end.saturating_add(u64::from(input.below(3))),
            5 => start.saturating_sub(1 + u64::from(input.below(3))),
            6 => u64::from(input.u32()),
            _ => input.u64() >> input.below(64),
        }
    }

    fn step(&mut self, input: &mut Input<'_>) {
        let op = input.below(14);
        trace!(
            "op {op}: {:?}",
            self.models
                .iter()
                .map(|m| (m.start, m.end()))
                .collect::<Vec<_>>()
        );
        match op {
            0..=3 => self.append(input),
            4 => self.append_routed(input),
            5 => self.read(input),
            6 => {
                let id = self.pick_partition(input);
                self.partition(id).sync().expect("sync");
            }
            7 => self.truncate(input),
            8 => self.delete_before(input),
            9 => self.retention(),
            10 => self.offset_for_timestamp(input),
            11 => self.reopen(),
            12 => self.crash(false),
            _ => self.crash(true),
        }
    }

    fn append(&mut self, input: &mut Input<'_>) {
        let id = self.pick_partition(input);
        let count = input.below(RECORDS_PER_BATCH_MAX + 1);
        let records: Vec<Record> = (0..count)
            .map(|_| {
                self.serial += 1;
                record(input, self.serial)
            })
            .collect();
        trace!("append {} records to {id}", records.len());
        let partition = self.partition(id);
        let result = partition.append(&records);
        if records.is_empty() {
            assert!(matches!(result, Err(Error::EmptyBatch)), "{result:?}");
            return;
        }
        let fits = EncodedBatch::encode(&records, 0, self.config.max_batch_bytes).is_ok();
        match result {
            Ok(appended) => {
                assert!(fits, "a batch over max_batch_bytes was accepted");
                self.acknowledge(id, &records, appended.base_offset, appended.last_offset);
            }
            Err(Error::RecordTooLarge { .. }) => assert!(!fits, "a batch that fits was refused"),
            Err(e) => panic!("append failed: {e}"),
        }
    }

    fn acknowledge(&mut self, id: usize, records: &[Record], base: u64, last: u64) {
        let model = &mut self.models[id];
        assert_eq!(base, model.end(), "an append lands at the end offset");
        assert_eq!(last - base + 1, records.len() as u64);
        for (i, record) in records.iter().enumerate() {
            model.records.push(stored(record, base + i as u64));
        }
    }

    fn append_routed(&mut self, input: &mut Input<'_>) {
        self.serial += 1;
        let mut record = record(input, self.serial);
        // Unkeyed records go to a partition chosen by a clock-seeded
        // generator: a key keeps the run deterministic.
        if record.key.is_none() {
            record.key = Some(Bytes::copy_from_slice(&self.serial.to_le_bytes()));
        }
        let appended = self.log().append(record.clone()).expect("append");
        let key = record.key.as_deref().expect("set above");
        assert_eq!(appended.partition, self.log().partition_for_key(key));
        let id = appended.partition as usize;
        assert!(id < self.models.len());
        self.acknowledge(id, &[record], appended.base_offset, appended.last_offset);
    }

    fn read(&mut self, input: &mut Input<'_>) {
        let id = self.pick_partition(input);
        let offset = self.pick_offset(input, id);
        let max_bytes = [0usize, 1, 200, 1 << 20][usize::from(input.below(4))];
        let partition = self.partition(id);
        let model = &self.models[id];
        assert_eq!(
            partition
                .wait_for(offset, Duration::ZERO)
                .expect("wait_for"),
            model.end() > offset
        );
        match partition.read(offset, max_bytes) {
            Ok(records) => {
                assert!(offset >= model.start && offset <= model.end());
                assert_eq!(
                    records.is_empty(),
                    offset == model.end(),
                    "a read below the end returns at least one batch"
                );
                for (i, record) in records.iter().enumerate() {
                    let expected = model.get(offset + i as u64);
                    assert_eq!(Some(record), expected, "read at {offset}, record {i}");
                }
            }
            Err(Error::OffsetOutOfRange { start, end, .. }) => {
                assert!(offset < model.start || offset > model.end());
                assert_eq!((start, end), (model.start, model.end()));
            }
            Err(e) => panic!("read failed: {e}"),
        }
    }

    fn truncate(&mut self, input: &mut Input<'_>) {
        let id = self.pick_partition(input);
        let offset = self.pick_offset(input, id);
        trace!("truncate {id} to {offset}");
        self.partition(id).truncate_to(offset).expect("truncate_to");
        self.models[id].truncate_to(offset);
    }

    fn delete_before(&mut self, input: &mut Input<'_>) {
        let id = self.pick_partition(input);
        let offset = self.pick_offset(input, id);
        trace!("delete {id} before {offset}");
        let result = self.partition(id).delete_records_before(offset);
        let model = &mut self.models[id];
        match result {
            Ok(()) => {
                assert!(offset <= model.end());
                model.delete_before(offset);
            }
            Err(Error::OffsetOutOfRange { .. }) => assert!(offset > model.end()),
            Err(e) => panic!("delete_records_before failed: {e}"),
        }
    }

    fn retention(&mut self) {
        let deleted = self.log().enforce_retention().expect("enforce_retention");
        trace!("retention deleted {deleted} segments");
        let after = now_ms();
        let mut moved = false;
        for id in 0..self.models.len() {
            let start = self.partition(id).start_offset();
            let model = &mut self.models[id];
            assert!(
                start >= model.start && start <= model.end(),
                "retention moved the start offset to {start}, outside {}..={}",
                model.start,
                model.end()
            );
            let dropped = (start - model.start) as usize;
            if self.config.retention_bytes.is_none()
                && let Some(age) = self.config.retention_age
            {
                let cutoff = after.saturating_sub(age.as_millis() as i64);
                for record in &model.records[..dropped] {
                    assert!(
                        record.timestamp < cutoff,
                        "retention deleted offset {} at {} ms, newer than the cutoff",
                        record.offset,
                        record.timestamp
                    );
                }
            }
            moved |= dropped > 0;
            model.delete_before(start);
        }
        assert!(
            !moved || deleted > 0,
            "records went without a segment deleted"
        );
    }

    fn offset_for_timestamp(&mut self, input: &mut Input<'_>) {
        let id = self.pick_partition(input);
        let target = timestamp(input);
        let found = self
            .partition(id)
            .offset_for_timestamp(target)
            .expect("offset_for_timestamp");
        let expected = self.models[id]
            .records
            .iter()
            .find(|r| r.timestamp >= target)
            .map(|r| r.offset);
        assert_eq!(found, expected, "offset_for_timestamp({target})");
    }

    /// Closes and reopens; the reopen must find a clean shutdown.
    fn reopen(&mut self) {
        drop(self.log.take());
        let log = open_log(&self.sim, &self.config).expect("a cleanly closed log reopens");
        for (id, report) in log.recovery_reports().iter().enumerate() {
            assert!(
                report.clean,
                "partition {id} was closed cleanly: {report:?}"
            );
            assert_eq!(report.truncated_bytes, 0, "a clean reopen cut bytes");
        }
        self.log = Some(log);
    }

    /// A power loss (or a process crash), then reopening.
    fn crash(&mut self, process_only: bool) {
        let durable: Vec<u64> = (0..self.models.len())
            .map(|id| self.partition(id).durable_offset())
            .collect();
        trace!("crash (process only: {process_only}), durable {durable:?}");
        if process_only {
            self.sim.crash_clean_prefix();
        } else {
            self.sim.crash();
        }
        drop(self.log.take());
        let log = open_log(&self.sim, &self.config).expect("a log opens after a crash");
        for (id, model) in self.models.iter_mut().enumerate() {
            let partition = log.partition(id as u32).expect("partition");
            let end = partition.end_offset();
            let start = partition.start_offset();
            if self.config.durability == Durability::Sync {
                assert_eq!(end, model.end(), "acknowledged records survive a crash");
                assert_eq!(start, model.start, "the start offset survives a crash");
                continue;
            }
            assert!(
                end >= durable[id] && end <= model.end(),
                "after a crash the end offset {end} is outside {}..={}",
                durable[id],
                model.end()
            );
            // Records past the end were lost; a start offset past it is
            // clamped to it.
            model.truncate_to(end);
            assert_eq!(start, model.start, "the start offset after a crash");
        }
        self.log = Some(log);
    }

    fn check_all(&self) {
        for (id, model) in self.models.iter().enumerate() {
            let partition = self.partition(id);
            assert_eq!(
                partition.start_offset(),
                model.start,
                "start offset of {id}"
            );
            assert_eq!(partition.end_offset(), model.end(), "end offset of {id}");
            assert!(partition.durable_offset() <= model.end());
            let records: Vec<StoredRecord> = partition
                .reader(model.start)
                .collect::<crate::Result<_>>()
                .expect("a healthy log reads back");
            assert_eq!(records, model.records, "records of partition {id}");
        }
    }
}
