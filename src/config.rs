//! Configuration of a [`Log`](crate::Log).

use std::time::Duration;

use crate::error::{Error, Result};
use crate::record::HEADER_BYTES;

/// When an acknowledged append is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// An append returns only after its bytes are fsynced. Appenders that run
    /// at the same time share one fsync (group commit).
    Sync,
    /// Appends return once written to the page cache; a background thread
    /// fsyncs every partition at this interval. A crash of the machine loses
    /// at most about one interval of acknowledged appends; a crash of the
    /// process alone loses nothing.
    Interval(Duration),
    /// Appends return once written to the page cache and are fsynced only when
    /// a segment rolls, on [`Log::sync`](crate::Log::sync) and on close. This is
    /// Kafka's default: a power loss may lose any unsynced append.
    None,
}

/// How the records inside a batch are compressed on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Records are stored as they are.
    #[default]
    None,
    /// LZ4 block compression.
    Lz4,
    /// Zstandard at the given level: 1 (fastest) to 22 (smallest); negative
    /// levels trade ratio for more speed.
    Zstd {
        /// The compression level.
        level: i32,
    },
}

/// What happens to old segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Cleanup {
    /// Whole segments are deleted by the retention limits.
    #[default]
    Delete,
    /// Closed segments are rewritten to keep the latest record of each key
    /// (Kafka's `cleanup.policy=compact`): a key-value changelog whose
    /// replay from the start rebuilds the latest state.
    ///
    /// - Every record needs a key; an append with an unkeyed record fails
    ///   with [`Error::MissingKey`](crate::Error::MissingKey).
    /// - Offsets never change: compaction leaves gaps, and a read at a
    ///   removed offset returns the next record kept. The start and end
    ///   offsets do not move.
    /// - The active segment is never cleaned, and only keys up to it are
    ///   considered, as in Kafka: a record in a closed segment stays until
    ///   its key is written again in a segment that has been closed too.
    ///   Lower `segment_bytes` or `segment_max_age` for segments to close,
    ///   and so be cleaned, sooner.
    /// - A tombstone (a record without a value) removes the earlier records
    ///   of its key at the first clean that sees it, stays for
    ///   [`Config::delete_retention`] after that clean so consumers can see
    ///   the delete, and is removed by a later clean.
    /// - The retention limits (`retention_bytes`, `retention_age`) are not
    ///   applied; `delete_records_before` still is.
    /// - Memory is bounded: a clean maps each key, stored whole (so no
    ///   collision can lose a latest value), to its latest offset, in at
    ///   most 64 MiB counting 48 bytes per key besides the key. A clean that
    ///   fills the map goes only as far as it mapped; the next one goes on.
    ///
    /// Cleaning runs on the background thread every
    /// [`Config::retention_check_interval`] and on
    /// [`Log::compact`](crate::Log::compact) and
    /// [`Partition::compact`](crate::Partition::compact).
    Compact,
}

/// Settings of a log. Every field has a documented default; build one with
/// [`Config::default`] and the chainable setters of the same names.
///
/// ```
/// use std::time::Duration;
/// use durable_log::{Config, Durability};
///
/// let config = Config::default()
///     .partitions(4)
///     .segment_bytes(64 << 20)
///     .durability(Durability::Interval(Duration::from_millis(50)));
/// assert_eq!(config.partitions, 4);
/// ```
///
/// [`Log::open`](crate::Log::open) checks the values and refuses invalid ones
/// with [`Error::InvalidConfig`] naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Number of partitions. An existing log keeps the partitions it has; a
    /// larger value adds partitions, a smaller one is refused.
    ///
    /// Default: 1.
    pub partitions: u32,
    /// A segment rolls when the next batch would take it past this size. A
    /// batch larger than this is stored alone in its own segment.
    ///
    /// Default: 1 GiB. At most 4 GiB - 1 (positions in a segment are 32-bit).
    pub segment_bytes: u64,
    /// A segment rolls when its first batch is older than this.
    ///
    /// Default: 7 days.
    pub segment_max_age: Duration,
    /// An offset-index entry is written each time this many bytes of batches
    /// have been appended since the previous entry.
    ///
    /// Default: 4 KiB.
    pub index_interval_bytes: u32,
    /// Maximum size of a segment's offset index; a full index rolls the
    /// segment. The time index gets 1.5 times this.
    ///
    /// Default: 10 MiB.
    pub max_index_bytes: u32,
    /// Largest encoded batch the log accepts.
    ///
    /// Default: 1 MiB.
    pub max_batch_bytes: u32,
    /// Old segments are deleted while the partition is larger than this.
    /// Not applied to a compacted log ([`Cleanup::Compact`]).
    ///
    /// Default: `None` (no size limit).
    pub retention_bytes: Option<u64>,
    /// Segments whose newest record is older than this are deleted. Not
    /// applied to a compacted log ([`Cleanup::Compact`]).
    ///
    /// Default: 7 days.
    pub retention_age: Option<Duration>,
    /// How often the background thread enforces retention, and compacts the
    /// log when `cleanup` is [`Cleanup::Compact`].
    ///
    /// Default: 5 minutes.
    pub retention_check_interval: Duration,
    /// When an acknowledged append is on disk.
    ///
    /// Default: [`Durability::Sync`].
    pub durability: Durability,
    /// Codec for batches appended to this log. Each batch records its codec,
    /// so this can change between opens; a batch that does not shrink is
    /// stored uncompressed.
    ///
    /// Default: [`Compression::None`].
    pub compression: Compression,
    /// Verify a batch's checksum on every read of it. When `false`, a batch
    /// is verified the first time this process reads it, and later reads of
    /// the same batch trust it: published batch bytes are never rewritten in
    /// place (a truncation or a compaction writes a new file, read with an
    /// empty memo), so what matched its checksum once still does, unless
    /// something outside the log writes into the file or the disk hands back
    /// other bytes for it. Set this to have every read find such damage;
    /// it costs a pass over the whole batch for every point read.
    ///
    /// Either way a batch is verified before any of its records is handed
    /// out for the first time, and reopening the log verifies every batch
    /// again at its first read. The memo takes at most 1 MiB per segment
    /// and 64 MiB per process (FORMAT.md, "Reading").
    ///
    /// Default: `false` (verify once).
    pub verify_every_read: bool,
    /// What happens to old segments.
    ///
    /// Default: [`Cleanup::Delete`].
    pub cleanup: Cleanup,
    /// On a compacted log, how long a tombstone stays after the first clean
    /// that sees it (Kafka's `delete.retention.ms`): a consumer that reads
    /// the log from the start within this time after a clean sees every
    /// delete. A later clean removes it. Counted from the clean, not from the
    /// tombstone's timestamp; zero removes tombstones at the next clean.
    ///
    /// Default: 24 hours. At most `i64::MAX` milliseconds.
    pub delete_retention: Duration,
}

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;
const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// Largest segment: positions inside a segment are stored as `u32`.
pub(crate) const MAX_SEGMENT_BYTES: u64 = u32::MAX as u64;
/// Largest partition count accepted.
pub(crate) const MAX_PARTITIONS: u32 = 1 << 16;

impl Default for Config {
    fn default() -> Self {
        Config {
            partitions: 1,
            segment_bytes: GIB,
            segment_max_age: 7 * DAY,
            index_interval_bytes: 4 * KIB as u32,
            max_index_bytes: 10 * MIB as u32,
            max_batch_bytes: MIB as u32,
            retention_bytes: None,
            retention_age: Some(7 * DAY),
            retention_check_interval: Duration::from_secs(5 * 60),
            durability: Durability::Sync,
            compression: Compression::None,
            verify_every_read: false,
            cleanup: Cleanup::Delete,
            delete_retention: DAY,
        }
    }
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty;)*) => {
        impl Config {
            $(
                $(#[$doc])*
                #[must_use]
                pub fn $name(mut self, value: $ty) -> Self {
                    self.$name = value;
                    self
                }
            )*
        }
    };
}

setters! {
    /// Sets [`Config::partitions`].
    partitions: u32;
    /// Sets [`Config::segment_bytes`].
    segment_bytes: u64;
    /// Sets [`Config::segment_max_age`].
    segment_max_age: Duration;
    /// Sets [`Config::index_interval_bytes`].
    index_interval_bytes: u32;
    /// Sets [`Config::max_index_bytes`].
    max_index_bytes: u32;
    /// Sets [`Config::max_batch_bytes`].
    max_batch_bytes: u32;
    /// Sets [`Config::retention_bytes`].
    retention_bytes: Option<u64>;
    /// Sets [`Config::retention_age`].
    retention_age: Option<Duration>;
    /// Sets [`Config::retention_check_interval`].
    retention_check_interval: Duration;
    /// Sets [`Config::durability`].
    durability: Durability;
    /// Sets [`Config::compression`].
    compression: Compression;
    /// Sets [`Config::verify_every_read`].
    verify_every_read: bool;
    /// Sets [`Config::cleanup`].
    cleanup: Cleanup;
    /// Sets [`Config::delete_retention`].
    delete_retention: Duration;
}

impl Config {
    /// Checks every field; the error names the first invalid one.
    pub fn validate(&self) -> Result<()> {
        if self.partitions == 0 || self.partitions > MAX_PARTITIONS {
            return Err(Error::config(
                "partitions",
                format!("must be between 1 and {MAX_PARTITIONS}"),
            ));
        }
        if self.segment_bytes == 0 || self.segment_bytes > MAX_SEGMENT_BYTES {
            return Err(Error::config(
                "segment_bytes",
                format!("must be between 1 and {MAX_SEGMENT_BYTES}"),
            ));
        }
        if self.segment_max_age.is_zero() {
            return Err(Error::config("segment_max_age", "must be positive"));
        }
        if self.index_interval_bytes == 0 {
            return Err(Error::config("index_interval_bytes", "must be positive"));
        }
        if self.max_index_bytes < 64 {
            return Err(Error::config("max_index_bytes", "must be at least 64"));
        }
        if (self.max_batch_bytes as usize) <= HEADER_BYTES {
            return Err(Error::config(
                "max_batch_bytes",
                format!("must be larger than the {HEADER_BYTES}-byte batch header"),
            ));
        }
        if self.retention_bytes == Some(0) {
            return Err(Error::config(
                "retention_bytes",
                "must be positive (use None for no limit)",
            ));
        }
        if self.retention_age.is_some_and(|age| age.is_zero()) {
            return Err(Error::config(
                "retention_age",
                "must be positive (use None for no limit)",
            ));
        }
        if self.retention_check_interval.is_zero() {
            return Err(Error::config(
                "retention_check_interval",
                "must be positive",
            ));
        }
        if let Durability::Interval(every) = self.durability
            && every.is_zero()
        {
            return Err(Error::config(
                "durability",
                "the interval must be positive (use Durability::Sync to sync every append)",
            ));
        }
        match self.compression {
            Compression::None => {}
            Compression::Lz4 | Compression::Zstd { .. }
                if self.max_batch_bytes as usize > crate::codec::MAX_DECOMPRESSED_BYTES =>
            {
                return Err(Error::config(
                    "max_batch_bytes",
                    format!(
                        "must be at most {} bytes when batches are compressed",
                        crate::codec::MAX_DECOMPRESSED_BYTES
                    ),
                ));
            }
            Compression::Lz4 => {}
            Compression::Zstd { level } => {
                let levels = zstd::compression_level_range();
                if !levels.contains(&level) || level == 0 {
                    return Err(Error::config(
                        "compression",
                        format!(
                            "zstd level {level} is outside {}..={} (0 is not a level)",
                            levels.start(),
                            levels.end()
                        ),
                    ));
                }
            }
        }
        if i64::try_from(self.delete_retention.as_millis()).is_err() {
            return Err(Error::config(
                "delete_retention",
                "must be at most i64::MAX milliseconds",
            ));
        }
        Ok(())
    }
}
