//! Records as the caller sees them, and the batch format they are stored in.
//!
//! The byte layout is documented in `FORMAT.md`; [`batch`] is its code.

use bytes::Bytes;

pub(crate) mod batch;
mod varint;

pub(crate) use batch::HEADER_BYTES;

/// A record to append: an optional key, an optional value (none is a
/// tombstone), an optional timestamp and headers.
///
/// ```
/// use durable_log::Record;
///
/// let r = Record::new("hello").with_key("user-7").with_header("trace", "abc");
/// assert_eq!(r.key.as_deref(), Some(&b"user-7"[..]));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// Routing and compaction key.
    pub key: Option<Bytes>,
    /// The payload; `None` is a tombstone (deletes the key on a compacted log).
    pub value: Option<Bytes>,
    /// Milliseconds since the Unix epoch; `None` means "the time of the
    /// append".
    pub timestamp: Option<i64>,
    /// Application headers, kept in order.
    pub headers: Vec<Header>,
}

impl Record {
    /// A record with this value, no key, no headers, timestamped at append.
    pub fn new(value: impl Into<Bytes>) -> Record {
        Record {
            value: Some(value.into()),
            ..Record::default()
        }
    }

    /// A tombstone for `key`: a record with no value.
    pub fn tombstone(key: impl Into<Bytes>) -> Record {
        Record {
            key: Some(key.into()),
            ..Record::default()
        }
    }

    /// Sets the key.
    #[must_use]
    pub fn with_key(mut self, key: impl Into<Bytes>) -> Record {
        self.key = Some(key.into());
        self
    }

    /// Sets the timestamp in milliseconds since the Unix epoch.
    #[must_use]
    pub fn with_timestamp(mut self, timestamp_ms: i64) -> Record {
        self.timestamp = Some(timestamp_ms);
        self
    }

    /// Appends a header.
    #[must_use]
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Record {
        self.headers.push(Header {
            key: key.into(),
            value: Some(value.into()),
        });
        self
    }
}

/// A record header: a string key and an optional byte value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The header's name.
    pub key: String,
    /// The header's value; `None` is a null value.
    pub value: Option<Bytes>,
}

/// A record read back from the log, with the offset the log gave it.
///
/// For batches stored uncompressed, `key`, `value` and header values are
/// views of the mapped segment file: reading does not copy the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// The record's position in the partition.
    pub offset: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The key, if the record had one.
    pub key: Option<Bytes>,
    /// The value; `None` for a tombstone.
    pub value: Option<Bytes>,
    /// The headers, in order.
    pub headers: Vec<Header>,
}

/// Where an append landed.
///
/// Not `#[non_exhaustive]`: it is the answer a replication
/// `Transport::produce` carries back over the host's RPC, which rebuilds it
/// from its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The partition that holds the records.
    pub partition: u32,
    /// Offset of the first record of the batch.
    pub base_offset: u64,
    /// Offset of the last record of the batch.
    pub last_offset: u64,
    /// Largest timestamp in the batch, in milliseconds since the Unix epoch.
    pub max_timestamp: i64,
}

impl Appended {
    /// Number of records in the batch.
    pub fn record_count(&self) -> u64 {
        self.last_offset - self.base_offset + 1
    }
}
