//! The batch format, version 1 (see `FORMAT.md`).
//!
//! ```text
//! batch   := header records
//! header  := crc:u32 batch_length:u32 magic:u8 reserved:u8 attributes:u16
//!            leader_epoch:i32 base_offset:u64 last_offset_delta:u32
//!            record_count:u32 first_timestamp:i64 max_timestamp:i64
//!            producer_id:i64 base_sequence:i32 producer_epoch:i16
//!            reserved:u16                              (64 bytes, little-endian)
//! records := record{record_count}                      (compressed as one block
//!                                                       when attributes name a codec)
//! record  := length:uvarint timestamp_delta:varint offset_delta:uvarint
//!            key_length:varint key value_length:varint value
//!            header_count:uvarint (key_length:uvarint key value_length:varint value)*
//! ```
//!
//! `crc` is CRC-32 (IEEE) of every byte after it. Signed varints are zigzag
//! encoded; a length of -1 is a null key or value.

use bytes::{Buf, Bytes};

use super::varint;
use super::{Header, Record, StoredRecord};
use crate::codec;
use crate::config::Compression;
use crate::error::CorruptKind;

/// The format version written by this build.
pub(crate) const MAGIC: u8 = 1;

pub(crate) const CRC_OFFSET: usize = 0;
pub(crate) const LENGTH_OFFSET: usize = CRC_OFFSET + 4;
pub(crate) const MAGIC_OFFSET: usize = LENGTH_OFFSET + 4;
const RESERVED_A_OFFSET: usize = MAGIC_OFFSET + 1;
const ATTRIBUTES_OFFSET: usize = RESERVED_A_OFFSET + 1;
const LEADER_EPOCH_OFFSET: usize = ATTRIBUTES_OFFSET + 2;
pub(crate) const BASE_OFFSET_OFFSET: usize = LEADER_EPOCH_OFFSET + 4;
const LAST_OFFSET_DELTA_OFFSET: usize = BASE_OFFSET_OFFSET + 8;
const RECORD_COUNT_OFFSET: usize = LAST_OFFSET_DELTA_OFFSET + 4;
const FIRST_TIMESTAMP_OFFSET: usize = RECORD_COUNT_OFFSET + 4;
const MAX_TIMESTAMP_OFFSET: usize = FIRST_TIMESTAMP_OFFSET + 8;
const PRODUCER_ID_OFFSET: usize = MAX_TIMESTAMP_OFFSET + 8;
const BASE_SEQUENCE_OFFSET: usize = PRODUCER_ID_OFFSET + 8;
const PRODUCER_EPOCH_OFFSET: usize = BASE_SEQUENCE_OFFSET + 4;
const RESERVED_B_OFFSET: usize = PRODUCER_EPOCH_OFFSET + 2;
/// Size of the batch header in bytes.
pub(crate) const HEADER_BYTES: usize = RESERVED_B_OFFSET + 2;

const _: () = assert!(HEADER_BYTES == 64);
const _: () =
    assert!(BASE_OFFSET_OFFSET.is_multiple_of(8) && FIRST_TIMESTAMP_OFFSET.is_multiple_of(8));

/// Bits 0..=2 of the attributes: the codec of the records block.
pub(crate) const ATTR_CODEC_MASK: u16 = 0b111;
/// Bit 3: timestamps are the log's append time, not the producer's.
pub(crate) const ATTR_LOG_APPEND_TIME: u16 = 1 << 3;
/// Attribute bits this version knows; others must be zero.
const ATTR_KNOWN: u16 = ATTR_CODEC_MASK | ATTR_LOG_APPEND_TIME;

/// "No producer", "no sequence", "no epoch", in the header fields that hold them.
pub(crate) const NO_PRODUCER_ID: i64 = -1;
pub(crate) const NO_SEQUENCE: i32 = -1;
pub(crate) const NO_PRODUCER_EPOCH: i16 = -1;
pub(crate) const NO_LEADER_EPOCH: i32 = -1;

/// The fixed-size header of a batch, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchHeader {
    pub crc: u32,
    pub batch_length: u32,
    pub magic: u8,
    pub attributes: u16,
    pub leader_epoch: i32,
    pub base_offset: u64,
    pub last_offset_delta: u32,
    pub record_count: u32,
    pub first_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub base_sequence: i32,
    pub producer_epoch: i16,
}

fn u16_at(buf: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([buf[at], buf[at + 1]])
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

impl BatchHeader {
    /// Decodes a header and checks what can be checked without the body:
    /// the version, the reserved bits, the length's lower bound and
    /// `max_batch_bytes`, and the record count against the offset span.
    /// The checksum is checked by [`verify_batch`].
    pub(crate) fn parse(buf: &[u8], max_batch_bytes: u32) -> Result<BatchHeader, CorruptKind> {
        let Some(buf) = buf.get(..HEADER_BYTES) else {
            return Err(CorruptKind::Truncated {
                needed: HEADER_BYTES as u64,
                available: buf.len() as u64,
            });
        };
        let header = BatchHeader {
            crc: u32_at(buf, CRC_OFFSET),
            batch_length: u32_at(buf, LENGTH_OFFSET),
            magic: buf[MAGIC_OFFSET],
            attributes: u16_at(buf, ATTRIBUTES_OFFSET),
            leader_epoch: u32_at(buf, LEADER_EPOCH_OFFSET) as i32,
            base_offset: u64_at(buf, BASE_OFFSET_OFFSET),
            last_offset_delta: u32_at(buf, LAST_OFFSET_DELTA_OFFSET),
            record_count: u32_at(buf, RECORD_COUNT_OFFSET),
            first_timestamp: u64_at(buf, FIRST_TIMESTAMP_OFFSET) as i64,
            max_timestamp: u64_at(buf, MAX_TIMESTAMP_OFFSET) as i64,
            producer_id: u64_at(buf, PRODUCER_ID_OFFSET) as i64,
            base_sequence: u32_at(buf, BASE_SEQUENCE_OFFSET) as i32,
            producer_epoch: u16_at(buf, PRODUCER_EPOCH_OFFSET) as i16,
        };
        let length = u64::from(header.batch_length);
        if length < HEADER_BYTES as u64 || length > u64::from(max_batch_bytes) {
            return Err(CorruptKind::Length { length });
        }
        if header.magic != MAGIC {
            return Err(CorruptKind::Version(header.magic));
        }
        if buf[RESERVED_A_OFFSET] != 0
            || u16_at(buf, RESERVED_B_OFFSET) != 0
            || header.attributes & !ATTR_KNOWN != 0
        {
            return Err(CorruptKind::Record("reserved header bits are set"));
        }
        if !codec::is_known(header.attributes & ATTR_CODEC_MASK) {
            return Err(CorruptKind::Record("unknown compression codec"));
        }
        if header.record_count == 0
            || u64::from(header.record_count) > u64::from(header.last_offset_delta) + 1
        {
            return Err(CorruptKind::Record(
                "record count does not fit the offset span",
            ));
        }
        // The offset after the last record must exist too.
        if header
            .base_offset
            .checked_add(u64::from(header.last_offset_delta))
            .is_none_or(|last| last == u64::MAX)
        {
            return Err(CorruptKind::Record("last offset overflows"));
        }
        Ok(header)
    }

    /// The codec of the records block.
    pub(crate) fn codec(&self) -> u16 {
        self.attributes & ATTR_CODEC_MASK
    }

    /// Offset of the batch's last record.
    pub(crate) fn last_offset(&self) -> u64 {
        self.base_offset + u64::from(self.last_offset_delta)
    }

    /// Offset that follows the batch.
    pub(crate) fn next_offset(&self) -> u64 {
        self.last_offset() + 1
    }
}

/// Checks a whole batch, header and checksum, given exactly its bytes.
pub(crate) fn verify_batch(bytes: &[u8], max_batch_bytes: u32) -> Result<BatchHeader, CorruptKind> {
    let header = BatchHeader::parse(bytes, max_batch_bytes)?;
    if bytes.len() != header.batch_length as usize {
        return Err(CorruptKind::Truncated {
            needed: u64::from(header.batch_length),
            available: bytes.len() as u64,
        });
    }
    let computed = crc32fast::hash(&bytes[LENGTH_OFFSET..]);
    if computed != header.crc {
        return Err(CorruptKind::Checksum {
            stored: header.crc,
            computed,
        });
    }
    Ok(header)
}

/// A batch encoded in memory, waiting for its base offset.
#[derive(Debug, Clone)]
pub(crate) struct EncodedBatch {
    buf: Vec<u8>,
    /// Some record has no key (refused by a compacted log).
    unkeyed: bool,
}

/// Producer identity stamped on a batch (for idempotence).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProducerStamp {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

impl EncodedBatch {
    /// Encodes `records`; a record without a timestamp gets `now_ms`.
    ///
    /// Returns the encoded size as the error when it would exceed
    /// `max_batch_bytes`, without encoding past that limit.
    pub(crate) fn encode(
        records: &[Record],
        now_ms: i64,
        max_batch_bytes: u32,
    ) -> Result<EncodedBatch, u64> {
        Self::encode_with_deltas(records, |i| i as u64, now_ms, max_batch_bytes)
    }

    /// As [`EncodedBatch::encode`], with the offset delta of each record
    /// given (strictly increasing): a rewritten batch keeps its offsets.
    pub(crate) fn encode_with_deltas(
        records: &[Record],
        delta: impl Fn(usize) -> u64,
        now_ms: i64,
        max_batch_bytes: u32,
    ) -> Result<EncodedBatch, u64> {
        assert!(!records.is_empty(), "callers refuse empty batches");
        let first_timestamp = records[0].timestamp.unwrap_or(now_ms);
        let mut max_timestamp = i64::MIN;
        let mut unkeyed = false;
        let size = HEADER_BYTES as u64
            + records
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    unkeyed |= r.key.is_none();
                    let ts = r.timestamp.unwrap_or(now_ms);
                    let body = body_len(r, ts.wrapping_sub(first_timestamp), delta(i));
                    (varint::len_u64(body as u64) + body) as u64
                })
                .sum::<u64>();
        if size > u64::from(max_batch_bytes) || records.len() > u32::MAX as usize {
            return Err(size);
        }
        let mut buf = Vec::with_capacity(size as usize);
        buf.resize(HEADER_BYTES, 0);
        for (i, record) in records.iter().enumerate() {
            let ts = record.timestamp.unwrap_or(now_ms);
            max_timestamp = max_timestamp.max(ts);
            let ts_delta = ts.wrapping_sub(first_timestamp);
            varint::put_u64(&mut buf, body_len(record, ts_delta, delta(i)) as u64);
            varint::put_i64(&mut buf, ts_delta);
            varint::put_u64(&mut buf, delta(i));
            put_bytes(&mut buf, record.key.as_deref());
            put_bytes(&mut buf, record.value.as_deref());
            varint::put_u64(&mut buf, record.headers.len() as u64);
            for header in &record.headers {
                varint::put_u64(&mut buf, header.key.len() as u64);
                buf.extend_from_slice(header.key.as_bytes());
                put_bytes(&mut buf, header.value.as_deref());
            }
        }
        debug_assert_eq!(buf.len() as u64, size);
        let count = u32::try_from(records.len()).expect("checked above");
        let last_delta = u32::try_from(delta(records.len() - 1)).map_err(|_| size)?;
        let length = u32::try_from(buf.len()).expect("bounded by max_batch_bytes");
        buf[LENGTH_OFFSET..LENGTH_OFFSET + 4].copy_from_slice(&length.to_le_bytes());
        buf[MAGIC_OFFSET] = MAGIC;
        buf[LEADER_EPOCH_OFFSET..LEADER_EPOCH_OFFSET + 4]
            .copy_from_slice(&NO_LEADER_EPOCH.to_le_bytes());
        buf[LAST_OFFSET_DELTA_OFFSET..LAST_OFFSET_DELTA_OFFSET + 4]
            .copy_from_slice(&last_delta.to_le_bytes());
        buf[RECORD_COUNT_OFFSET..RECORD_COUNT_OFFSET + 4].copy_from_slice(&count.to_le_bytes());
        buf[FIRST_TIMESTAMP_OFFSET..FIRST_TIMESTAMP_OFFSET + 8]
            .copy_from_slice(&first_timestamp.to_le_bytes());
        buf[MAX_TIMESTAMP_OFFSET..MAX_TIMESTAMP_OFFSET + 8]
            .copy_from_slice(&max_timestamp.to_le_bytes());
        let mut batch = EncodedBatch { buf, unkeyed };
        batch.set_producer(ProducerStamp {
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            base_sequence: NO_SEQUENCE,
        });
        Ok(batch)
    }

    /// Compresses the records block with `compression`, unless that does not
    /// make it smaller. Must come before [`EncodedBatch::seal`].
    pub(crate) fn compress(&mut self, compression: Compression) {
        let Some(packed) = codec::compress(compression, &self.buf[HEADER_BYTES..]) else {
            return;
        };
        self.buf.truncate(HEADER_BYTES);
        self.buf.extend_from_slice(&packed);
        let length = u32::try_from(self.buf.len()).expect("smaller than before");
        self.buf[LENGTH_OFFSET..LENGTH_OFFSET + 4].copy_from_slice(&length.to_le_bytes());
        let attributes =
            u16_at(&self.buf, ATTRIBUTES_OFFSET) & !ATTR_CODEC_MASK | codec::codec_of(compression);
        self.buf[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2]
            .copy_from_slice(&attributes.to_le_bytes());
    }

    /// Stamps the producer fields.
    pub(crate) fn set_producer(&mut self, stamp: ProducerStamp) {
        let buf = &mut self.buf;
        buf[PRODUCER_ID_OFFSET..PRODUCER_ID_OFFSET + 8]
            .copy_from_slice(&stamp.producer_id.to_le_bytes());
        buf[BASE_SEQUENCE_OFFSET..BASE_SEQUENCE_OFFSET + 4]
            .copy_from_slice(&stamp.base_sequence.to_le_bytes());
        buf[PRODUCER_EPOCH_OFFSET..PRODUCER_EPOCH_OFFSET + 2]
            .copy_from_slice(&stamp.producer_epoch.to_le_bytes());
    }

    /// Stamps the leader epoch.
    pub(crate) fn set_leader_epoch(&mut self, epoch: i32) {
        self.buf[LEADER_EPOCH_OFFSET..LEADER_EPOCH_OFFSET + 4]
            .copy_from_slice(&epoch.to_le_bytes());
    }

    /// Widens the batch's offset span to `delta` (at least the last record's
    /// delta): a batch rewritten by compaction keeps the span of the batch it
    /// replaces after its last records were removed.
    pub(crate) fn set_last_offset_delta(&mut self, delta: u32) {
        let current = u32_at(&self.buf, LAST_OFFSET_DELTA_OFFSET);
        assert!(delta >= current, "a batch's span only widens");
        self.buf[LAST_OFFSET_DELTA_OFFSET..LAST_OFFSET_DELTA_OFFSET + 4]
            .copy_from_slice(&delta.to_le_bytes());
    }

    /// True when some record has no key.
    pub(crate) fn has_unkeyed(&self) -> bool {
        self.unkeyed
    }

    /// Gives the batch its base offset and seals it with its checksum.
    pub(crate) fn seal(&mut self, base_offset: u64) -> &[u8] {
        self.buf[BASE_OFFSET_OFFSET..BASE_OFFSET_OFFSET + 8]
            .copy_from_slice(&base_offset.to_le_bytes());
        let crc = crc32fast::hash(&self.buf[LENGTH_OFFSET..]);
        self.buf[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
        &self.buf
    }

    /// The decoded header (valid once sealed; the base offset is 0 before).
    pub(crate) fn header(&self) -> BatchHeader {
        BatchHeader::parse(&self.buf, u32::MAX).expect("an encoded batch has a valid header")
    }

    /// Size in bytes.
    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }

    /// The encoded bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf
    }
}

fn bytes_len(bytes: Option<&[u8]>) -> usize {
    match bytes {
        None => varint::len_i64(-1),
        Some(b) => varint::len_i64(b.len() as i64) + b.len(),
    }
}

fn put_bytes(buf: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => varint::put_i64(buf, -1),
        Some(b) => {
            varint::put_i64(buf, b.len() as i64);
            buf.extend_from_slice(b);
        }
    }
}

fn body_len(record: &Record, ts_delta: i64, offset_delta: u64) -> usize {
    varint::len_i64(ts_delta)
        + varint::len_u64(offset_delta)
        + bytes_len(record.key.as_deref())
        + bytes_len(record.value.as_deref())
        + varint::len_u64(record.headers.len() as u64)
        + record
            .headers
            .iter()
            .map(|h| {
                varint::len_u64(h.key.len() as u64) + h.key.len() + bytes_len(h.value.as_deref())
            })
            .sum::<usize>()
}

/// Iterates over the records of a verified batch. A compressed records
/// block is decompressed on the first call to `next`. Every length is
/// checked against the bytes that remain; a malformed record ends the
/// iteration with an error.
///
/// The loop of a scan runs here once per record, so it does the least it
/// can: the fields are read from one bounds-checked slice of the record, and
/// the only reference counting is the one `Bytes::slice` for each key and
/// value handed out (and for each header value).
pub(crate) struct Records {
    header: BatchHeader,
    /// The records block, uncompressed: the batch past its header, or the
    /// decompressed block once it is loaded. Records are sliced out of it
    /// without copying.
    body: Bytes,
    /// The whole batch while its compressed records block waits to be
    /// decompressed.
    packed: Option<Bytes>,
    /// Where the next record starts in `body`; never past its end.
    position: usize,
    remaining: u32,
    /// The smallest offset delta the next record may have: deltas strictly
    /// increase.
    min_delta: u64,
}

impl Records {
    /// `batch` must be exactly one batch that passed [`verify_batch`].
    pub(crate) fn new(header: BatchHeader, mut batch: Bytes) -> Records {
        debug_assert_eq!(batch.len(), header.batch_length as usize);
        let (body, packed) = if header.codec() == codec::CODEC_NONE {
            // Advancing a `Bytes` moves its start without touching the
            // shared count, unlike `slice`.
            batch.advance(HEADER_BYTES.min(batch.len()));
            (batch, None)
        } else {
            (Bytes::new(), Some(batch))
        };
        Records {
            header,
            body,
            packed,
            position: 0,
            remaining: header.record_count,
            min_delta: 0,
        }
    }

    /// Decompresses the records block the first time it is needed.
    #[cold]
    fn load_body(&mut self) -> Result<(), CorruptKind> {
        if let Some(packed) = &self.packed {
            let block = packed.get(HEADER_BYTES..).unwrap_or_default();
            self.body = codec::decompress(self.header.codec(), block)?;
            self.packed = None;
        }
        Ok(())
    }

    /// Decodes the record at `position`; changes nothing when it fails.
    #[inline(always)]
    fn decode_one(&mut self) -> Result<StoredRecord, CorruptKind> {
        if self.packed.is_some() {
            self.load_body()?;
        }
        let spans = decode_record(
            &self.body,
            self.position,
            self.min_delta,
            self.header.last_offset_delta,
        )?;
        let headers = if spans.header_count == 0 {
            Vec::new()
        } else {
            owned_headers(&self.body, &spans)?
        };
        self.position = spans.end;
        // At most `u32::MAX`, checked by `decode_record`: no overflow.
        self.min_delta = spans.offset_delta + 1;
        let slice = |(from, to): (usize, usize)| self.body.slice(from..to);
        Ok(StoredRecord {
            offset: self.header.base_offset + spans.offset_delta,
            timestamp: self
                .header
                .first_timestamp
                .wrapping_add(spans.timestamp_delta),
            key: spans.key.map(slice),
            value: spans.value.map(slice),
            headers,
        })
    }

    /// Moves to the first record whose offset is at least `offset`. The
    /// records before it are stepped over by their length prefixes, still
    /// bounds-checked, without being built; a malformed one stops the skip
    /// and is reported by the next call to `next`.
    pub(crate) fn skip_before(self, offset: u64) -> Records {
        self.skip_before_marked(offset, &mut Marks::default())
    }

    /// As [`Records::skip_before`], starting from the nearest of `marks`
    /// at or before `offset` (marks learned from this batch's bytes), and
    /// filling in the marks the walk steps on.
    pub(crate) fn skip_before_marked(mut self, offset: u64, marks: &mut Marks) -> Records {
        if offset <= self.header.base_offset || self.load_body().is_err() {
            return self;
        }
        let wanted = offset - self.header.base_offset;
        let last_delta = u64::from(self.header.last_offset_delta);
        let body: &[u8] = &self.body;
        let mark_deltas = Marks::deltas(&self.header, body.len());
        let mut position = self.position;
        let mut min_delta = self.min_delta;
        let mut remaining = self.remaining;
        if let Some(deltas) = mark_deltas
            && position == 0
            && let Some((delta, at)) = marks.nearest(deltas, wanted)
        {
            // Record `delta` is the `delta`th: the batch has no gaps.
            position = usize::from(at);
            min_delta = u64::from(delta);
            remaining = self.header.record_count - delta;
        }
        if remaining > 0 {
            // Where the wanted record probably ends, from the batch's
            // average record size.
            let steps = wanted.saturating_sub(min_delta).saturating_add(1);
            let left = body.len().saturating_sub(position) as u64;
            let guess = left.saturating_mul(steps) / u64::from(remaining);
            let until =
                usize::try_from(guess).map_or(body.len(), |guess| position.saturating_add(guess));
            touch_lines(body, position, until.saturating_add(CACHE_LINE_BYTES * 2));
        }
        while remaining > 0 {
            let Some((delta, len)) = delta_and_length(body, position) else {
                break;
            };
            if delta < min_delta || delta > last_delta {
                break;
            }
            if let Some(deltas) = mark_deltas {
                marks.learn(deltas, delta, position);
            }
            if delta >= wanted {
                break;
            }
            position += len;
            min_delta = delta + 1;
            remaining -= 1;
        }
        if let Some(deltas) = mark_deltas
            && marks.at.contains(&0)
        {
            marks.learn_rest(deltas, body, position, min_delta);
        }
        self.position = position;
        self.min_delta = min_delta;
        self.remaining = remaining;
        self
    }
}

/// The offset delta of the record at `position` of a records block, and
/// its length with its length prefix; `None` when they do not decode or
/// the record does not fit in the block.
#[inline]
fn delta_and_length(body: &[u8], position: usize) -> Option<(u64, usize)> {
    let rest = body.get(position..)?;
    let (length, n) = varint::get_u64(rest)?;
    let record = rest.get(n..n.checked_add(usize::try_from(length).ok()?)?)?;
    let (_, ts_len) = varint::get_i64(record)?;
    let (delta, _) = varint::get_u64(record.get(ts_len..)?)?;
    Some((delta, n + record.len()))
}

const CACHE_LINE_BYTES: usize = 64;

/// Reads one byte of every cache line of `bytes[from..to]`. Stepping over
/// records is a chain of dependent loads (each record's length gives the
/// next one's place), so on a batch that is not in the CPU's caches each
/// step waits for memory in turn; loading the lines first, with loads that
/// do not depend on each other, lets their misses overlap. Only a speed-up:
/// nothing depends on the values read.
fn touch_lines(bytes: &[u8], from: usize, to: usize) {
    let lines = bytes
        .get(from..to.min(bytes.len()))
        .unwrap_or_default()
        .iter()
        .step_by(CACHE_LINE_BYTES);
    let folded = lines.fold(0u8, |acc, &byte| acc ^ byte);
    // Keeps the loads, whose values nothing uses, from being left out.
    std::hint::black_box(folded);
}

/// Where some records of one batch start in its records block, so that a
/// point read into the batch can start stepping over records from the
/// nearest one before it instead of from the first: a read of the last
/// record of a batch steps over a seventh of it, not all of it. Learned by
/// the walk of an earlier read ([`Records::skip_before_marked`]) and kept
/// with the batch's entry in the segment's memo of verified batches.
///
/// Only for batches whose records are all there (record `i` has offset
/// delta `i`, as every appended batch), of at least
/// [`Marks::MIN_RECORDS`] records and a records block below 64 KiB.
/// Mark `k` is the start of the record at delta `count * (k + 1) / 7`;
/// 0 is "not known yet" (no mark is the first record).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Marks {
    pub(crate) at: [u16; Marks::COUNT],
}

impl Marks {
    /// How many records of a batch are marked.
    pub(crate) const COUNT: usize = 6;

    /// Fewer records are stepped over quickly enough.
    pub(crate) const MIN_RECORDS: u32 = 8;

    /// The deltas of the marked records, if the batch can have marks.
    fn deltas(header: &BatchHeader, body_len: usize) -> Option<[u32; Self::COUNT]> {
        let count = header.record_count;
        let gapless = u64::from(count) == u64::from(header.last_offset_delta) + 1;
        (gapless && count >= Self::MIN_RECORDS && body_len <= usize::from(u16::MAX)).then(|| {
            let parts = Self::COUNT as u64 + 1;
            // `count * k / parts < count`, so each fits in a u32.
            std::array::from_fn(|k| (u64::from(count) * (k as u64 + 1) / parts) as u32)
        })
    }

    /// The known mark nearest before `wanted`: its delta and position.
    fn nearest(&self, deltas: [u32; Self::COUNT], wanted: u64) -> Option<(u32, u16)> {
        deltas
            .into_iter()
            .zip(self.at)
            .rfind(|&(delta, at)| at != 0 && u64::from(delta) <= wanted)
    }

    /// Steps on from the record at `position` (whose delta is `delta`) to
    /// the last mark, noting the marks it passes, so that the reads after
    /// the first one into a batch find every mark. Stops at the first
    /// record that does not decode: the read that needs it reports it.
    fn learn_rest(
        &mut self,
        deltas: [u32; Self::COUNT],
        body: &[u8],
        mut position: usize,
        mut delta: u64,
    ) {
        let last = u64::from(deltas[Self::COUNT - 1]);
        while delta <= last {
            match delta_and_length(body, position) {
                Some((found, len)) if found == delta => {
                    self.learn(deltas, delta, position);
                    position += len;
                    delta += 1;
                }
                _ => return,
            }
        }
    }

    /// Notes that the record at `delta` starts at `position`.
    fn learn(&mut self, deltas: [u32; Self::COUNT], delta: u64, position: usize) {
        for (&mark, at) in deltas.iter().zip(&mut self.at) {
            if u64::from(mark) == delta
                && let Ok(position) = u16::try_from(position)
            {
                *at = position;
            }
        }
    }
}

impl Records {
    /// The next record if it decodes; otherwise `None`, with nothing
    /// changed, and `next` then gives the error or the end. The loop of a
    /// scan: small enough to be inlined into the caller's.
    #[inline(always)]
    pub(crate) fn next_record(&mut self) -> Option<StoredRecord> {
        if self.remaining == 0 || self.packed.is_some() {
            return None;
        }
        let record = self.decode_one().ok()?;
        self.remaining -= 1;
        Some(record)
    }
}

/// Where the fields of one record lie in a records block, after every one
/// of them was checked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordSpans {
    /// Where the next record starts.
    pub end: usize,
    pub offset_delta: u64,
    pub timestamp_delta: i64,
    pub key: Option<(usize, usize)>,
    pub value: Option<(usize, usize)>,
    /// The headers' bytes: `header_count` headers, each checked (lengths
    /// within the record, keys UTF-8).
    pub headers: (usize, usize),
    pub header_count: u64,
}

/// Decodes and checks the record at `position` of the records block `body`:
/// every length within the record, the record within the block, the offset
/// delta at least `min_delta` and at most `last_delta`, header keys UTF-8.
/// Used by every read of records, owned ([`Records`]) or borrowed.
#[inline(always)]
pub(crate) fn decode_record(
    body: &[u8],
    position: usize,
    min_delta: u64,
    last_delta: u32,
) -> Result<RecordSpans, CorruptKind> {
    let bad = CorruptKind::Record;
    // Fields are read by their place in `body`, the record's end bounding
    // every read once it is known.
    let mut fields = Fields {
        buf: body,
        at: position,
    };
    let length = fields.u64().ok_or(bad("record length"))?;
    let (start, end) = fields
        .span(length)
        .ok_or(bad("record length past the batch"))?;
    fields.buf = body.get(..end).unwrap_or_default();
    fields.at = start;
    let timestamp_delta = fields.i64().ok_or(bad("timestamp delta"))?;
    let offset_delta = fields.u64().ok_or(bad("offset delta"))?;
    if offset_delta < min_delta || offset_delta > u64::from(last_delta) {
        return Err(bad("offset delta out of order"));
    }
    let key = fields.nullable().ok_or(bad("key"))?;
    let value = fields.nullable().ok_or(bad("value"))?;
    let header_count = fields.u64().ok_or(bad("header count"))?;
    let headers_from = fields.at;
    if header_count != 0 {
        check_headers(&mut fields, header_count)?;
    }
    if fields.at != end {
        return Err(bad("record length does not match its fields"));
    }
    Ok(RecordSpans {
        end,
        offset_delta,
        timestamp_delta,
        key,
        value,
        headers: (headers_from, end),
        header_count,
    })
}

/// Checks `count` headers (rare, so kept out of the loop of a scan).
#[cold]
fn check_headers(fields: &mut Fields<'_>, count: u64) -> Result<(), CorruptKind> {
    let bad = CorruptKind::Record;
    // Every header takes at least two bytes.
    if count > (fields.buf.len() - fields.at) as u64 / 2 {
        return Err(bad("header count"));
    }
    for _ in 0..count {
        next_header(fields).ok_or(bad("header"))??;
    }
    Ok(())
}

/// The next header of `fields`: `None` when it is cut short, an error when
/// its key is not UTF-8; the key and value as ranges of `fields.buf`.
type HeaderSpans = ((usize, usize), Option<(usize, usize)>);

fn next_header(fields: &mut Fields<'_>) -> Option<Result<HeaderSpans, CorruptKind>> {
    let key_len = fields.u64()?;
    let key = fields.span(key_len)?;
    if std::str::from_utf8(fields.buf.get(key.0..key.1)?).is_err() {
        return Some(Err(CorruptKind::Record("header key is not UTF-8")));
    }
    let value = fields.nullable()?;
    Some(Ok((key, value)))
}

/// The headers of a checked record, owned (views of `body` for values).
#[cold]
fn owned_headers(body: &Bytes, spans: &RecordSpans) -> Result<Vec<Header>, CorruptKind> {
    let bad = || CorruptKind::Record("header");
    let (from, to) = spans.headers;
    let mut fields = Fields {
        buf: body.get(from..to).ok_or_else(bad)?,
        at: 0,
    };
    let mut headers = Vec::with_capacity(usize::try_from(spans.header_count).map_err(|_| bad())?);
    for _ in 0..spans.header_count {
        let (key, value) = next_header(&mut fields).ok_or_else(bad)??;
        let key = fields.buf.get(key.0..key.1).ok_or_else(bad)?;
        headers.push(Header {
            key: String::from_utf8_lossy(key).into_owned(),
            value: value.map(|(a, b)| body.slice(from + a..from + b)),
        });
    }
    Ok(headers)
}

/// The headers of a checked record, borrowed: `(key, value)` pairs.
#[derive(Debug, Clone)]
pub(crate) struct HeaderIter<'a> {
    fields: Fields<'a>,
    remaining: u64,
}

impl<'a> HeaderIter<'a> {
    /// The `count` headers in `bytes`, the header bytes of a record that
    /// [`decode_record`] checked.
    pub(crate) fn new(bytes: &'a [u8], count: u64) -> HeaderIter<'a> {
        HeaderIter {
            fields: Fields { buf: bytes, at: 0 },
            remaining: count,
        }
    }
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = (&'a str, Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let buf = self.fields.buf;
        // Checked when the record was decoded; anything else ends the
        // iteration rather than panicking.
        let Some(Ok((key, value))) = next_header(&mut self.fields) else {
            self.remaining = 0;
            return None;
        };
        let key = std::str::from_utf8(buf.get(key.0..key.1)?).ok()?;
        let value = match value {
            Some((a, b)) => Some(buf.get(a..b)?),
            None => None,
        };
        Some((key, value))
    }
}

impl Iterator for Records {
    type Item = Result<StoredRecord, CorruptKind>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            if self.position != self.body.len() {
                self.position = self.body.len();
                return Some(Err(CorruptKind::Record("bytes after the last record")));
            }
            return None;
        }
        self.remaining -= 1;
        let result = self.decode_one();
        if result.is_err() {
            self.remaining = 0;
            self.packed = None;
            self.body = Bytes::new();
            self.position = 0;
        }
        Some(result)
    }
}

/// Reads the fields of one record, never past its end.
#[derive(Debug, Clone)]
struct Fields<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Fields<'_> {
    #[inline]
    fn u64(&mut self) -> Option<u64> {
        // One and two bytes, nearly every varint of a record, read in
        // place; longer ones through the general decoder.
        let at = self.at;
        let low = *self.buf.get(at)?;
        if low < 0x80 {
            self.at = at + 1;
            return Some(u64::from(low));
        }
        if let Some(&high) = self.buf.get(at + 1)
            && high < 0x80
        {
            self.at = at + 2;
            return Some(u64::from(low & 0x7f) | u64::from(high) << 7);
        }
        self.u64_long()
    }

    #[cold]
    fn u64_long(&mut self) -> Option<u64> {
        let (v, n) = varint::get_u64(self.buf.get(self.at..)?)?;
        self.at += n;
        Some(v)
    }

    #[inline]
    fn i64(&mut self) -> Option<i64> {
        self.u64().map(varint::unzigzag)
    }

    /// The next `len` bytes, as a range of the record, after checking
    /// that they are there.
    #[inline]
    fn span(&mut self, len: u64) -> Option<(usize, usize)> {
        let from = self.at;
        // `at` never passes the end of `buf`: what is left bounds `len`,
        // and the sum cannot overflow.
        let left = self.buf.len().saturating_sub(from);
        if len > u64::try_from(left).unwrap_or(u64::MAX) {
            return None;
        }
        let to = from + usize::try_from(len).ok()?;
        self.at = to;
        Some((from, to))
    }

    /// A nullable byte string (length -1 is null), as a range of the
    /// record.
    #[inline]
    fn nullable(&mut self) -> Option<Option<(usize, usize)>> {
        // Zigzag: an even value is a length, 1 is -1 (null), and other odd
        // values are negative lengths.
        match self.u64()? {
            1 => Some(None),
            raw if raw & 1 == 0 => self.span(raw >> 1).map(Some),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Record> {
        vec![
            Record::new("v0").with_key("k0").with_timestamp(1_000),
            Record::tombstone("k1").with_timestamp(990),
            Record {
                key: None,
                value: Some(Bytes::new()),
                timestamp: Some(1_500),
                headers: vec![
                    Header {
                        key: "h".into(),
                        value: Some(Bytes::from_static(b"x")),
                    },
                    Header {
                        key: String::new(),
                        value: None,
                    },
                ],
            },
        ]
    }

    #[test]
    fn encode_then_decode_round_trips() {
        let records = sample();
        let mut batch = EncodedBatch::encode(&records, 7, 1 << 20).unwrap();
        let bytes = Bytes::copy_from_slice(batch.seal(42));
        let header = verify_batch(&bytes, 1 << 20).unwrap();
        assert_eq!(header.base_offset, 42);
        assert_eq!(header.last_offset(), 44);
        assert_eq!(header.record_count, 3);
        assert_eq!(header.first_timestamp, 1_000);
        assert_eq!(header.max_timestamp, 1_500);
        assert_eq!(header.producer_id, NO_PRODUCER_ID);
        let decoded: Vec<_> = Records::new(header, bytes)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(decoded.len(), 3);
        for (i, (d, r)) in decoded.iter().zip(&records).enumerate() {
            assert_eq!(d.offset, 42 + i as u64);
            assert_eq!(d.timestamp, r.timestamp.unwrap());
            assert_eq!(d.key, r.key);
            assert_eq!(d.value, r.value);
            assert_eq!(d.headers, r.headers);
        }
    }

    #[test]
    fn compressed_batches_round_trip_and_keep_the_codec() {
        let records: Vec<Record> = (0..200)
            .map(|i| Record::new(format!("{{\"id\":{i},\"level\":\"INFO\"}}")).with_key("k"))
            .collect();
        for compression in [Compression::Lz4, Compression::Zstd { level: 1 }] {
            let mut plain = EncodedBatch::encode(&records, 0, 1 << 20).unwrap();
            let mut packed = plain.clone();
            packed.compress(compression);
            assert!(packed.len() < plain.len() / 2, "{compression:?}");
            let packed = Bytes::copy_from_slice(packed.seal(9));
            let header = verify_batch(&packed, 1 << 20).unwrap();
            assert_eq!(header.codec(), codec::codec_of(compression));
            let plain = Bytes::copy_from_slice(plain.seal(9));
            let a: Vec<_> = Records::new(header, packed)
                .collect::<Result<_, _>>()
                .unwrap();
            let b: Vec<_> = Records::new(verify_batch(&plain, 1 << 20).unwrap(), plain)
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(a, b);
        }
    }

    #[test]
    fn a_batch_that_does_not_shrink_stays_uncompressed() {
        let mut batch = EncodedBatch::encode(&[Record::new("x")], 0, 1 << 20).unwrap();
        let before = batch.bytes().to_vec();
        batch.compress(Compression::Lz4);
        assert_eq!(batch.bytes(), &before[..]);
        assert_eq!(batch.header().codec(), codec::CODEC_NONE);
    }

    #[test]
    fn skipping_lands_on_the_first_wanted_record() {
        let records: Vec<Record> = (0..10).map(|i| Record::new(format!("v{i}"))).collect();
        let mut batch = EncodedBatch::encode(&records, 0, 1 << 20).unwrap();
        let bytes = Bytes::copy_from_slice(batch.seal(100));
        let header = verify_batch(&bytes, 1 << 20).unwrap();
        for wanted in [0, 100, 101, 105, 109, 110, 500] {
            let offsets: Vec<u64> = Records::new(header, bytes.clone())
                .skip_before(wanted)
                .map(|r| r.unwrap().offset)
                .collect();
            let expected: Vec<u64> = (100..110).filter(|&o| o >= wanted).collect();
            assert_eq!(offsets, expected, "from {wanted}");
        }
    }

    /// Records of varied lengths, so that a mark in the wrong place would
    /// not land on a record boundary by chance.
    fn varied(count: usize) -> (BatchHeader, Bytes) {
        let records: Vec<Record> = (0..count)
            .map(|i| Record::new("x".repeat(i % 7 * 13)).with_key(format!("k{i}")))
            .collect();
        let mut batch = EncodedBatch::encode(&records, 0, 1 << 20).unwrap();
        let bytes = Bytes::copy_from_slice(batch.seal(1_000));
        (verify_batch(&bytes, 1 << 20).unwrap(), bytes)
    }

    #[test]
    fn marks_are_learned_by_walking_and_shorten_later_walks() {
        let (header, bytes) = varied(30);
        let plain: Vec<StoredRecord> = Records::new(header, bytes.clone())
            .collect::<Result<_, _>>()
            .unwrap();
        let mut marks = Marks::default();
        // Marks at deltas 4, 8, 12, 17, 21 and 25. The first walk, even to
        // the first mark, learns them all, and stops where it was asked to.
        let first = Records::new(header, bytes.clone()).skip_before_marked(1_004, &mut marks);
        assert!(marks.at.iter().all(|&at| at != 0), "{marks:?}");
        assert!(marks.at.is_sorted());
        assert_eq!(first.position, usize::from(marks.at[0]));
        assert_eq!(first.remaining, 26);
        let again = marks;
        Records::new(header, bytes.clone()).skip_before_marked(1_029, &mut marks);
        assert_eq!(marks, again, "nothing more to learn");
        let learned = marks;
        for wanted in 990..1_040 {
            let mut marks = learned;
            let from_marks: Vec<StoredRecord> = Records::new(header, bytes.clone())
                .skip_before_marked(wanted, &mut marks)
                .collect::<Result<_, _>>()
                .unwrap();
            let expected: Vec<StoredRecord> = plain
                .iter()
                .filter(|r| r.offset >= wanted)
                .cloned()
                .collect();
            assert_eq!(from_marks, expected, "from {wanted}");
            assert_eq!(marks, learned, "the marks stay where they are");
        }
        // Record 25 (the last mark) is found without stepping over the
        // records before it.
        let mut marks = learned;
        let from_second = Records::new(header, bytes.clone()).skip_before_marked(1_025, &mut marks);
        assert_eq!(from_second.remaining, 5);
    }

    #[test]
    fn small_or_gapped_batches_get_no_marks() {
        let (header, bytes) = varied(7);
        let mut marks = Marks::default();
        let records = Records::new(header, bytes).skip_before_marked(1_006, &mut marks);
        assert_eq!(marks, Marks::default());
        assert_eq!(records.remaining, 1);
        // Compaction keeps a batch's offset span while dropping records.
        let records: Vec<Record> = (0..20).map(|i| Record::new(format!("v{i}"))).collect();
        let mut batch =
            EncodedBatch::encode_with_deltas(&records, |i| i as u64 * 2, 0, 1 << 20).unwrap();
        let bytes = Bytes::copy_from_slice(batch.seal(0));
        let header = verify_batch(&bytes, 1 << 20).unwrap();
        let mut marks = Marks::default();
        let offsets: Vec<u64> = Records::new(header, bytes)
            .skip_before_marked(25, &mut marks)
            .map(|r| r.unwrap().offset)
            .collect();
        assert_eq!(marks, Marks::default());
        assert_eq!(offsets, (26..40).step_by(2).collect::<Vec<u64>>());
    }

    #[test]
    fn marks_that_lie_give_errors_or_records_never_a_panic() {
        let (header, bytes) = varied(30);
        for at in 0..=u16::try_from(bytes.len()).unwrap() + 2 {
            for wanted in [1_010, 1_015, 1_020, 1_029] {
                let mut marks = Marks {
                    at: [at; Marks::COUNT],
                };
                for record in
                    Records::new(header, bytes.clone()).skip_before_marked(wanted, &mut marks)
                {
                    if record.is_err() {
                        break;
                    }
                }
            }
        }
    }

    #[test]
    fn missing_timestamps_take_the_append_time() {
        let mut batch = EncodedBatch::encode(&[Record::new("a")], 123, 1 << 20).unwrap();
        let bytes = Bytes::copy_from_slice(batch.seal(0));
        let header = verify_batch(&bytes, 1 << 20).unwrap();
        let r = Records::new(header, bytes).next().unwrap().unwrap();
        assert_eq!(r.timestamp, 123);
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let mut batch = EncodedBatch::encode(&sample(), 0, 1 << 20).unwrap();
        let good = batch.seal(5).to_vec();
        for byte in 0..good.len() {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[byte] ^= 1 << bit;
                assert!(
                    verify_batch(&bad, 1 << 20).is_err(),
                    "flip at {byte}:{bit} passed"
                );
            }
        }
    }

    #[test]
    fn too_large_is_refused_with_its_size() {
        let big = Record::new(vec![0u8; 1000]);
        let err = EncodedBatch::encode(&[big], 0, 500).unwrap_err();
        assert!(err > 1000);
    }

    #[test]
    fn every_truncation_is_caught() {
        let mut batch = EncodedBatch::encode(&sample(), 0, 1 << 20).unwrap();
        let good = batch.seal(5).to_vec();
        for len in 0..good.len() {
            assert!(verify_batch(&good[..len], 1 << 20).is_err());
        }
    }

    #[test]
    fn hostile_record_lengths_do_not_panic() {
        // A header that checks out around records whose lengths lie.
        let mut body = Vec::new();
        varint::put_u64(&mut body, u64::MAX);
        let mut buf = vec![0u8; HEADER_BYTES];
        buf.extend_from_slice(&body);
        let len = buf.len() as u32;
        buf[LENGTH_OFFSET..LENGTH_OFFSET + 4].copy_from_slice(&len.to_le_bytes());
        buf[MAGIC_OFFSET] = MAGIC;
        buf[RECORD_COUNT_OFFSET..RECORD_COUNT_OFFSET + 4].copy_from_slice(&1u32.to_le_bytes());
        let crc = crc32fast::hash(&buf[LENGTH_OFFSET..]);
        buf[..4].copy_from_slice(&crc.to_le_bytes());
        let bytes = Bytes::from(buf);
        let header = verify_batch(&bytes, 1 << 20).unwrap();
        let mut records = Records::new(header, bytes);
        assert!(records.next().unwrap().is_err());
        assert!(records.next().is_none());
    }
}
