//! Leader/follower replication with in-sync replicas, a high watermark,
//! acknowledgement levels and leader epochs: Kafka's replication protocol
//! as state machines that a host application drives (cargo feature
//! `replication`).
//!
//! The crate opens no sockets and runs no threads here. Each replica of a
//! partition is a [`Replica`] around a [`Partition`](crate::Partition) of a
//! local [`Log`](crate::Log). The host moves plain messages between them:
//!
//! - a follower's [`Fetch`] goes to the leader's
//!   [`Replica::handle_fetch`]; the [`FetchResponse`] comes back to
//!   [`Replica::handle_fetch_response`], which appends the leader's
//!   batches with the leader's offsets, or truncates where the two logs
//!   diverge;
//! - a producer's [`ProduceRequest`] goes to the leader's
//!   [`Replica::produce`], which answers per [`Acks`];
//! - the leader's ISR changes ([`AlterIsr`], from [`Replica::tick`]) go to
//!   the [`Controller`], and every state the controller decides goes to
//!   every replica's [`Replica::apply`].
//!
//! [`Transport`] names the synchronous form of the first two, for hosts
//! with a thread per follower ([`Replica::fetch_once`]) and for
//! [`ReplicatedProducer`]; a host with its own event loop calls the
//! message methods directly. `examples/replicated.rs` runs three processes
//! over TCP.
//!
//! # Guarantees
//!
//! - **Committed means durable on the in-sync replicas.** The high
//!   watermark is the smallest *synced* log end among the in-sync replicas
//!   (followers report their synced offset with each fetch), so a record
//!   below it is on the disks of every ISR member — never fewer than
//!   `min_insync_replicas`, since the high watermark stands still while the
//!   ISR is smaller. A replica therefore needs `Durability::Sync` or
//!   `Durability::Interval`; with `Interval` the high watermark advances
//!   with the interval syncs.
//! - **`Acks::All`** returns once the high watermark passes the batch. It is
//!   refused with [`Error::NotEnoughReplicas`]
//!   before anything is written while the ISR is too small, and times out
//!   with [`Error::ReplicationTimeout`].
//! - **Leader epochs.** Every leadership has an epoch, stamped on each
//!   batch the leader writes and recorded with its start offset in a
//!   persisted epoch cache. A follower truncates only where its log and
//!   the leader's diverge, which the leader computes from the epoch of
//!   the follower's last record (KIP-101, KIP-279) — never to a high
//!   watermark it remembers, which may be stale.
//! - **Elections come from a controller.** Only states from a
//!   [`Controller`] make a replica leader. The controller elects from the
//!   ISR, then from the eligible leader replicas (KIP-966), and never
//!   elsewhere unless unclean election is configured. A restarted replica
//!   never leads an epoch it accepted before its restart.
//! - **No duplicates on retry.** A [`ProduceRequest`] with a producer
//!   sequence is deduplicated by the partition's producer state, which
//!   followers rebuild from the batches they copy; a retry after a
//!   failover is answered with the original offsets when the new leader
//!   has the batch, and written once when it does not.
//! - **Consumers read committed records** ([`Replica::read`] stops at the
//!   high watermark); followers copy past it.
//!
//! # Implementing a controller on a coordination service
//!
//! [`Controller`] asks for what etcd, ZooKeeper or a Raft group provide: a
//! linearizable compare-and-set per partition and a way to tell live
//! replicas. Do not build a consensus protocol for it.
//!
//! - **etcd**: keep each [`PartitionState`] under a key such as
//!   `/log/partitions/<p>`. `alter_isr` is a transaction comparing the
//!   key's stored `partition_epoch` (or its mod revision) and writing the
//!   new state; a failed comparison is a refusal. Each replica holds a
//!   lease with a key under `/log/replicas/<id>`; one controller process,
//!   chosen with etcd's election API, watches those keys and, when a lease
//!   expires, runs the election rules of [`InMemoryController`] in a
//!   transaction. Replicas watch the partition keys and
//!   [`apply`](Replica::apply) every state they see.
//! - **ZooKeeper**: the same with a znode per partition written with
//!   `setData(path, state, expectedVersion)` and an ephemeral znode per live
//!   replica; the controller is whoever holds an ephemeral
//!   `/controller` znode.
//! - **openraft (or any Raft library)**: make `AlterIsr`, "replica online"
//!   and "replica offline" commands of the replicated state machine, whose
//!   apply function is the logic of [`InMemoryController`]; `alter_isr`
//!   proposes a command and returns the state it produced.
//!
//! A state that reaches a replica late or twice is harmless: replicas
//! ignore states not newer than the one they hold.
//!
//! # Example
//!
//! ```
//! use std::time::Instant;
//! use durable_log::{Config, Log, Record};
//! use durable_log::replication::{
//!     ControllerConfig, InMemoryController, ProduceRequest, Acks, Replica, ReplicationConfig,
//! };
//!
//! # fn main() -> durable_log::Result<()> {
//! let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
//! let controller = InMemoryController::new(1, &[0, 1, 2], ControllerConfig::default())?;
//! let mut replicas = Vec::new();
//! for (id, dir) in dirs.iter().enumerate() {
//!     let log = Log::open(dir.path(), Config::default())?;
//!     let replica = Replica::open(id as u32, log.partition(0)?, ReplicationConfig::default())?;
//!     replica.apply(&controller.states()[0])?;
//!     replicas.push((log, replica));
//! }
//! let leader = &replicas[0].1;
//! // Acks::Leader returns once the leader has synced the batch; Acks::All
//! // would wait for the followers, whose fetches this thread makes below.
//! let written = leader.produce(&ProduceRequest::new(0, vec![Record::new("v")]).acks(Acks::Leader))?;
//! // Followers fetch (a host carries these over its network).
//! for _ in 0..2 {
//!     for (_, follower) in &replicas[1..] {
//!         if let Some((_, fetch)) = follower.fetch_request() {
//!             let response = leader.handle_fetch(&fetch, Instant::now())?;
//!             follower.handle_fetch_response(response)?;
//!         }
//!     }
//! }
//! assert!(leader.high_watermark() > written.last_offset);
//! # Ok(())
//! # }
//! ```

mod client;
mod controller;
mod messages;
mod replica;
mod state;

#[cfg(test)]
mod tests;

use std::time::Duration;

use crate::error::{Error, Result};
use crate::record::Appended;

pub use client::ReplicatedProducer;
pub use controller::{Controller, ControllerConfig, InMemoryController};
pub use messages::{
    Acks, AlterIsr, Fetch, FetchOutcome, FetchResponse, LeaderEpoch, PartitionState,
    ProduceRequest, ProducerSequence, ReplicaId,
};
pub use replica::Replica;

/// How a host reaches other replicas, for the synchronous helpers
/// ([`Replica::fetch_once`], [`ReplicatedProducer`]). Errors a remote
/// replica returns are returned as they are (carry
/// [`Error`] across the wire, or map your transport's
/// failures to [`Error::Io`]).
pub trait Transport: Send + Sync {
    /// Sends a fetch to replica `to` and returns its answer.
    ///
    /// # Errors
    ///
    /// The remote [`Replica::handle_fetch`]'s errors, or the transport's.
    fn fetch(&self, to: ReplicaId, request: Fetch) -> Result<FetchResponse>;

    /// Sends a produce request to replica `to` and returns its answer.
    ///
    /// # Errors
    ///
    /// The remote [`Replica::produce`]'s errors, or the transport's.
    fn produce(&self, to: ReplicaId, request: ProduceRequest) -> Result<Appended>;
}

/// Settings of a [`Replica`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplicationConfig {
    /// The smallest ISR with which the high watermark advances and
    /// `Acks::All` writes are taken. Default 2; must match the
    /// controller's.
    pub min_insync_replicas: usize,
    /// A follower that has not caught up with the leader's log end for this
    /// long leaves the ISR (Kafka's `replica.lag.time.max.ms`). Default 30 s.
    pub replica_lag_max: Duration,
    /// The most bytes of batches one fetch returns (at least one batch).
    /// Default 1 MiB.
    pub fetch_max_bytes: usize,
    /// An ISR change the controller has not answered is sent again after
    /// this long. Default 1 s.
    pub isr_change_retry: Duration,
    /// How often the high watermark is stored (it is only a starting point
    /// after a restart; losing it delays reads, never loses records).
    /// Default 5 s.
    pub high_watermark_checkpoint_interval: Duration,
}

impl Default for ReplicationConfig {
    fn default() -> ReplicationConfig {
        ReplicationConfig {
            min_insync_replicas: 2,
            replica_lag_max: Duration::from_secs(30),
            fetch_max_bytes: 1 << 20,
            isr_change_retry: Duration::from_secs(1),
            high_watermark_checkpoint_interval: Duration::from_secs(5),
        }
    }
}

impl ReplicationConfig {
    /// Sets `min_insync_replicas`.
    pub fn min_insync_replicas(mut self, n: usize) -> ReplicationConfig {
        self.min_insync_replicas = n;
        self
    }

    /// Sets `replica_lag_max`.
    pub fn replica_lag_max(mut self, lag: Duration) -> ReplicationConfig {
        self.replica_lag_max = lag;
        self
    }

    /// Sets `fetch_max_bytes`.
    pub fn fetch_max_bytes(mut self, bytes: usize) -> ReplicationConfig {
        self.fetch_max_bytes = bytes;
        self
    }

    /// Sets `isr_change_retry`.
    pub fn isr_change_retry(mut self, retry: Duration) -> ReplicationConfig {
        self.isr_change_retry = retry;
        self
    }

    /// Sets `high_watermark_checkpoint_interval`.
    pub fn high_watermark_checkpoint_interval(mut self, interval: Duration) -> ReplicationConfig {
        self.high_watermark_checkpoint_interval = interval;
        self
    }

    /// Checks every field.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] naming the first bad field.
    pub fn validate(&self) -> Result<()> {
        if self.min_insync_replicas == 0 {
            return Err(Error::config("min_insync_replicas", "must be at least 1"));
        }
        if self.fetch_max_bytes == 0 {
            return Err(Error::config("fetch_max_bytes", "must be at least 1"));
        }
        if self.replica_lag_max.is_zero() {
            return Err(Error::config("replica_lag_max", "must be more than zero"));
        }
        Ok(())
    }
}
