//! The one error type of the crate.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// A specialised `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `durable-log`.
///
/// Each variant carries what a caller needs to act on it: the offsets of the
/// log for [`Error::OffsetOutOfRange`], the file and byte position for
/// [`Error::Corrupt`], the path for [`Error::Io`]. Errors are `Clone` so
/// that one failed batch can fail every send waiting on it.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation failed on the file or directory at the path.
    #[error("I/O error on {}: {}", .0.display(), .1)]
    Io(PathBuf, #[source] Arc<io::Error>),

    /// Bytes on disk failed validation where the log expected durable data.
    ///
    /// Torn writes at the unsynced tail of the active segment are repaired at
    /// open; this error is reserved for data that was already synced (or for a
    /// read that finds a batch that no longer checks out).
    #[error("corrupt data in {path} at byte {position}: {kind}")]
    Corrupt {
        /// The file that holds the bad bytes.
        path: PathBuf,
        /// Byte position in that file where the bad data starts.
        position: u64,
        /// What was wrong with it.
        kind: CorruptKind,
    },

    /// The requested offset is not stored in the partition.
    ///
    /// Reading exactly at `end` is not an error: it returns no records.
    #[error("offset {requested} is out of range [{start}, {end}]")]
    OffsetOutOfRange {
        /// The offset that was asked for.
        requested: u64,
        /// The first offset still stored (the log start offset).
        start: u64,
        /// The next offset to be assigned (the log end offset).
        end: u64,
    },

    /// A record or batch is larger than `Config::max_batch_bytes`.
    #[error("batch of {size} bytes exceeds the maximum of {max} bytes")]
    RecordTooLarge {
        /// The encoded size in bytes.
        size: u64,
        /// The configured maximum in bytes.
        max: u64,
    },

    /// An append was given no records.
    #[error("an append needs at least one record")]
    EmptyBatch,

    /// A record without a key was appended to a compacted log
    /// ([`Cleanup::Compact`](crate::Cleanup::Compact)), which keeps the
    /// latest record of each key and so needs every record to have one.
    /// Nothing of the batch was appended.
    #[error("partition {partition} is compacted: every record needs a key")]
    MissingKey {
        /// The partition that refused the batch.
        partition: u32,
    },

    /// Another `Log` (in this process or another one), or an inspection,
    /// holds the directory.
    #[error("the log directory is locked by another open Log")]
    Locked,

    /// A configuration value is invalid.
    #[error("invalid config `{field}`: {reason}")]
    InvalidConfig {
        /// The name of the `Config` field.
        field: &'static str,
        /// Why it was refused.
        reason: String,
    },

    /// The partition number does not exist in this log.
    #[error("partition {partition} does not exist (the log has {partitions})")]
    UnknownPartition {
        /// The partition that was asked for.
        partition: u32,
        /// How many partitions the log has.
        partitions: u32,
    },

    /// The directory exists but is not a durable-log directory, or was
    /// written by a newer, unsupported format version.
    #[error("{path} is not a readable durable-log directory: {reason}")]
    NotALog {
        /// The directory or file that was refused.
        path: PathBuf,
        /// What was found.
        reason: String,
    },

    /// A write or fsync failed earlier; the partition refuses writes until
    /// the log is reopened and recovered.
    ///
    /// An fsync that failed may have dropped dirty pages, so retrying it
    /// could report success for data that is gone. The only safe way on is to
    /// reopen, which validates what reached the disk.
    #[error("partition {partition} is poisoned by an earlier I/O failure; reopen the log")]
    Poisoned {
        /// The partition that failed.
        partition: u32,
    },

    /// An idempotent producer's batch does not follow its previous one: a
    /// sequence number was skipped or reused out of order.
    #[error("producer {producer_id}: sequence {found} is out of order (expected {expected})")]
    OutOfOrderSequence {
        /// The producer.
        producer_id: i64,
        /// The sequence the partition expected.
        expected: i32,
        /// The sequence the batch carried.
        found: i32,
    },

    /// A producer with the same id and a newer epoch has written to the
    /// partition; this one is a zombie and may not write.
    #[error("producer {producer_id} with epoch {epoch} is fenced by epoch {current_epoch}")]
    ProducerFenced {
        /// The producer.
        producer_id: i64,
        /// The epoch the batch carried.
        epoch: i16,
        /// The newest epoch the partition has seen.
        current_epoch: i16,
    },

    /// A producer's buffer stayed full for longer than it may block.
    #[error("the producer's buffer of {limit} bytes stayed full")]
    BufferFull {
        /// The configured buffer size in bytes.
        limit: u64,
    },

    /// A consumer needs a position in a partition for which its group has no
    /// committed offset, and its reset policy is `AutoOffsetReset::None`
    /// (in the `offsets` module).
    #[error("group `{group}` has no committed offset for partition {partition}")]
    NoCommittedOffset {
        /// The consumer group.
        group: String,
        /// The partition.
        partition: u32,
    },

    /// A consumer was asked about a partition it is not assigned.
    #[error("partition {partition} is not assigned to this consumer")]
    NotAssigned {
        /// The partition that was asked for.
        partition: u32,
    },

    /// The metadata string of a committed offset is longer than the offset
    /// store keeps.
    #[error("offset metadata of {size} bytes exceeds the maximum of {max} bytes")]
    OffsetMetadataTooLarge {
        /// The metadata's length in bytes.
        size: u64,
        /// The most bytes allowed.
        max: u64,
    },

    /// The member id is not a member of the group: it was never given, the
    /// member left, its session expired, or it missed a rebalance.
    ///
    /// The member must join again without a member id. Its partitions may
    /// already be processed by other members, and its commits are refused.
    #[error("{member_id} is not a member of group {group}")]
    UnknownMember {
        /// The group.
        group: String,
        /// The member id that was given.
        member_id: String,
    },

    /// The generation given is not the group's current one: a rebalance
    /// completed that the member has not taken part in or not synced.
    ///
    /// A commit carrying it is refused, so that a zombie member cannot
    /// overwrite the progress of a partition's new owner.
    #[error(
        "generation {generation} of member {member_id} is not the current generation {current} of group {group}"
    )]
    IllegalGeneration {
        /// The group.
        group: String,
        /// The member.
        member_id: String,
        /// The generation the request carried.
        generation: u32,
        /// The group's current generation.
        current: u32,
    },

    /// The group is rebalancing and the member must (re)join or fetch its new
    /// assignment before the request can succeed.
    #[error("group {group} is rebalancing")]
    RebalanceInProgress {
        /// The group.
        group: String,
    },

    /// A newer incarnation of this static member joined with the same
    /// `group_instance_id` and took its place; this one must stop, not rejoin.
    #[error("static member {group_instance_id} of group {group} was replaced by a newer instance")]
    FencedInstanceId {
        /// The group.
        group: String,
        /// The instance id the two incarnations share.
        group_instance_id: String,
    },

    /// The member asked for an assignor other than the one its group uses.
    #[error("group {group} uses the {current} assignor, not {requested}")]
    InconsistentGroupProtocol {
        /// The group.
        group: String,
        /// The assignor of the group.
        current: &'static str,
        /// The assignor the member asked for.
        requested: &'static str,
    },

    /// The group already has as many members as it may have.
    #[error("group {group} already has its maximum of {max} members")]
    GroupMaxSizeReached {
        /// The group.
        group: String,
        /// The configured maximum (`GroupConfig::max_group_size`).
        max: usize,
    },

    /// The replica asked to take a write or serve a fetch does not lead the
    /// partition (see the `replication` module). `leader` is the replica
    /// that does, as far as this one knows; send the request there.
    #[error(
        "replica {replica} does not lead partition {partition} (leader: {leader:?}, epoch {leader_epoch})"
    )]
    NotLeader {
        /// The partition.
        partition: u32,
        /// The replica that was asked.
        replica: u32,
        /// The leader as this replica knows it, if any.
        leader: Option<u32>,
        /// The leader epoch this replica knows.
        leader_epoch: i32,
    },

    /// An `Acks::All` write was refused before anything was written: fewer
    /// replicas are in sync than `min_insync_replicas` requires.
    #[error("partition {partition} has {in_sync} in-sync replicas, {required} required")]
    NotEnoughReplicas {
        /// The partition.
        partition: u32,
        /// Replicas in sync now.
        in_sync: usize,
        /// `min_insync_replicas`.
        required: usize,
    },

    /// An `Acks::All` write was written by the leader but not replicated to
    /// the in-sync replicas in time. It may still be committed later: retry
    /// through an idempotent producer, which never appends it twice.
    #[error(
        "offset {offset} of partition {partition} was not replicated in time (high watermark {high_watermark})"
    )]
    ReplicationTimeout {
        /// The partition.
        partition: u32,
        /// The last offset of the write.
        offset: u64,
        /// The high watermark when the wait ended.
        high_watermark: u64,
    },

    /// A request carried a leader epoch that does not match this replica's:
    /// one of the two has not yet heard of the latest leadership change.
    #[error(
        "partition {partition}: request for leader epoch {requested}, this replica is at {current}"
    )]
    LeaderEpochMismatch {
        /// The partition.
        partition: u32,
        /// The epoch the request carried.
        requested: i32,
        /// The epoch this replica knows.
        current: i32,
    },

    /// A controller refused a change: it was based on an outdated state, came
    /// from a replica that is not the leader, or names unknown or offline
    /// replicas.
    #[error("partition {partition}: the controller refused the change: {reason}")]
    ControllerRefused {
        /// The partition.
        partition: u32,
        /// Why.
        reason: String,
    },

    /// The log (or the producer) was closed.
    #[error("the log is closed")]
    Closed,
}

/// What was wrong with bytes read from disk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CorruptKind {
    /// The stored checksum does not match the bytes.
    #[error("checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum {
        /// Checksum in the header.
        stored: u32,
        /// Checksum of the bytes as read.
        computed: u32,
    },
    /// A length field points outside the file or below the header size.
    #[error("length {length} is out of bounds")]
    Length {
        /// The length that was read.
        length: u64,
    },
    /// The format version byte is unknown.
    #[error("unknown format version {0}")]
    Version(u8),
    /// A batch's offsets do not follow the previous batch's.
    #[error("offset {found} does not follow {expected_at_least}")]
    OffsetOrder {
        /// The smallest offset that would have been valid.
        expected_at_least: u64,
        /// The offset found.
        found: u64,
    },
    /// The records inside a batch do not decode.
    #[error("malformed record: {0}")]
    Record(&'static str),
    /// An index entry is inconsistent with the log or with its neighbours.
    #[error("bad index entry {entry}")]
    Index {
        /// Number of the entry in the index file.
        entry: u64,
    },
    /// A metadata or checkpoint file is malformed.
    #[error("malformed metadata: {0}")]
    Metadata(&'static str),
    /// The bytes end before the structure they hold does.
    #[error("truncated: {needed} bytes needed, {available} available")]
    Truncated {
        /// Bytes required.
        needed: u64,
        /// Bytes present.
        available: u64,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io(path.into(), Arc::new(source))
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, position: u64, kind: CorruptKind) -> Error {
        Error::Corrupt {
            path: path.into(),
            position,
            kind,
        }
    }

    pub(crate) fn config(field: &'static str, reason: impl Into<String>) -> Error {
        Error::InvalidConfig {
            field,
            reason: reason.into(),
        }
    }

    /// True when the error says bytes on disk are damaged.
    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::Corrupt { .. })
    }
}
