//! Reading a partition batch by batch, with records as borrowed views.
//!
//! [`Partition::reader`](crate::Partition::reader) hands out each record as
//! a [`StoredRecord`](crate::StoredRecord) that owns views of the mapped
//! file: one reference-counted `Bytes` per key and value, taken and dropped
//! for every record. A [`Batch`] owns its records block once, and its
//! records are [`RecordRef`]s that borrow from it, decoded with no
//! allocation and no reference counting per record.

use std::sync::Arc;

use bytes::{Buf, Bytes};

use crate::codec;
use crate::error::{CorruptKind, Error, Result};
use crate::partition::{BatchCursor, Partition};
use crate::record::batch::{BatchHeader, HEADER_BYTES, HeaderIter, decode_record};
use crate::segment::Segment;

/// Iterator over the batches of a partition from an offset on; see
/// [`Partition::batches`].
///
/// Each item is a [`Batch`] that passed its checksum (as with every read;
/// see [`Config::verify_every_read`](crate::Config::verify_every_read)),
/// with its records block decompressed if it was stored compressed, or an
/// error, after which the iterator ends. Like a
/// [`Reader`](crate::Reader), it stops at the end offset as it is when each
/// item is asked for, and a later call returns batches appended since.
///
/// ```
/// use durable_log::{Config, Log, Record};
///
/// # let dir = tempfile::tempdir()?;
/// let log = Log::open(dir.path(), Config::default())?;
/// let p = log.partition(0)?;
/// p.append(&[Record::new("a"), Record::new("bc")])?;
/// p.append(&[Record::new("def").with_header("trace", "x")])?;
/// let mut bytes = 0;
/// for batch in p.batches(1) {
///     let batch = batch?;
///     for record in batch.records() {
///         let record = record?; // offset, timestamp, key, value: borrowed
///         bytes += record.value.map_or(0, <[u8]>::len);
///         for header in record.headers() {
///             assert_eq!((header.key, header.value), ("trace", Some(&b"x"[..])));
///         }
///     }
/// }
/// assert_eq!(bytes, 5); // records 1 and 2
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Batches {
    partition: Partition,
    next_offset: u64,
    cursor: Option<BatchCursor>,
    failed: bool,
}

impl std::fmt::Debug for Batches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batches")
            .field("partition", &self.partition.id())
            .field("next_offset", &self.next_offset)
            .finish_non_exhaustive()
    }
}

impl Batches {
    pub(crate) fn new(partition: Partition, offset: u64) -> Batches {
        Batches {
            partition,
            next_offset: offset,
            cursor: None,
            failed: false,
        }
    }

    /// The first offset the next batch's records start from.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    fn fail(&mut self, error: Error) -> Option<Result<Batch>> {
        self.failed = true;
        Some(Err(error))
    }
}

impl Iterator for Batches {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if let Err(e) = self.partition.check_open() {
            return self.fail(e);
        }
        let cursor = match &mut self.cursor {
            Some(cursor) => cursor,
            None => match BatchCursor::seek(&self.partition, self.next_offset) {
                Ok(cursor) => self.cursor.insert(cursor),
                Err(e) => return self.fail(e),
            },
        };
        match cursor.next_batch() {
            Ok(Some((header, bytes, position))) => {
                let segment = cursor.segment.clone();
                let from = self.next_offset;
                self.next_offset = header.next_offset();
                match Batch::new(header, bytes, from, segment, position) {
                    Ok(batch) => Some(Ok(batch)),
                    Err(e) => self.fail(e),
                }
            }
            Ok(None) => {
                // Come back from the same place next time.
                if cursor.next_offset < self.next_offset {
                    cursor.next_offset = self.next_offset;
                }
                None
            }
            Err(e) => self.fail(e),
        }
    }
}

/// One batch of a partition, checked, with its records block uncompressed;
/// see [`Batches`]. Its records are read with [`Batch::records`].
///
/// A batch of uncompressed records holds a view of the mapped segment
/// file, a compressed one its decompressed block.
pub struct Batch {
    header: BatchHeader,
    /// The records block, uncompressed.
    body: Bytes,
    /// The first offset [`Batch::records`] returns.
    from: u64,
    segment: Arc<Segment>,
    position: u64,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("base_offset", &self.base_offset())
            .field("last_offset", &self.last_offset())
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

impl Batch {
    fn new(
        header: BatchHeader,
        mut bytes: Bytes,
        from: u64,
        segment: Arc<Segment>,
        position: u64,
    ) -> Result<Batch> {
        let body = if header.codec() == codec::CODEC_NONE {
            bytes.advance(HEADER_BYTES.min(bytes.len()));
            bytes
        } else {
            let block = bytes.get(HEADER_BYTES..).unwrap_or_default();
            codec::decompress(header.codec(), block)
                .map_err(|kind| Error::corrupt(segment.log_path(), position, kind))?
        };
        Ok(Batch {
            header,
            body,
            from,
            segment,
            position,
        })
    }

    /// Offset of the batch's first record (which [`Batch::records`] does not
    /// return when it is below the offset the [`Batches`] started from).
    pub fn base_offset(&self) -> u64 {
        self.header.base_offset
    }

    /// Offset of the batch's last record, or of the last record it held
    /// before compaction removed some.
    pub fn last_offset(&self) -> u64 {
        self.header.last_offset()
    }

    /// The batch's records from the offset the [`Batches`] started from,
    /// each checked as it is decoded: a malformed record is an
    /// [`Error::Corrupt`] naming the batch, after which the iterator ends.
    pub fn records(&self) -> BatchRecords<'_> {
        let mut records = BatchRecords {
            batch: self,
            body: &self.body,
            position: 0,
            remaining: self.header.record_count,
            min_delta: 0,
        };
        if self.from > self.header.base_offset {
            records.skip_before(self.from);
        }
        records
    }
}

/// Iterator over the records of a [`Batch`], borrowed from it; see
/// [`Batch::records`].
pub struct BatchRecords<'a> {
    batch: &'a Batch,
    body: &'a [u8],
    position: usize,
    remaining: u32,
    min_delta: u64,
}

impl std::fmt::Debug for BatchRecords<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchRecords")
            .field("batch", &self.batch)
            .field("remaining", &self.remaining)
            .finish_non_exhaustive()
    }
}

impl<'a> BatchRecords<'a> {
    /// Steps over the records below `offset` (only the first batch of a
    /// scan has any), decoding and checking them; a malformed one is left
    /// for `next` to report.
    fn skip_before(&mut self, offset: u64) {
        let header = &self.batch.header;
        while self.remaining > 0 {
            let Ok(spans) = decode_record(
                self.body,
                self.position,
                self.min_delta,
                header.last_offset_delta,
            ) else {
                return;
            };
            if header.base_offset + spans.offset_delta >= offset {
                return;
            }
            self.remaining -= 1;
            self.position = spans.end;
            self.min_delta = spans.offset_delta + 1;
        }
    }

    fn fail(&mut self, kind: CorruptKind) -> Option<Result<RecordRef<'a>>> {
        self.remaining = 0;
        self.position = self.body.len();
        let batch = self.batch;
        Some(Err(Error::corrupt(
            batch.segment.log_path(),
            batch.position,
            kind,
        )))
    }
}

impl<'a> Iterator for BatchRecords<'a> {
    type Item = Result<RecordRef<'a>>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let header = &self.batch.header;
        if self.remaining == 0 {
            if self.position != self.body.len() {
                return self.fail(CorruptKind::Record("bytes after the last record"));
            }
            return None;
        }
        let spans = match decode_record(
            self.body,
            self.position,
            self.min_delta,
            header.last_offset_delta,
        ) {
            Ok(spans) => spans,
            Err(kind) => return self.fail(kind),
        };
        self.remaining -= 1;
        self.position = spans.end;
        // At most `u32::MAX`, checked by `decode_record`: no overflow.
        self.min_delta = spans.offset_delta + 1;
        let body = self.body;
        let slice = |(from, to): (usize, usize)| body.get(from..to).unwrap_or_default();
        Some(Ok(RecordRef {
            offset: header.base_offset + spans.offset_delta,
            timestamp: header.first_timestamp.wrapping_add(spans.timestamp_delta),
            key: spans.key.map(slice),
            value: spans.value.map(slice),
            body,
            headers: spans.headers,
            header_count: spans.header_count,
        }))
    }
}

/// A record of a [`Batch`], borrowed from it: the fields of a
/// [`StoredRecord`](crate::StoredRecord) without copies, allocations or
/// reference counts. Two are equal when their fields and headers are.
#[derive(Clone, Copy)]
#[non_exhaustive]
pub struct RecordRef<'a> {
    /// The record's position in the partition.
    pub offset: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The key, if the record has one.
    pub key: Option<&'a [u8]>,
    /// The value; `None` for a tombstone.
    pub value: Option<&'a [u8]>,
    /// The records block, and where the record's headers are in it.
    body: &'a [u8],
    headers: (usize, usize),
    header_count: u64,
}

impl std::fmt::Debug for RecordRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordRef")
            .field("offset", &self.offset)
            .field("timestamp", &self.timestamp)
            .field("key", &self.key)
            .field("value", &self.value)
            .field("headers", &self.headers().collect::<Vec<_>>())
            .finish()
    }
}

impl PartialEq for RecordRef<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.offset == other.offset
            && self.timestamp == other.timestamp
            && self.key == other.key
            && self.value == other.value
            && self.headers().eq(other.headers())
    }
}

impl Eq for RecordRef<'_> {}

impl<'a> RecordRef<'a> {
    /// The record's headers, in order (checked when the record was
    /// decoded).
    pub fn headers(&self) -> HeaderRefs<'a> {
        let (from, to) = self.headers;
        let bytes = self.body.get(from..to).unwrap_or_default();
        HeaderRefs(HeaderIter::new(bytes, self.header_count))
    }
}

/// A header of a [`RecordRef`], borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeaderRef<'a> {
    /// The header's name.
    pub key: &'a str,
    /// The header's value; `None` is a null value.
    pub value: Option<&'a [u8]>,
}

/// Iterator over the headers of a [`RecordRef`]; see [`RecordRef::headers`].
#[derive(Debug, Clone)]
pub struct HeaderRefs<'a>(HeaderIter<'a>);

impl<'a> Iterator for HeaderRefs<'a> {
    type Item = HeaderRef<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|(key, value)| HeaderRef { key, value })
    }
}
