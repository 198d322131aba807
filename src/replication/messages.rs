//! The requests and responses replicas, producers and the controller
//! exchange. They are plain data: the host carries them over its own RPC.
//!
//! None of them is `#[non_exhaustive]`: the receiving end of that RPC has
//! to build them again from their fields. A field added to a message is a
//! breaking change anyway, since every host must then carry it.

use std::time::Duration;

use bytes::Bytes;

use crate::record::Record;

/// Identifies a replica (in Kafka's terms, a broker). Each replica of a
/// partition lives in its own [`Log`](crate::Log) directory, usually on its
/// own machine.
pub type ReplicaId = u32;

/// The epoch of a partition's leadership that a controller assigned; every
/// new leader gets a higher one.
pub type LeaderEpoch = i32;

/// When a replicated write is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Acks {
    /// As soon as the leader has written the batch (no fsync awaited). Lost
    /// if the leader fails before it is synced or copied.
    None,
    /// Once the leader's own durability level is met (for
    /// [`Durability::Sync`](crate::Durability::Sync): fsynced on the leader).
    /// Lost if the leader's disk is lost, or if the leader fails before a
    /// follower copied it and another replica is elected.
    Leader,
    /// Once the high watermark has passed the batch: it is durable on every
    /// in-sync replica, at least `min_insync_replicas` of them, and survives
    /// the loss of all but one of them.
    #[default]
    All,
}

/// A partition's leadership and in-sync replicas, as a controller decided
/// them. Replicas act on the state with the highest
/// `(leader_epoch, partition_epoch)` they have been given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    /// The partition.
    pub partition: u32,
    /// Every replica assigned to the partition, in order of preference.
    pub replicas: Vec<ReplicaId>,
    /// The leader, or `None` while no eligible replica is available.
    pub leader: Option<ReplicaId>,
    /// Bumped at every leader change.
    pub leader_epoch: LeaderEpoch,
    /// The in-sync replicas: they hold every committed record.
    pub isr: Vec<ReplicaId>,
    /// Eligible leader replicas (Kafka's KIP-966): replicas removed from the
    /// ISR while it was smaller than `min_insync_replicas`. The high
    /// watermark has not moved since, so they too hold every committed
    /// record and may be elected when no ISR member is available.
    pub elr: Vec<ReplicaId>,
    /// Bumped at every change of this state, leader or ISR.
    pub partition_epoch: i32,
}

impl PartitionState {
    /// A new partition's first state: the first replica leads epoch 0 and
    /// all are in sync.
    pub fn initial(partition: u32, replicas: &[ReplicaId]) -> PartitionState {
        PartitionState {
            partition,
            replicas: replicas.to_vec(),
            leader: replicas.first().copied(),
            leader_epoch: 0,
            isr: replicas.to_vec(),
            elr: Vec::new(),
            partition_epoch: 0,
        }
    }

    /// True if this state was decided after `other`.
    pub fn is_newer_than(&self, other: &PartitionState) -> bool {
        (self.leader_epoch, self.partition_epoch) > (other.leader_epoch, other.partition_epoch)
    }
}

/// A follower's request for the records after its log end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    /// The follower asking.
    pub replica: ReplicaId,
    /// The partition.
    pub partition: u32,
    /// The leader epoch the follower knows; the leader refuses a fetch from
    /// another epoch.
    pub leader_epoch: LeaderEpoch,
    /// The follower's log end: the first offset it wants.
    pub fetch_offset: u64,
    /// The epoch of the follower's last record, so the leader can tell
    /// whether the two logs diverge; `None` for an empty log.
    pub last_fetched_epoch: Option<LeaderEpoch>,
    /// Every offset below this is synced on the follower. The leader counts
    /// the follower toward the high watermark only up to here, so an
    /// acknowledged `Acks::All` record is on the disks of the in-sync
    /// replicas, not only in their page caches.
    pub durable_offset: u64,
    /// The most bytes of batches to return (at least one batch is returned).
    pub max_bytes: usize,
}

/// The leader's answer to a [`Fetch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchResponse {
    /// The partition.
    pub partition: u32,
    /// The leader that answered.
    pub leader: ReplicaId,
    /// The leader's epoch.
    pub leader_epoch: LeaderEpoch,
    /// The `fetch_offset` of the request answered, so a follower can drop
    /// answers to requests it no longer has outstanding.
    pub fetch_offset: u64,
    /// The leader's high watermark.
    pub high_watermark: u64,
    /// The leader's log start offset.
    pub log_start_offset: u64,
    /// What the follower is to do.
    pub outcome: FetchOutcome,
}

/// The body of a [`FetchResponse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchOutcome {
    /// Whole batches, as stored, from the one holding `fetch_offset`: the
    /// follower appends them keeping their offsets. Empty when the follower
    /// is caught up.
    Batches(Vec<Bytes>),
    /// The follower's log diverges from the leader's: the leader's log holds
    /// `epoch` (the largest epoch at or below the follower's last one) only
    /// up to `end_offset`. The follower truncates to the smaller of that and
    /// its own end of that epoch, then fetches again (Kafka's KIP-101 and
    /// KIP-279; the follower never truncates to a remembered high watermark).
    Diverging {
        /// The largest epoch of the leader at or below the follower's last
        /// epoch; -1 when the leader has none.
        epoch: LeaderEpoch,
        /// Where that epoch ends in the leader's log.
        end_offset: u64,
    },
    /// The fetch offset is below the leader's log start: the records were
    /// deleted by retention before this follower copied them. The follower
    /// drops its log and starts again, empty, at the leader's log start.
    OffsetOutOfRange,
}

/// A producer's write to a partition's leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceRequest {
    /// The partition.
    pub partition: u32,
    /// The records, written as one batch.
    pub records: Vec<Record>,
    /// When to acknowledge.
    pub acks: Acks,
    /// How long an `Acks::All` write waits for replication.
    pub timeout: Duration,
    /// Idempotence: the producer's id, epoch and the sequence of the first
    /// record. A retry with the same values is answered with the offsets of
    /// the first write instead of being written again, also by a new leader
    /// after a failover. `None` for a producer without idempotence.
    pub producer: Option<ProducerSequence>,
}

impl ProduceRequest {
    /// A request for `records` with `Acks::All` and a 30 s timeout.
    pub fn new(partition: u32, records: Vec<Record>) -> ProduceRequest {
        ProduceRequest {
            partition,
            records,
            acks: Acks::All,
            timeout: Duration::from_secs(30),
            producer: None,
        }
    }

    /// Sets when to acknowledge.
    pub fn acks(mut self, acks: Acks) -> ProduceRequest {
        self.acks = acks;
        self
    }

    /// Sets how long an `Acks::All` write waits.
    pub fn timeout(mut self, timeout: Duration) -> ProduceRequest {
        self.timeout = timeout;
        self
    }

    /// Makes the write idempotent.
    pub fn idempotent(mut self, producer: ProducerSequence) -> ProduceRequest {
        self.producer = Some(producer);
        self
    }
}

/// An idempotent producer's identity and the sequence number of a batch's
/// first record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerSequence {
    /// The producer id (not negative).
    pub producer_id: i64,
    /// The producer epoch (not negative).
    pub producer_epoch: i16,
    /// The sequence of the first record (not negative); each record takes
    /// the next number.
    pub base_sequence: i32,
}

/// A leader's request to a controller to change the in-sync replicas
/// (Kafka's AlterPartition). It names the state it was based on, and the
/// controller applies it only if that is still the current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterIsr {
    /// The partition.
    pub partition: u32,
    /// The leader asking.
    pub leader: ReplicaId,
    /// The leader's epoch.
    pub leader_epoch: LeaderEpoch,
    /// The partition epoch of the state the change is based on.
    pub partition_epoch: i32,
    /// The in-sync replicas wanted.
    pub isr: Vec<ReplicaId>,
}
