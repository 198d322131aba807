//! A producer for a replicated partition that finds the leader and retries.

use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::record::{Appended, Record};

use super::Transport;
use super::messages::{Acks, ProduceRequest, ProducerSequence, ReplicaId};

/// An idempotent producer for one replicated partition, over a
/// [`Transport`]. It sends each batch to the replica it believes leads,
/// follows [`Error::NotLeader`] hints, and retries on timeouts and
/// unavailability with the same producer sequence, so a batch is never
/// written twice however many times it is sent. One batch is in flight at
/// a time.
///
/// When a send gives up (its `delivery_timeout` passed), the batch may
/// still be committed later; the producer then moves to a new producer
/// epoch so that its next batch cannot be mistaken for a retry of that
/// one.
#[derive(Debug)]
pub struct ReplicatedProducer<T> {
    transport: T,
    partition: u32,
    replicas: Vec<ReplicaId>,
    leader: Option<ReplicaId>,
    producer_id: i64,
    producer_epoch: i16,
    next_sequence: i32,
    acks: Acks,
    request_timeout: Duration,
    delivery_timeout: Duration,
    retry_backoff: Duration,
    retries: u64,
}

impl<T: Transport> ReplicatedProducer<T> {
    /// A producer writing to `partition`, replicated on `replicas`, with
    /// `producer_id` (unique among producers, for example from
    /// [`InMemoryController::allocate_producer_id`](super::InMemoryController::allocate_producer_id)).
    /// Defaults: `Acks::All`, 5 s per request, 60 s per batch, 50 ms
    /// between retries.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a negative producer id or no replicas.
    pub fn new(
        transport: T,
        partition: u32,
        replicas: &[ReplicaId],
        producer_id: i64,
    ) -> Result<ReplicatedProducer<T>> {
        if producer_id < 0 {
            return Err(Error::config("producer_id", "must not be negative"));
        }
        if replicas.is_empty() {
            return Err(Error::config("replicas", "needs at least one replica"));
        }
        Ok(ReplicatedProducer {
            transport,
            partition,
            replicas: replicas.to_vec(),
            leader: None,
            producer_id,
            producer_epoch: 0,
            next_sequence: 0,
            acks: Acks::All,
            request_timeout: Duration::from_secs(5),
            delivery_timeout: Duration::from_secs(60),
            retry_backoff: Duration::from_millis(50),
            retries: 0,
        })
    }

    /// Sets when a write counts as done.
    pub fn acks(mut self, acks: Acks) -> Self {
        self.acks = acks;
        self
    }

    /// Sets how long one attempt waits for replication.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets how long a batch is retried before the send gives up.
    pub fn delivery_timeout(mut self, timeout: Duration) -> Self {
        self.delivery_timeout = timeout;
        self
    }

    /// Sets the pause between retries.
    pub fn retry_backoff(mut self, backoff: Duration) -> Self {
        self.retry_backoff = backoff;
        self
    }

    /// The transport.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// The replica this producer believes leads.
    pub fn leader(&self) -> Option<ReplicaId> {
        self.leader
    }

    /// How many attempts were retries, since the producer was made.
    pub fn retries(&self) -> u64 {
        self.retries
    }

    /// Writes `records` as one batch and returns where it is, retrying
    /// until it is acknowledged or `delivery_timeout` passes.
    ///
    /// # Errors
    ///
    /// The last retriable error when the delivery timeout passes
    /// ([`Error::NotLeader`], [`Error::NotEnoughReplicas`],
    /// [`Error::ReplicationTimeout`], [`Error::LeaderEpochMismatch`],
    /// [`Error::Io`], and [`Error::OutOfOrderSequence`] from a replica that
    /// expects an earlier sequence: it misses acknowledged batches, so it is
    /// a deposed leader that has not heard of its successor); at once any
    /// other error (a record too large, [`Error::ProducerFenced`], ...).
    pub fn send(&mut self, records: Vec<Record>) -> Result<Appended> {
        let count = i32::try_from(records.len())
            .map_err(|_| Error::config("records", "too many records in one batch"))?;
        let request = ProduceRequest::new(self.partition, records)
            .acks(self.acks)
            .timeout(self.request_timeout)
            .idempotent(ProducerSequence {
                producer_id: self.producer_id,
                producer_epoch: self.producer_epoch,
                base_sequence: self.next_sequence,
            });
        let deadline = Instant::now() + self.delivery_timeout;
        let mut next_guess = 0usize;
        let mut first = true;
        loop {
            if !first {
                self.retries += 1;
            }
            first = false;
            let target = self.leader.unwrap_or_else(|| {
                let r = self.replicas[next_guess % self.replicas.len()];
                next_guess += 1;
                r
            });
            let error = match self.transport.produce(target, request.clone()) {
                Ok(appended) => {
                    self.leader = Some(target);
                    self.next_sequence = self.next_sequence.wrapping_add(count) & i32::MAX;
                    return Ok(appended);
                }
                Err(Error::NotLeader { leader, .. }) => {
                    self.leader = leader.filter(|&l| l != target);
                    if self.leader.is_some() {
                        // A fresh hint: try it at once.
                        if Instant::now() < deadline {
                            continue;
                        }
                    }
                    Error::NotLeader {
                        partition: self.partition,
                        replica: target,
                        leader,
                        leader_epoch: -1,
                    }
                }
                Err(
                    e @ (Error::NotEnoughReplicas { .. }
                    | Error::ReplicationTimeout { .. }
                    | Error::LeaderEpochMismatch { .. }
                    | Error::Io(..)),
                ) => {
                    if matches!(e, Error::Io(..) | Error::LeaderEpochMismatch { .. }) {
                        self.leader = None;
                    }
                    e
                }
                // Every batch before this one was acknowledged, so every
                // current leader holds them: one that expects an earlier
                // sequence lost its leadership without knowing it yet.
                Err(
                    e @ Error::OutOfOrderSequence {
                        expected, found, ..
                    },
                ) if expected < found => {
                    self.leader = None;
                    e
                }
                Err(e) => return Err(e),
            };
            if Instant::now() + self.retry_backoff >= deadline {
                // The batch may still be committed: never reuse its
                // sequence numbers for other records.
                self.producer_epoch = self.producer_epoch.wrapping_add(1) & i16::MAX;
                self.next_sequence = 0;
                return Err(error);
            }
            thread::sleep(self.retry_backoff);
        }
    }
}
