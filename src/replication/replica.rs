//! One replica of one partition, as leader or follower.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::config::Durability;
use crate::error::{CorruptKind, Error, Result};
use crate::partition::Partition;
use crate::record::batch::{BatchHeader, ProducerStamp};
use crate::record::{Appended, StoredRecord};

use super::messages::{
    Acks, AlterIsr, Fetch, FetchOutcome, FetchResponse, LeaderEpoch, PartitionState,
    ProduceRequest, ReplicaId,
};
use super::state::ReplicaState;
use super::{Controller, ReplicationConfig, Transport};

/// One replica of a partition: the state machine of Kafka's replica in its
/// two roles, around a [`Partition`] of a local [`Log`](crate::Log).
///
/// The host tells it who leads with [`Replica::apply`] (states decided by a
/// [`Controller`]) and moves its messages: a follower's
/// [`fetch_request`](Replica::fetch_request) to the leader's
/// [`handle_fetch`](Replica::handle_fetch) and the answer back to
/// [`handle_fetch_response`](Replica::handle_fetch_response); the leader's
/// ISR changes from [`tick`](Replica::tick) to the controller and its answer
/// back to `apply`. [`Replica::fetch_once`] and [`Replica::maintain`] do
/// those rounds over a [`Transport`] and a `Controller` for hosts that call
/// them synchronously.
///
/// Cheap to clone; all methods take `&self` and may be called from any
/// thread.
#[derive(Clone)]
pub struct Replica {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.inner.state.lock();
        f.debug_struct("Replica")
            .field("id", &self.inner.id)
            .field("partition", &self.inner.partition.id())
            .field("leader", &state.leader())
            .field("leader_epoch", &state.leader_epoch())
            .field("high_watermark", &state.high_watermark)
            .field("log_end_offset", &self.inner.partition.end_offset())
            .finish_non_exhaustive()
    }
}

struct Inner {
    id: ReplicaId,
    partition: Partition,
    config: ReplicationConfig,
    state: Mutex<State>,
    /// Woken when the high watermark moves or the role changes.
    changed: Condvar,
}

struct State {
    /// The newest controller state applied.
    current: Option<PartitionState>,
    /// Set while this replica leads `current.leader_epoch`.
    leading: Option<Leading>,
    /// What is on disk: epochs, the highest epoch accepted, the high
    /// watermark when last stored.
    disk: ReplicaState,
    high_watermark: u64,
    /// When the high watermark was last stored.
    stored_at: Option<Instant>,
}

impl State {
    fn leader(&self) -> Option<ReplicaId> {
        self.current.as_ref().and_then(|s| s.leader)
    }

    fn leader_epoch(&self) -> LeaderEpoch {
        self.current.as_ref().map_or(-1, |s| s.leader_epoch)
    }
}

/// What only the leader keeps.
struct Leading {
    /// The log end when this replica became leader: the start of its epoch.
    epoch_start: u64,
    /// An ISR change sent to (or waiting to be sent to) the controller, and
    /// when it was last sent.
    pending: Option<(AlterIsr, Option<Instant>)>,
    followers: HashMap<ReplicaId, Progress>,
}

/// A follower as its leader sees it.
#[derive(Default)]
struct Progress {
    /// The follower's log end at its last fetch.
    fetch_offset: u64,
    /// Synced on the follower (at most `fetch_offset`).
    durable: u64,
    last_fetch: Option<Instant>,
    /// The leader's log end at the follower's last fetch.
    end_at_last_fetch: u64,
    /// When the follower last had everything the leader had; `None` until
    /// the first tick or fetch.
    caught_up: Option<Instant>,
}

impl Replica {
    /// Opens the replica `id` of `partition`, reading its leader epochs and
    /// high watermark from the partition's directory. It starts as a
    /// follower of nobody, until [`Replica::apply`] gives it a state.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for an invalid `config`, a partition with
    /// [`Durability::None`] (a replica counts toward the high watermark only
    /// what it has synced, so it needs `Sync` or `Interval`), or one with
    /// `Cleanup::Compact` (not supported yet);
    /// [`Error::Corrupt`] for a damaged `replica-state` file; [`Error::Io`].
    pub fn open(id: ReplicaId, partition: Partition, config: ReplicationConfig) -> Result<Replica> {
        config.validate()?;
        if partition.durability() == Durability::None {
            return Err(Error::config(
                "durability",
                "a replicated partition needs Durability::Sync or Durability::Interval",
            ));
        }
        if partition.config().cleanup == crate::config::Cleanup::Compact {
            // A compacted leader sends batches with gaps between them, which
            // a follower's append does not take yet.
            return Err(Error::config(
                "cleanup",
                "replicating a compacted partition is not supported",
            ));
        }
        let disk = ReplicaState::load(&partition)?;
        let state = State {
            current: None,
            leading: None,
            high_watermark: disk.high_watermark,
            disk,
            stored_at: None,
        };
        Ok(Replica {
            inner: Arc::new(Inner {
                id,
                partition,
                config,
                state: Mutex::new(state),
                changed: Condvar::new(),
            }),
        })
    }

    /// This replica's id.
    pub fn id(&self) -> ReplicaId {
        self.inner.id
    }

    /// The local partition the replica writes to. Write to it only through
    /// the replica; read it freely (records past the high watermark may
    /// still be truncated).
    pub fn partition(&self) -> &Partition {
        &self.inner.partition
    }

    /// The leader as this replica knows it.
    pub fn leader(&self) -> Option<ReplicaId> {
        self.inner.state.lock().leader()
    }

    /// True while this replica leads the partition.
    pub fn is_leader(&self) -> bool {
        self.inner.state.lock().leading.is_some()
    }

    /// The leader epoch this replica knows (-1 before any state).
    pub fn leader_epoch(&self) -> LeaderEpoch {
        self.inner.state.lock().leader_epoch()
    }

    /// The newest controller state applied.
    pub fn partition_state(&self) -> Option<PartitionState> {
        self.inner.state.lock().current.clone()
    }

    /// Every offset below the high watermark is committed: durable on every
    /// in-sync replica and never truncated. Consumers read below it.
    pub fn high_watermark(&self) -> u64 {
        self.inner.state.lock().high_watermark
    }

    /// The local log's end offset.
    pub fn log_end_offset(&self) -> u64 {
        self.inner.partition.end_offset()
    }

    /// The leader epochs of the local log with the offsets where they start.
    pub fn leader_epochs(&self) -> Vec<(LeaderEpoch, u64)> {
        self.inner.state.lock().disk.epochs.to_vec()
    }

    /// Acts on a state decided by the controller: becomes leader, follower,
    /// or takes note of a new ISR. States not newer than the one applied
    /// (by `(leader_epoch, partition_epoch)`) are ignored, so they may
    /// arrive late, twice or out of order.
    ///
    /// # Errors
    ///
    /// [`Error::LeaderEpochMismatch`] when the state makes this replica the
    /// leader of an epoch it has accepted before but does not lead now (it
    /// restarted): it must not lead that epoch again, since followers may
    /// hold records of it that this replica lost; the controller has to
    /// elect it for a new epoch. [`Error::InvalidConfig`] for a state of
    /// another partition; [`Error::Io`] writing `replica-state`.
    pub fn apply(&self, new: &PartitionState) -> Result<()> {
        let inner = &*self.inner;
        if new.partition != inner.partition.id() {
            return Err(Error::config(
                "partition",
                format!(
                    "a state of partition {} given to a replica of partition {}",
                    new.partition,
                    inner.partition.id()
                ),
            ));
        }
        let mut state = inner.state.lock();
        if state
            .current
            .as_ref()
            .is_some_and(|current| !new.is_newer_than(current))
        {
            return Ok(());
        }
        let leads_now = state.leading.is_some() && state.leader_epoch() == new.leader_epoch;
        if new.leader == Some(inner.id) {
            if leads_now {
                // The same leadership with a new ISR.
                let leading = state.leading.as_mut().expect("checked above");
                if leading
                    .pending
                    .as_ref()
                    .is_some_and(|(request, _)| new.partition_epoch > request.partition_epoch)
                {
                    leading.pending = None;
                }
                state.current = Some(new.clone());
                self.advance_high_watermark(&mut state);
                return Ok(());
            }
            if new.leader_epoch <= state.disk.max_epoch {
                return Err(Error::LeaderEpochMismatch {
                    partition: inner.partition.id(),
                    requested: new.leader_epoch,
                    current: state.disk.max_epoch,
                });
            }
            // The epoch starts at the log end, and is on disk before any
            // record of it is written.
            let start = inner.partition.end_offset();
            let mut disk = state.disk.clone();
            disk.max_epoch = new.leader_epoch;
            disk.epochs.assign(new.leader_epoch, start);
            disk.high_watermark = state.high_watermark;
            disk.store(&inner.partition)?;
            state.disk = disk;
            state.leading = Some(Leading {
                epoch_start: start,
                pending: None,
                followers: new
                    .replicas
                    .iter()
                    .filter(|&&r| r != inner.id)
                    .map(|&r| (r, Progress::default()))
                    .collect(),
            });
        } else {
            state.leading = None;
            state.disk.max_epoch = state.disk.max_epoch.max(new.leader_epoch);
        }
        state.current = Some(new.clone());
        self.advance_high_watermark(&mut state);
        inner.changed.notify_all();
        Ok(())
    }

    /// Answers a follower's fetch (on the leader).
    ///
    /// # Errors
    ///
    /// [`Error::NotLeader`] when this replica does not lead;
    /// [`Error::LeaderEpochMismatch`] when the follower knows another epoch
    /// (it must get the current state from the controller first);
    /// [`Error::Corrupt`] or [`Error::Io`] reading the log.
    pub fn handle_fetch(&self, fetch: &Fetch, now: Instant) -> Result<FetchResponse> {
        let inner = &*self.inner;
        let partition = &inner.partition;
        let (outcome, high_watermark, leader_epoch) = {
            let mut state = inner.state.lock();
            self.check_leader(&state, fetch.partition)?;
            let leader_epoch = state.leader_epoch();
            if fetch.leader_epoch != leader_epoch {
                return Err(Error::LeaderEpochMismatch {
                    partition: partition.id(),
                    requested: fetch.leader_epoch,
                    current: leader_epoch,
                });
            }
            let end = partition.end_offset();
            let outcome = if fetch.fetch_offset < partition.start_offset() {
                Some(FetchOutcome::OffsetOutOfRange)
            } else {
                self.divergence(&state, fetch, end)
            };
            if outcome.is_none() {
                self.track_follower(&mut state, fetch, end, now);
                self.advance_high_watermark(&mut state);
            }
            (outcome, state.high_watermark, leader_epoch)
        };
        let outcome = match outcome {
            Some(outcome) => outcome,
            None if fetch.fetch_offset >= partition.end_offset() => {
                FetchOutcome::Batches(Vec::new())
            }
            None => FetchOutcome::Batches(
                partition.read_batches(fetch.fetch_offset, fetch.max_bytes.max(1))?,
            ),
        };
        Ok(FetchResponse {
            partition: partition.id(),
            leader: inner.id,
            leader_epoch,
            fetch_offset: fetch.fetch_offset,
            high_watermark,
            log_start_offset: partition.start_offset(),
            outcome,
        })
    }

    /// Whether the follower's log diverges from this leader's; `None` when
    /// it does not.
    fn divergence(&self, state: &State, fetch: &Fetch, end: u64) -> Option<FetchOutcome> {
        let epochs = &state.disk.epochs;
        // Records below the first epoch's start carry no epoch to compare,
        // nor does a follower that starts at the log start.
        let first_start = epochs
            .first_start()
            .unwrap_or(end)
            .max(self.inner.partition.start_offset());
        let found = fetch
            .last_fetched_epoch
            .and_then(|epoch| epochs.end_offset_for(epoch, end));
        match (fetch.last_fetched_epoch, found) {
            (Some(epoch), Some((found, epoch_end))) => (found != epoch
                || epoch_end < fetch.fetch_offset)
                .then_some(FetchOutcome::Diverging {
                    epoch: found,
                    end_offset: epoch_end,
                }),
            _ => (fetch.fetch_offset > first_start).then_some(FetchOutcome::Diverging {
                epoch: -1,
                end_offset: first_start,
            }),
        }
    }

    fn track_follower(&self, state: &mut State, fetch: &Fetch, end: u64, now: Instant) {
        let id = self.inner.id;
        let Some(leading) = state.leading.as_mut() else {
            return;
        };
        if fetch.replica == id {
            return;
        }
        let Some(progress) = leading.followers.get_mut(&fetch.replica) else {
            // Not assigned to this partition: served, never counted.
            return;
        };
        progress.fetch_offset = fetch.fetch_offset;
        progress.durable = fetch.durable_offset.min(fetch.fetch_offset);
        if fetch.fetch_offset >= end {
            progress.caught_up = Some(now);
        } else if let Some(last) = progress.last_fetch
            && fetch.fetch_offset >= progress.end_at_last_fetch
        {
            progress.caught_up = Some(progress.caught_up.map_or(last, |t| t.max(last)));
        }
        progress.last_fetch = Some(now);
        progress.end_at_last_fetch = end;
        // A follower outside the ISR joins once it holds, synced, everything
        // committed: the high watermark, and the start of this leader's
        // epoch, since a new leader's high watermark may lag the one its
        // predecessor reached (every record committed then is below the
        // epoch start).
        let current = state.current.as_ref().expect("a leader has a state");
        if leading.pending.is_none()
            && !current.isr.contains(&fetch.replica)
            && progress.durable >= state.high_watermark
            && progress.durable >= leading.epoch_start
        {
            let mut isr = current.isr.clone();
            isr.push(fetch.replica);
            leading.pending = Some((self.alter_isr(current, isr), None));
        }
    }

    fn alter_isr(&self, current: &PartitionState, mut isr: Vec<ReplicaId>) -> AlterIsr {
        // Kept in the order of the assignment, for readable states.
        isr.sort_by_key(|r| current.replicas.iter().position(|x| x == r));
        AlterIsr {
            partition: current.partition,
            leader: self.inner.id,
            leader_epoch: current.leader_epoch,
            partition_epoch: current.partition_epoch,
            isr,
        }
    }

    /// Moves the high watermark (on the leader) to the smallest synced end
    /// among the in-sync replicas, counting those a pending change adds and
    /// those it removes. It never goes back, and stands still while the
    /// committed ISR is smaller than `min_insync_replicas`.
    fn advance_high_watermark(&self, state: &mut State) {
        let inner = &*self.inner;
        let (Some(leading), Some(current)) = (state.leading.as_ref(), state.current.as_ref())
        else {
            return;
        };
        if current.isr.len() < inner.config.min_insync_replicas {
            return;
        }
        let mut members: BTreeSet<ReplicaId> = current.isr.iter().copied().collect();
        if let Some((pending, _)) = &leading.pending {
            members.extend(pending.isr.iter().copied());
        }
        let mut watermark = inner.partition.durable_offset();
        for member in members.iter().filter(|&&r| r != inner.id) {
            let durable = leading.followers.get(member).map_or(0, |p| p.durable);
            watermark = watermark.min(durable);
        }
        if watermark > state.high_watermark {
            state.high_watermark = watermark;
            inner.changed.notify_all();
        }
    }

    fn check_leader(&self, state: &State, partition: u32) -> Result<()> {
        let inner = &*self.inner;
        if partition != inner.partition.id() || state.leading.is_none() {
            return Err(Error::NotLeader {
                partition,
                replica: inner.id,
                leader: state.leader().filter(|&l| l != inner.id),
                leader_epoch: state.leader_epoch(),
            });
        }
        Ok(())
    }

    /// The fetch this follower sends next and the replica to send it to;
    /// `None` while it leads or knows no leader.
    pub fn fetch_request(&self) -> Option<(ReplicaId, Fetch)> {
        let inner = &*self.inner;
        let state = inner.state.lock();
        if state.leading.is_some() {
            return None;
        }
        let current = state.current.as_ref()?;
        let leader = current.leader?;
        let partition = &inner.partition;
        let fetch = Fetch {
            replica: inner.id,
            partition: partition.id(),
            leader_epoch: current.leader_epoch,
            fetch_offset: partition.end_offset(),
            last_fetched_epoch: state.disk.epochs.latest().map(|(epoch, _)| epoch),
            durable_offset: partition.durable_offset(),
            max_bytes: inner.config.fetch_max_bytes,
        };
        Some((leader, fetch))
    }

    /// Applies the leader's answer to a fetch (on a follower): appends its
    /// batches, or truncates where the logs diverge. Answers this follower
    /// no longer waits for (from another leader or epoch, or for another
    /// fetch offset) are ignored; returns whether it was applied.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] for batches that fail their checks or do not
    /// continue the log; [`Error::OffsetOutOfRange`] when the leader says
    /// the fetch offset is out of its range yet its log start is not past
    /// this follower's end; [`Error::Io`]. A follower behind the leader's
    /// log start (the leader deleted the records it lacks) drops its log
    /// and starts again, empty, at the leader's log start.
    pub fn handle_fetch_response(&self, response: FetchResponse) -> Result<bool> {
        let inner = &*self.inner;
        let partition = &inner.partition;
        let mut state = inner.state.lock();
        let expected = state.leading.is_none()
            && state.leader() == Some(response.leader)
            && state.leader_epoch() == response.leader_epoch
            && response.partition == partition.id()
            && response.fetch_offset == partition.end_offset();
        if !expected {
            return Ok(false);
        }
        match response.outcome {
            FetchOutcome::Batches(batches) => {
                self.restart_at_first_batch(&mut state, &batches)?;
                self.append_from_leader(&mut state, &batches, response.leader_epoch)?;
                let end = partition.end_offset();
                // Records the leader deleted go here too (Kafka's log start
                // offset propagation).
                let start = response.log_start_offset.min(end);
                if start > partition.start_offset() {
                    partition.delete_records_before(start)?;
                }
                let watermark = response.high_watermark.min(end);
                if watermark > state.high_watermark {
                    state.high_watermark = watermark;
                    inner.changed.notify_all();
                }
            }
            FetchOutcome::Diverging { epoch, end_offset } => {
                let end = partition.end_offset();
                // Where this log's records of `epoch` or older end: with no
                // such epoch, where its first epoch starts.
                let epochs = &state.disk.epochs;
                let own_end = epochs.end_offset_for(epoch, end).map_or_else(
                    || epochs.first_start().unwrap_or(end).min(end),
                    |(_, own)| own,
                );
                let cut = end_offset.min(own_end);
                partition.truncate_to(cut)?;
                let mut disk = state.disk.clone();
                disk.epochs.truncate_from(cut);
                state.high_watermark = state.high_watermark.min(cut);
                disk.high_watermark = disk.high_watermark.min(cut);
                disk.store(partition)?;
                state.disk = disk;
            }
            FetchOutcome::OffsetOutOfRange => {
                // The leader deleted what this follower lacks: start again,
                // empty, at the leader's log start, which is committed.
                let start = response.log_start_offset;
                if start <= partition.end_offset() {
                    return Err(Error::OffsetOutOfRange {
                        requested: partition.end_offset(),
                        start,
                        end: response.high_watermark,
                    });
                }
                partition.reset_to(start)?;
                let mut disk = state.disk.clone();
                disk.epochs.truncate_from(0);
                disk.high_watermark = start;
                disk.store(partition)?;
                state.disk = disk;
                state.high_watermark = state.high_watermark.max(start);
            }
        }
        Ok(true)
    }

    /// A follower that was restarted empty at the leader's log start may be
    /// sent a batch that begins before it (the log start may fall inside a
    /// batch): it starts at that batch instead.
    fn restart_at_first_batch(&self, state: &mut State, batches: &[bytes::Bytes]) -> Result<()> {
        let partition = &self.inner.partition;
        let end = partition.end_offset();
        let Some(first) = batches.first() else {
            return Ok(());
        };
        let header = BatchHeader::parse(first, u32::MAX)
            .map_err(|kind| Error::corrupt(partition.dir(), 0, kind))?;
        if partition.start_offset() != end
            || header.base_offset >= end
            || header.next_offset() <= end
        {
            return Ok(());
        }
        partition.reset_to(header.base_offset)?;
        let mut disk = state.disk.clone();
        disk.epochs.truncate_from(0);
        disk.high_watermark = disk.high_watermark.min(header.base_offset);
        disk.store(partition)?;
        state.disk = disk;
        Ok(())
    }

    fn append_from_leader(
        &self,
        state: &mut State,
        batches: &[bytes::Bytes],
        leader_epoch: LeaderEpoch,
    ) -> Result<()> {
        let partition = &self.inner.partition;
        if batches.is_empty() {
            return Ok(());
        }
        // New epochs reach the disk before their records do.
        let mut disk = state.disk.clone();
        let mut end = partition.end_offset();
        for batch in batches {
            let header = BatchHeader::parse(batch, u32::MAX)
                .map_err(|kind| Error::corrupt(partition.dir(), 0, kind))?;
            if header.next_offset() <= end {
                continue;
            }
            if header.leader_epoch < 0 {
                // Written before the partition was replicated.
                end = header.next_offset();
                continue;
            }
            if header.leader_epoch > leader_epoch || !disk.epochs.assign(header.leader_epoch, end) {
                return Err(Error::corrupt(
                    partition.dir(),
                    0,
                    CorruptKind::Metadata("a replicated batch's leader epoch is out of order"),
                ));
            }
            disk.max_epoch = disk.max_epoch.max(header.leader_epoch);
            end = header.next_offset();
        }
        if disk.epochs != state.disk.epochs {
            disk.high_watermark = state.high_watermark;
            disk.store(partition)?;
        }
        state.disk = disk;
        let result = partition.append_replicated(batches);
        if result.is_err() && state.disk.epochs.truncate_from(partition.end_offset()) {
            // Epochs whose records did not make it are forgotten, on disk
            // too: a later batch of an older epoch must not land under one.
            state.disk.store(partition)?;
        }
        result.map(|_| ())
    }

    /// Periodic work, to be called every few hundred milliseconds (and
    /// after [`Replica::handle_fetch`] calls, to send ISR additions
    /// promptly): on the leader, removes followers that lagged for longer
    /// than `replica_lag_max` from the ISR, and returns the ISR change to
    /// send to the controller, resending one that was not answered within
    /// `isr_change_retry`. Also stores the high watermark every
    /// `high_watermark_checkpoint_interval`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] storing the high watermark.
    pub fn tick(&self, now: Instant) -> Result<Option<AlterIsr>> {
        let inner = &*self.inner;
        let mut state = inner.state.lock();
        let request = self.leader_tick(&mut state, now);
        let due = state.stored_at.is_none_or(|at| {
            now.saturating_duration_since(at) >= inner.config.high_watermark_checkpoint_interval
        });
        if due && state.disk.high_watermark != state.high_watermark {
            let mut disk = state.disk.clone();
            disk.high_watermark = state.high_watermark.min(inner.partition.end_offset());
            disk.store(&inner.partition)?;
            state.disk = disk;
            state.stored_at = Some(now);
        }
        Ok(request)
    }

    fn leader_tick(&self, state: &mut State, now: Instant) -> Option<AlterIsr> {
        let inner = &*self.inner;
        self.advance_high_watermark(state);
        let current = state.current.clone()?;
        let leading = state.leading.as_mut()?;
        for progress in leading.followers.values_mut() {
            progress.caught_up.get_or_insert(now);
        }
        if let Some((request, sent)) = &mut leading.pending {
            let due = sent.is_none_or(|at| {
                now.saturating_duration_since(at) >= inner.config.isr_change_retry
            });
            if !due {
                return None;
            }
            *sent = Some(now);
            return Some(request.clone());
        }
        let lag_max = inner.config.replica_lag_max;
        let lagging = |r: &ReplicaId| {
            *r != inner.id
                && leading
                    .followers
                    .get(r)
                    .and_then(|p| p.caught_up)
                    .is_some_and(|t| now.saturating_duration_since(t) > lag_max)
        };
        if !current.isr.iter().any(lagging) {
            return None;
        }
        let isr: Vec<ReplicaId> = current
            .isr
            .iter()
            .copied()
            .filter(|r| !lagging(r))
            .collect();
        let request = self.alter_isr(&current, isr);
        let leading = state.leading.as_mut().expect("checked above");
        leading.pending = Some((request.clone(), Some(now)));
        Some(request)
    }

    /// Writes a producer's batch on the leader and returns where it landed,
    /// without waiting for any acknowledgement level; see
    /// [`Replica::produce`] for the waiting.
    ///
    /// # Errors
    ///
    /// [`Error::NotLeader`] (with the leader this replica knows, to retry
    /// there); [`Error::NotEnoughReplicas`] for `Acks::All` while the ISR
    /// is smaller than `min_insync_replicas` (nothing is written); the
    /// errors of [`Partition::append_idempotent`].
    pub fn write(&self, request: &ProduceRequest) -> Result<(Appended, LeaderEpoch)> {
        let inner = &*self.inner;
        let state = inner.state.lock();
        self.check_leader(&state, request.partition)?;
        let current = state.current.as_ref().expect("a leader has a state");
        let required = inner.config.min_insync_replicas;
        if request.acks == Acks::All && current.isr.len() < required {
            return Err(Error::NotEnoughReplicas {
                partition: request.partition,
                in_sync: current.isr.len(),
                required,
            });
        }
        let stamp = request.producer.map(|p| ProducerStamp {
            producer_id: p.producer_id,
            producer_epoch: p.producer_epoch,
            base_sequence: p.base_sequence,
        });
        let epoch = current.leader_epoch;
        let appended = inner
            .partition
            .write_stamped(&request.records, stamp, epoch)?;
        Ok((appended, epoch))
    }

    /// Writes a producer's batch on the leader and waits for its `acks`:
    /// nothing more for `Acks::None`, the leader's durability for
    /// `Acks::Leader`, the high watermark passing the batch for `Acks::All`.
    /// A retry of an idempotent producer's batch is answered with the
    /// offsets it got the first time, on this leader or on one elected
    /// since.
    ///
    /// # Errors
    ///
    /// As [`Replica::write`], and [`Error::ReplicationTimeout`] when the
    /// high watermark does not pass the batch within `request.timeout`, or
    /// [`Error::NotLeader`] when this replica stops leading meanwhile: in
    /// both cases the batch may or may not end up committed, and an
    /// idempotent retry settles it without duplicating it.
    pub fn produce(&self, request: &ProduceRequest) -> Result<Appended> {
        let (appended, epoch) = self.write(request)?;
        let next = appended.last_offset + 1;
        match request.acks {
            Acks::None => Ok(appended),
            Acks::Leader => {
                self.inner.partition.sync_for_durability(next)?;
                Ok(appended)
            }
            Acks::All => {
                self.inner.partition.sync_for_durability(next)?;
                self.wait_committed(next, epoch, request.timeout)?;
                Ok(appended)
            }
        }
    }

    /// Waits until the high watermark reaches `offset` while this replica
    /// leads `epoch`.
    fn wait_committed(&self, offset: u64, epoch: LeaderEpoch, timeout: Duration) -> Result<()> {
        let inner = &*self.inner;
        let deadline = Instant::now().checked_add(timeout);
        let mut state = inner.state.lock();
        loop {
            self.advance_high_watermark(&mut state);
            if state.leading.is_none() || state.leader_epoch() != epoch {
                return Err(Error::NotLeader {
                    partition: inner.partition.id(),
                    replica: inner.id,
                    leader: state.leader().filter(|&l| l != inner.id),
                    leader_epoch: state.leader_epoch(),
                });
            }
            if state.high_watermark >= offset {
                return Ok(());
            }
            let timed_out = match deadline {
                // Woken by fetches and role changes; the leader's own fsync
                // is looked at again at least this often.
                Some(deadline) => {
                    let wake = deadline.min(Instant::now() + Duration::from_millis(20));
                    inner.changed.wait_until(&mut state, wake);
                    Instant::now() >= deadline
                }
                None => {
                    inner
                        .changed
                        .wait_for(&mut state, Duration::from_millis(20));
                    false
                }
            };
            if timed_out && state.high_watermark < offset {
                return Err(Error::ReplicationTimeout {
                    partition: inner.partition.id(),
                    offset: offset - 1,
                    high_watermark: state.high_watermark,
                });
            }
        }
    }

    /// Reads committed records from `offset` on: as
    /// [`Partition::read`], but only records below the high watermark. Any
    /// replica answers, each with its own high watermark (a follower's may
    /// lag the leader's).
    ///
    /// # Errors
    ///
    /// As [`Partition::read`].
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<Vec<StoredRecord>> {
        let watermark = self.high_watermark();
        let partition = &self.inner.partition;
        if offset >= watermark && offset <= partition.end_offset() {
            return Ok(Vec::new());
        }
        let mut records = partition.read(offset, max_bytes)?;
        records.retain(|r| r.offset < watermark);
        Ok(records)
    }

    /// One fetch round of a follower over `transport`: sends
    /// [`Replica::fetch_request`] to the leader and applies the answer.
    /// Returns whether a fetch was made. For hosts that drive replicas
    /// with a thread per follower.
    ///
    /// # Errors
    ///
    /// The transport's errors (for example [`Error::NotLeader`] or
    /// [`Error::LeaderEpochMismatch`]: get the state from the controller
    /// and [`apply`](Replica::apply) it), and those of
    /// [`Replica::handle_fetch_response`].
    pub fn fetch_once(&self, transport: &dyn Transport) -> Result<bool> {
        let Some((leader, fetch)) = self.fetch_request() else {
            return Ok(false);
        };
        let response = transport.fetch(leader, fetch)?;
        self.handle_fetch_response(response)?;
        Ok(true)
    }

    /// [`Replica::tick`], with the ISR change sent to `controller` and its
    /// answer applied; when the controller refuses it (it was based on an
    /// outdated state), the current state is fetched and applied instead.
    ///
    /// # Errors
    ///
    /// The controller's errors other than a refusal, and those of
    /// [`Replica::tick`] and [`Replica::apply`].
    pub fn maintain(&self, controller: &dyn Controller, now: Instant) -> Result<()> {
        let Some(request) = self.tick(now)? else {
            return Ok(());
        };
        match controller.alter_isr(&request) {
            Ok(state) => self.apply(&state),
            Err(Error::ControllerRefused { .. }) => {
                let state = controller.state(request.partition)?;
                self.apply(&state)
            }
            Err(e) => Err(e),
        }
    }
}
