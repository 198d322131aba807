//! A consumer: reads the partitions assigned to it from its group's committed
//! offsets and commits how far it got.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::config::Durability;
use crate::error::{Error, Result};
use crate::log::Log;
use crate::partition::{Partition, Reader};
use crate::record::{Header, StoredRecord};

use super::config::{AutoOffsetReset, ConsumerConfig};
use super::group::{
    GroupCoordinator, HeartbeatRequest, HeartbeatResponse, JoinRequest, JoinStatus, LeaveRequest,
    SyncRequest,
};
use super::store::{OffsetAndMetadata, OffsetStore};

/// With several partitions assigned, a waiting poll sleeps on one partition
/// at a time for at most this long, then looks at all of them again.
const WAIT_SLICE: Duration = Duration::from_millis(10);
/// Longest single wait, so that a deadline far away (or none) never
/// overflows an `Instant`.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// Resets of one partition in one fetch before its out-of-range error is
/// returned (retention can move the start again under a reset).
const MAX_RESETS_PER_FETCH: usize = 3;
/// While a subscribed consumer waits for a rebalance to form, a waiting poll
/// asks the coordinator again this often.
const JOIN_RETRY: Duration = Duration::from_millis(10);
/// The shortest heartbeat interval, however short the session timeout: a
/// waiting poll never spins.
const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(1);

/// A record returned by [`Consumer::poll`], with the partition it came
/// from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerRecord {
    /// The partition that holds the record.
    pub partition: u32,
    /// The record's offset in its partition.
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

impl ConsumerRecord {
    fn new(partition: u32, record: StoredRecord) -> ConsumerRecord {
        ConsumerRecord {
            partition,
            offset: record.offset,
            timestamp: record.timestamp,
            key: record.key,
            value: record.value,
            headers: record.headers,
        }
    }
}

/// Where an assigned partition's next fetch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    /// Not decided yet: the committed offset, else the reset policy.
    Committed,
    /// The start offset, looked up at the next fetch.
    Beginning,
    /// The end, looked up at the next fetch.
    End,
    /// This offset.
    At(u64),
}

#[derive(Debug)]
struct Assigned {
    id: u32,
    partition: Partition,
    position: Position,
    /// Reads on from `position`; dropped whenever the position is set.
    reader: Option<Reader>,
    /// A record read at or past the fetch limit, returned once it is below.
    peeked: Option<StoredRecord>,
}

impl Assigned {
    fn set_position(&mut self, position: Position) {
        self.position = position;
        self.reader = None;
        self.peeked = None;
    }
}

/// A subscribed consumer's place in its group.
#[derive(Debug)]
struct Membership {
    coordinator: GroupCoordinator,
    /// The id the coordinator gave this member; `None` before the first
    /// join and after the coordinator forgot the member.
    member_id: Option<String>,
    /// The generation of the assignment held; 0 before the first one.
    generation: u32,
    /// A rebalance (or the first join) is under way: `join` until the
    /// generation forms, then `sync`.
    joining: bool,
    /// An assignment `sync` returned that is not applied yet (committing the
    /// partitions it takes away failed). Applied before any other request,
    /// so that revoked partitions are never held into the next `join`.
    pending: Option<Vec<u32>>,
    /// Set once a newer incarnation of this static member replaced it; every
    /// later poll and commit returns it.
    fenced: Option<Error>,
    heartbeat_interval: Duration,
    /// When a waiting poll next talks to the coordinator; `None` if that
    /// does not fit in an `Instant`.
    next_request: Option<Instant>,
}

impl Membership {
    fn schedule(&mut self, after: Duration) {
        self.next_request = Instant::now().checked_add(after);
    }

    fn is_due(&self, now: Instant) -> bool {
        self.next_request.is_some_and(|due| now >= due)
    }

    /// Commits `offsets` to `store` if the coordinator lets this member
    /// commit, with no rebalance completing between its check and the write.
    fn commit(
        &self,
        store: &OffsetStore,
        group: &str,
        offsets: &[(u32, OffsetAndMetadata)],
    ) -> Result<()> {
        if let Some(error) = &self.fenced {
            return Err(error.clone());
        }
        match &self.member_id {
            Some(member_id) if self.generation > 0 => {
                self.coordinator
                    .commit(store, group, member_id, self.generation, offsets)
            }
            _ => Err(Error::RebalanceInProgress {
                group: group.to_owned(),
            }),
        }
    }

    /// Leaves the group. A member the coordinator no longer knows (or that
    /// was fenced) is out of the group already.
    fn leave(&self, group: &str) {
        if self.fenced.is_some() {
            return;
        }
        if let Some(member_id) = &self.member_id {
            let request = LeaveRequest {
                group: group.to_owned(),
                member_id: member_id.clone(),
            };
            // The only refusals mean the member is no longer in the group.
            if let Err(Error::UnknownMember { .. } | Error::FencedInstanceId { .. }) =
                self.coordinator.leave(&request)
            {}
        }
    }
}

/// Reads records from the partitions assigned to it, starting at its
/// group's committed offsets, and commits its positions to the log's
/// [`OffsetStore`].
///
/// See the [module documentation](super) for the delivery guarantees of
/// manual and automatic commits.
///
/// ```
/// use std::time::Duration;
/// use durable_log::{Config, Log, Record};
/// use durable_log::offsets::{AutoOffsetReset, Consumer, ConsumerConfig};
///
/// # fn main() -> durable_log::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let log = Log::open(dir.path(), Config::default())?;
/// log.partition(0)?.append(&[Record::new("a"), Record::new("b")])?;
///
/// let mut consumer = Consumer::new(&log, ConsumerConfig::new("billing")
///     .auto_commit(false)
///     .auto_offset_reset(AutoOffsetReset::Earliest))?;
/// consumer.assign(&[0])?;
/// let records = consumer.poll(Duration::from_secs(1))?;
/// assert_eq!(records.len(), 2);
/// // ... process them, then:
/// consumer.commit_sync()?;
/// assert_eq!(consumer.committed(0)?, Some(2));
/// consumer.close()?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Consumer {
    config: ConsumerConfig,
    store: OffsetStore,
    /// Every partition of the log, by number.
    partitions: Vec<Partition>,
    /// The log syncs every append: read only what is synced.
    durable_reads: bool,
    assigned: Vec<Assigned>,
    /// Where the next fetch starts, in `assigned`.
    next_fetch: usize,
    /// The partition the next wait sleeps on, in `assigned`.
    next_wait: usize,
    next_auto_commit: Option<Instant>,
    /// An error met after a poll had records to return; the next poll
    /// returns it.
    deferred: Option<Error>,
    /// Set while the consumer is subscribed to a group.
    group: Option<Membership>,
}

impl Consumer {
    /// A consumer of `log` in the group `config.group_id`, with no
    /// partitions assigned. It uses the log's [`OffsetStore`], opening it
    /// if no other consumer in this process has.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] naming the first invalid field, and the
    /// errors of [`OffsetStore::open`].
    pub fn new(log: &Log, config: ConsumerConfig) -> Result<Consumer> {
        config.validate()?;
        let store = OffsetStore::open(log)?;
        Consumer::with_store(log, store, config)
    }

    /// A consumer that keeps its offsets in `store`.
    pub(crate) fn with_store(
        log: &Log,
        store: OffsetStore,
        config: ConsumerConfig,
    ) -> Result<Consumer> {
        config.validate()?;
        let partitions = (0..log.partition_count())
            .map(|id| log.partition(id))
            .collect::<Result<Vec<_>>>()?;
        let next_auto_commit = Instant::now().checked_add(config.auto_commit_interval);
        Ok(Consumer {
            durable_reads: log.config().durability == Durability::Sync,
            config,
            store,
            partitions,
            assigned: Vec::new(),
            next_fetch: 0,
            next_wait: 0,
            next_auto_commit,
            deferred: None,
            group: None,
        })
    }

    /// The consumer group.
    pub fn group_id(&self) -> &str {
        &self.config.group_id
    }

    /// The consumer's settings.
    pub fn config(&self) -> &ConsumerConfig {
        &self.config
    }

    /// The offset store the consumer commits to.
    pub fn store(&self) -> &OffsetStore {
        &self.store
    }

    /// Replaces the assigned partitions with `partitions` (duplicates are
    /// ignored; an empty slice unassigns everything). Partitions that stay
    /// keep their positions; new ones start at the group's committed offset
    /// (or by the reset policy) at the next poll. With auto-commit, the
    /// positions of the partitions taken away are committed first.
    ///
    /// A subscribed consumer first [unsubscribes](Consumer::unsubscribe):
    /// it leaves its group and from then on reads what it is assigned.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownPartition`] for a partition the log does not have
    /// (nothing changes then); the errors of [`OffsetStore::commit`] for the
    /// auto-commit, in which case the assignment is unchanged (or, for a
    /// subscribed consumer, empty: the consumer left its group).
    pub fn assign(&mut self, partitions: &[u32]) -> Result<()> {
        for &id in partitions {
            self.log_partition(id)?;
        }
        self.unsubscribe()?;
        self.reassign(partitions)
    }

    /// Joins the consumer group `config.group_id` through `coordinator`, so
    /// that the group's members share the log's partitions: from now on the
    /// coordinator decides which partitions this consumer reads, and a
    /// manual assignment is given up (committed first, with auto-commit).
    /// A consumer subscribed before leaves its previous group first.
    ///
    /// This sends the first join; the partitions arrive during the polls
    /// that follow, which take part in the group's protocol on their own:
    ///
    /// - Every poll tells the coordinator the consumer is alive when it
    ///   starts, and a waiting poll does so again every
    ///   [`heartbeat_interval`](ConsumerConfig::heartbeat_interval) (at most
    ///   a third of the coordinator's session timeout). A consumer that
    ///   stops polling for longer than the session timeout is removed from
    ///   the group and its partitions move to the others: call `poll` often
    ///   enough, even with a short timeout.
    /// - When a rebalance starts, an eager assignor's member (range,
    ///   round-robin) commits its positions (with auto-commit) and gives up
    ///   all its partitions before it rejoins; a cooperative-sticky member
    ///   keeps reading its partitions while it rejoins and gives up, after
    ///   committing them, only the partitions the new generation takes away.
    /// - A partition the consumer receives starts at the group's committed
    ///   offset (the offset store is shared by every consumer of the log),
    ///   else by the reset policy: it goes on where its previous owner last
    ///   committed.
    /// - A member the coordinator removed (its session expired) loses its
    ///   partitions without committing and joins again as a new member.
    /// - A static member
    ///   ([`group_instance_id`](ConsumerConfig::group_instance_id)) replaced
    ///   by a newer incarnation is fenced: every later poll and commit
    ///   returns [`Error::FencedInstanceId`].
    ///
    /// Every commit of a subscribed consumer is first checked with the
    /// coordinator, so that a member removed from the group, or one whose
    /// generation is over, cannot overwrite the progress of a partition's
    /// new owner. Without auto-commit, commit what you processed before you
    /// poll again: the records of a partition taken away during a poll and
    /// not committed are read again by its next owner.
    ///
    /// ```
    /// use std::time::Duration;
    /// use durable_log::{Config, Log, Record};
    /// use durable_log::offsets::{
    ///     AutoOffsetReset, Consumer, ConsumerConfig, GroupConfig, GroupCoordinator,
    /// };
    ///
    /// # fn main() -> durable_log::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), Config::default().partitions(2))?;
    /// log.partition(1)?.append(&[Record::new("a")])?;
    /// let groups = GroupCoordinator::new(log.partition_count(), GroupConfig::default())?;
    ///
    /// let config = ConsumerConfig::new("billing").auto_offset_reset(AutoOffsetReset::Earliest);
    /// let mut consumer = Consumer::new(&log, config)?;
    /// consumer.subscribe(&groups)?;
    /// let records = consumer.poll(Duration::from_secs(1))?;
    /// assert_eq!(consumer.assignment(), vec![0, 1]);
    /// assert_eq!(records.len(), 1);
    /// consumer.close()?; // commits, then leaves the group
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] (field `partitions`) when the coordinator
    /// serves another number of partitions than the log has; the errors of
    /// [`OffsetStore::commit`] for the auto-commit of the partitions given
    /// up; and the coordinator's refusals of the first join:
    /// [`Error::InconsistentGroupProtocol`] when
    /// [`assignor`](ConsumerConfig::assignor) differs from the group's,
    /// [`Error::GroupMaxSizeReached`], [`Error::FencedInstanceId`]. The
    /// consumer is then not subscribed.
    pub fn subscribe(&mut self, coordinator: &GroupCoordinator) -> Result<()> {
        let log_partitions = self.partitions.len();
        if usize::try_from(coordinator.partition_count()).ok() != Some(log_partitions) {
            return Err(Error::config(
                "partitions",
                format!(
                    "the group coordinator serves {} partitions, the log has {log_partitions}",
                    coordinator.partition_count()
                ),
            ));
        }
        self.unsubscribe()?;
        self.reassign(&[])?;
        let session_timeout = coordinator.config().session_timeout;
        let heartbeat_interval = self
            .config
            .heartbeat_interval
            .min(session_timeout / 3)
            .max(MIN_HEARTBEAT_INTERVAL);
        self.group = Some(Membership {
            coordinator: coordinator.clone(),
            member_id: None,
            generation: 0,
            joining: true,
            pending: None,
            fenced: None,
            heartbeat_interval,
            next_request: None,
        });
        if let Err(error) = self.drive_group() {
            if let Some(membership) = self.group.take() {
                membership.leave(&self.config.group_id);
            }
            self.reassign_inner(&[]);
            return Err(error);
        }
        Ok(())
    }

    /// Leaves the group the consumer is subscribed to (static members too):
    /// commits the positions with auto-commit, gives up the partitions and
    /// tells the coordinator, which starts a rebalance of the other members.
    /// The consumer then has no partitions until it is assigned some or
    /// subscribes again. Does nothing for a consumer that is not subscribed.
    ///
    /// # Errors
    ///
    /// The errors of [`OffsetStore::commit`] and the coordinator's refusal
    /// of that commit ([`Error::UnknownMember`], [`Error::IllegalGeneration`],
    /// [`Error::FencedInstanceId`]); the consumer leaves anyway, without
    /// committing.
    pub fn unsubscribe(&mut self) -> Result<()> {
        if self.group.is_none() {
            return Ok(());
        }
        let result = self.reassign(&[]);
        if result.is_err() {
            self.reassign_inner(&[]);
        }
        if let Some(membership) = self.group.take() {
            membership.leave(&self.config.group_id);
        }
        result
    }

    /// Whether the consumer is subscribed to a group (see
    /// [`Consumer::subscribe`]).
    pub fn is_subscribed(&self) -> bool {
        self.group.is_some()
    }

    /// The member id the group coordinator gave this consumer, once a
    /// subscribed consumer has joined; `None` otherwise.
    pub fn member_id(&self) -> Option<&str> {
        self.group.as_ref()?.member_id.as_deref()
    }

    /// The group generation of a subscribed consumer's current assignment;
    /// `None` before its first assignment and when not subscribed.
    pub fn generation(&self) -> Option<u32> {
        self.group
            .as_ref()
            .map(|m| m.generation)
            .filter(|&generation| generation > 0)
    }

    /// The assigned partitions, in the order they were assigned.
    pub fn assignment(&self) -> Vec<u32> {
        self.assigned.iter().map(|a| a.id).collect()
    }

    /// Every change of assignment goes through here, so that partitions
    /// taken away are committed (with auto-commit) whoever takes them: the
    /// application through [`Consumer::assign`], or a group coordinator.
    pub(crate) fn reassign(&mut self, partitions: &[u32]) -> Result<()> {
        let mut seen = BTreeSet::new();
        for &id in partitions {
            self.log_partition(id)?;
            seen.insert(id);
        }
        if self.config.auto_commit {
            let revoked: Vec<(u32, OffsetAndMetadata)> = self
                .assigned
                .iter()
                .filter(|a| !seen.contains(&a.id))
                .filter_map(|a| match a.position {
                    Position::At(offset) => Some((a.id, OffsetAndMetadata::new(offset))),
                    _ => None,
                })
                .collect();
            self.commit_checked(&revoked)?;
        }
        self.reassign_inner(partitions);
        Ok(())
    }

    /// Replaces the assignment without committing anything: after the
    /// partitions taken away were committed, or when they are lost (the
    /// group removed this member, so commits would be refused and the
    /// partitions belong to others). Partitions the log does not have are
    /// skipped (callers check them first).
    fn reassign_inner(&mut self, partitions: &[u32]) {
        let mut seen = BTreeSet::new();
        let mut wanted = Vec::new();
        for &id in partitions {
            if let Ok(partition) = self.log_partition(id)
                && seen.insert(id)
            {
                wanted.push((id, partition.clone()));
            }
        }
        let mut kept: Vec<Option<Assigned>> = self.assigned.drain(..).map(Some).collect();
        for (id, partition) in wanted {
            let existing = kept
                .iter_mut()
                .find(|a| a.as_ref().is_some_and(|a| a.id == id))
                .and_then(Option::take);
            let assigned = existing.unwrap_or(Assigned {
                id,
                partition,
                position: Position::Committed,
                reader: None,
                peeked: None,
            });
            self.assigned.push(assigned);
        }
        self.next_fetch = 0;
        self.next_wait = 0;
        self.deferred = None;
    }

    fn log_partition(&self, id: u32) -> Result<&Partition> {
        self.partitions
            .get(id as usize)
            .ok_or(Error::UnknownPartition {
                partition: id,
                partitions: self.partitions.len() as u32,
            })
    }

    fn index_of(&self, id: u32) -> Result<usize> {
        self.log_partition(id)?;
        self.assigned
            .iter()
            .position(|a| a.id == id)
            .ok_or(Error::NotAssigned { partition: id })
    }

    /// The offset of the next record a poll returns from `partition`,
    /// deciding it first if it is not yet decided (from the committed
    /// offset or the reset policy, as a poll would).
    ///
    /// # Errors
    ///
    /// [`Error::NotAssigned`], [`Error::UnknownPartition`], and with
    /// [`AutoOffsetReset::None`]: [`Error::NoCommittedOffset`] or
    /// [`Error::OffsetOutOfRange`].
    pub fn position(&mut self, partition: u32) -> Result<u64> {
        let index = self.index_of(partition)?;
        self.resolve(index)
    }

    /// Makes the next poll of `partition` start at `offset`. The offset is
    /// checked then: outside the partition, the reset policy applies.
    ///
    /// # Errors
    ///
    /// [`Error::NotAssigned`], [`Error::UnknownPartition`].
    pub fn seek(&mut self, partition: u32, offset: u64) -> Result<()> {
        self.set_position(partition, Position::At(offset))
    }

    /// Makes the next poll of `partition` start at its first stored offset
    /// (as it is at that poll).
    ///
    /// # Errors
    ///
    /// [`Error::NotAssigned`], [`Error::UnknownPartition`].
    pub fn seek_to_beginning(&mut self, partition: u32) -> Result<()> {
        self.set_position(partition, Position::Beginning)
    }

    /// Makes the next poll of `partition` start at its end (as it is at that
    /// poll): only records appended later are returned.
    ///
    /// # Errors
    ///
    /// [`Error::NotAssigned`], [`Error::UnknownPartition`].
    pub fn seek_to_end(&mut self, partition: u32) -> Result<()> {
        self.set_position(partition, Position::End)
    }

    fn set_position(&mut self, partition: u32, position: Position) -> Result<()> {
        let index = self.index_of(partition)?;
        self.assigned[index].set_position(position);
        self.deferred = None;
        Ok(())
    }

    /// The offset the group last committed for `partition` (assigned or
    /// not), if any.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownPartition`].
    pub fn committed(&self, partition: u32) -> Result<Option<u64>> {
        Ok(self.committed_metadata(partition)?.map(|c| c.offset))
    }

    /// The group's last commit for `partition`, with its metadata.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownPartition`].
    pub fn committed_metadata(&self, partition: u32) -> Result<Option<OffsetAndMetadata>> {
        self.log_partition(partition)?;
        Ok(self.store.committed(&self.config.group_id, partition))
    }

    /// Commits the current position of every assigned partition whose
    /// position is decided: every record returned by the polls so far
    /// counts as consumed. Durable when this returns.
    ///
    /// # Errors
    ///
    /// The errors of [`OffsetStore::commit`]. For a subscribed consumer, the
    /// coordinator's refusal (nothing is committed then):
    /// [`Error::UnknownMember`] when the group removed this member,
    /// [`Error::IllegalGeneration`] when a rebalance ended its generation
    /// (the next poll takes the new assignment), [`Error::RebalanceInProgress`]
    /// while it has not joined a generation yet, [`Error::FencedInstanceId`].
    pub fn commit_sync(&self) -> Result<()> {
        let positions: Vec<(u32, OffsetAndMetadata)> = self
            .assigned
            .iter()
            .filter_map(|a| match a.position {
                Position::At(offset) => Some((a.id, OffsetAndMetadata::new(offset))),
                _ => None,
            })
            .collect();
        self.commit_checked(&positions)
    }

    /// Commits `offsets` once the group coordinator (for a subscribed
    /// consumer) allows this member to.
    fn commit_checked(&self, offsets: &[(u32, OffsetAndMetadata)]) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        match &self.group {
            Some(membership) => membership.commit(&self.store, &self.config.group_id, offsets),
            None => self.store.commit(&self.config.group_id, offsets),
        }
    }

    /// Commits the given offsets (the next offset to read in each
    /// partition), assigned or not, without changing any position. Durable
    /// and atomic when this returns.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownPartition`] (nothing is committed then), the errors
    /// of [`OffsetStore::commit`], and for a subscribed consumer the
    /// coordinator's refusals listed at [`Consumer::commit_sync`].
    pub fn commit(&self, offsets: &[(u32, u64)]) -> Result<()> {
        let offsets: Vec<(u32, OffsetAndMetadata)> = offsets
            .iter()
            .map(|&(p, offset)| (p, OffsetAndMetadata::new(offset)))
            .collect();
        self.commit_with_metadata(&offsets)
    }

    /// As [`Consumer::commit`], with metadata for each offset.
    ///
    /// # Errors
    ///
    /// As [`Consumer::commit`].
    pub fn commit_with_metadata(&self, offsets: &[(u32, OffsetAndMetadata)]) -> Result<()> {
        for (p, _) in offsets {
            self.log_partition(*p)?;
        }
        self.commit_checked(offsets)
    }

    /// How far behind the end each assigned partition's position is:
    /// `end_offset - position`, in assignment order. Undecided positions are
    /// decided first, as by [`Consumer::position`].
    ///
    /// # Errors
    ///
    /// As [`Consumer::position`].
    pub fn lag(&mut self) -> Result<Vec<(u32, u64)>> {
        (0..self.assigned.len())
            .map(|index| {
                let position = self.resolve(index)?;
                let a = &self.assigned[index];
                Ok((a.id, a.partition.end_offset().saturating_sub(position)))
            })
            .collect()
    }

    /// Returns the next records of the assigned partitions, at most
    /// `max_poll_records`, waiting up to `timeout` for one to arrive.
    /// Returns as soon as there is at least one; returns none when the
    /// timeout passes first (at once for a zero timeout). Within a
    /// partition records come in offset order; the partitions take turns
    /// (see the [module documentation](super)). With no partition
    /// assigned, waits out the timeout and returns none.
    ///
    /// With auto-commit, a poll at least `auto_commit_interval` after the
    /// previous auto-commit first commits the positions, that is, every
    /// record returned by the earlier polls.
    ///
    /// # Errors
    ///
    /// [`Error::NoCommittedOffset`] or [`Error::OffsetOutOfRange`] with
    /// [`AutoOffsetReset::None`]; [`Error::Closed`] once the log is closed;
    /// [`Error::Corrupt`] for a damaged batch; the errors of
    /// [`OffsetStore::commit`] for the auto-commit. An error met after some
    /// records were read is returned by the next poll instead.
    ///
    /// A subscribed consumer also takes part in its group's protocol (see
    /// [`Consumer::subscribe`]) and returns the errors of the coordinator it
    /// cannot act on: [`Error::FencedInstanceId`] once a newer incarnation
    /// of this static member replaced it (and at every poll after),
    /// [`Error::InconsistentGroupProtocol`], [`Error::GroupMaxSizeReached`].
    pub fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        if let Some(error) = self.deferred.take() {
            return Err(error);
        }
        let deadline = Instant::now().checked_add(timeout);
        self.drive_group()?;
        self.auto_commit_if_due()?;
        loop {
            if !self.assigned.is_empty() {
                let records = self.fetch()?;
                if !records.is_empty() {
                    return Ok(records);
                }
            }
            let now = Instant::now();
            let mut remaining = match deadline {
                Some(deadline) => {
                    if now >= deadline {
                        return Ok(Vec::new());
                    }
                    deadline - now
                }
                None => MAX_WAIT,
            }
            .min(MAX_WAIT);
            if let Some(due) = self.group.as_ref().and_then(|m| m.next_request) {
                remaining = remaining.min(due.saturating_duration_since(now));
            }
            if self.assigned.is_empty() {
                std::thread::sleep(remaining);
            } else {
                self.wait(remaining)?;
            }
            if self
                .group
                .as_ref()
                .is_some_and(|m| m.is_due(Instant::now()))
            {
                self.drive_group()?;
            }
        }
    }

    /// Takes the consumer's part in its group's protocol, if it is
    /// subscribed: applies an assignment not yet applied, heartbeats, and
    /// when a rebalance runs gives up what the assignor requires, (re)joins
    /// and fetches the new assignment.
    fn drive_group(&mut self) -> Result<()> {
        let Some(membership) = &self.group else {
            return Ok(());
        };
        if let Some(error) = &membership.fenced {
            return Err(error.clone());
        }
        if let Some(pending) = membership.pending.clone() {
            self.apply_assignment(&pending)?;
        }
        let Some(membership) = &self.group else {
            return Ok(());
        };
        let coordinator = membership.coordinator.clone();
        let group = self.config.group_id.clone();
        if !membership.joining
            && let Some(member_id) = membership.member_id.clone()
        {
            let request = HeartbeatRequest {
                group: group.clone(),
                member_id,
                generation: membership.generation,
            };
            match coordinator.heartbeat(&request) {
                Ok(HeartbeatResponse::Stable) => {
                    if let Some(membership) = &mut self.group {
                        membership.schedule(membership.heartbeat_interval);
                    }
                    return Ok(());
                }
                Ok(HeartbeatResponse::RebalanceInProgress) => {
                    let cooperative = coordinator
                        .describe(&group)
                        .is_some_and(|d| d.assignor.is_cooperative());
                    if !cooperative {
                        // Eager: commit and give up everything before the
                        // join; on failure the next poll tries again.
                        self.apply_assignment(&[])?;
                    }
                }
                // Removed, or behind a generation: handled, then join.
                Err(error) => self.membership_error(error)?,
            }
        }
        self.join_and_sync()
    }

    /// Joins (or rejoins) the group and, once the generation formed, takes
    /// the assignment `sync` returns.
    fn join_and_sync(&mut self) -> Result<()> {
        let Some(membership) = &mut self.group else {
            return Ok(());
        };
        membership.joining = true;
        membership.schedule(JOIN_RETRY);
        let coordinator = membership.coordinator.clone();
        let request = JoinRequest {
            group: self.config.group_id.clone(),
            member_id: membership.member_id.clone(),
            group_instance_id: self.config.group_instance_id.clone(),
            client_id: self.config.client_id.clone(),
            assignor: self.config.assignor,
        };
        let joined = match coordinator.join(&request) {
            Ok(joined) => joined,
            // The coordinator forgot this member: join at once as a new one.
            Err(error @ Error::UnknownMember { .. }) if request.member_id.is_some() => {
                self.membership_error(error)?;
                let request = JoinRequest {
                    member_id: None,
                    ..request
                };
                match coordinator.join(&request) {
                    Ok(joined) => joined,
                    Err(error) => return self.membership_error(error),
                }
            }
            Err(error) => return self.membership_error(error),
        };
        let Some(membership) = &mut self.group else {
            return Ok(());
        };
        membership.member_id = Some(joined.member_id.clone());
        let JoinStatus::Joined { generation, .. } = joined.status else {
            return Ok(());
        };
        let request = SyncRequest {
            group: self.config.group_id.clone(),
            member_id: joined.member_id,
            generation,
        };
        let synced = match coordinator.sync(&request) {
            Ok(synced) => synced,
            Err(error) => return self.membership_error(error),
        };
        membership.generation = synced.generation;
        membership.joining = false;
        membership.schedule(membership.heartbeat_interval);
        // Partitions that stay keep their positions; the revoked ones (with
        // the cooperative assignor) are committed by `reassign`, in the new
        // generation, before the next request to the coordinator.
        membership.pending = Some(synced.assignment.clone());
        self.apply_assignment(&synced.assignment)
    }

    /// Takes the assignment the group gave (committing the partitions taken
    /// away, with auto-commit). A commit the coordinator refuses means the
    /// membership changed: that is acted on instead.
    fn apply_assignment(&mut self, partitions: &[u32]) -> Result<()> {
        match self.reassign(partitions) {
            Ok(()) => {
                if let Some(membership) = &mut self.group {
                    membership.pending = None;
                }
                Ok(())
            }
            Err(
                error @ (Error::UnknownMember { .. }
                | Error::IllegalGeneration { .. }
                | Error::FencedInstanceId { .. }),
            ) => self.membership_error(error),
            Err(error) => Err(error),
        }
    }

    /// Acts on a refusal from the coordinator: the ones that say how to go
    /// on are handled, the others returned.
    fn membership_error(&mut self, error: Error) -> Result<()> {
        let Some(membership) = &mut self.group else {
            return Err(error);
        };
        match error {
            // Removed from the group: its partitions may already be read by
            // others, and commits would be refused. Join as a new member.
            Error::UnknownMember { .. } => {
                membership.member_id = None;
                membership.generation = 0;
                membership.joining = true;
                membership.pending = None;
                membership.next_request = Some(Instant::now());
                self.reassign_inner(&[]);
                Ok(())
            }
            // A generation formed without this member's assignment: what
            // it holds may belong to others now. Rejoin with the same id.
            Error::IllegalGeneration { .. } => {
                membership.joining = true;
                membership.pending = None;
                membership.next_request = Some(Instant::now());
                self.reassign_inner(&[]);
                Ok(())
            }
            // Another rebalance started before the sync: join again.
            Error::RebalanceInProgress { .. } => {
                membership.joining = true;
                Ok(())
            }
            Error::FencedInstanceId { .. } => {
                membership.fenced = Some(error.clone());
                membership.pending = None;
                self.reassign_inner(&[]);
                Err(error)
            }
            error => Err(error),
        }
    }

    /// Commits the positions first if auto-commit is on, then releases the
    /// consumer. Dropping a consumer without closing it commits nothing, as
    /// a crash would not.
    ///
    /// A subscribed dynamic member then leaves its group, whose other
    /// members rebalance at once. A static member
    /// ([`group_instance_id`](ConsumerConfig::group_instance_id)) does not
    /// leave: it is expected back, and a new incarnation that subscribes
    /// within the session timeout takes its partitions over without a
    /// rebalance; otherwise the coordinator removes it when its session
    /// expires. Use [`Consumer::unsubscribe`] first to make a static member
    /// leave for good.
    ///
    /// # Errors
    ///
    /// The errors of [`OffsetStore::commit`] and, for a subscribed consumer,
    /// the coordinator's refusals listed at [`Consumer::commit_sync`]; the
    /// consumer is released (and a dynamic member leaves) anyway.
    pub fn close(mut self) -> Result<()> {
        let result = if self.config.auto_commit {
            self.commit_sync()
        } else {
            Ok(())
        };
        if let Some(membership) = self.group.take()
            && self.config.group_instance_id.is_none()
        {
            membership.leave(&self.config.group_id);
        }
        self.assigned.clear();
        result
    }

    fn auto_commit_if_due(&mut self) -> Result<()> {
        if !self.config.auto_commit {
            return Ok(());
        }
        let now = Instant::now();
        if self.next_auto_commit.is_some_and(|due| now >= due) {
            self.commit_sync()?;
            self.next_auto_commit = now.checked_add(self.config.auto_commit_interval);
        }
        Ok(())
    }

    /// The end of what may be returned: the durable offset on a log that
    /// syncs every append (see the module documentation), the end offset
    /// otherwise.
    fn fetch_limit(&self, partition: &Partition) -> u64 {
        let end = partition.end_offset();
        if self.durable_reads {
            partition.durable_offset().min(end)
        } else {
            end
        }
    }

    /// Where the reset policy puts `index`'s position, or `error`.
    fn reset_to(&self, index: usize, error: Error) -> Result<u64> {
        let partition = &self.assigned[index].partition;
        match self.config.auto_offset_reset {
            AutoOffsetReset::Earliest => Ok(partition.start_offset()),
            AutoOffsetReset::Latest => Ok(self.fetch_limit(partition)),
            AutoOffsetReset::None => Err(error),
        }
    }

    /// Decides `index`'s position if it is not decided.
    fn resolve(&mut self, index: usize) -> Result<u64> {
        let a = &self.assigned[index];
        let offset = match a.position {
            Position::At(offset) => return Ok(offset),
            Position::Beginning => a.partition.start_offset(),
            Position::End => self.fetch_limit(&a.partition),
            Position::Committed => {
                let (start, end) = (a.partition.start_offset(), a.partition.end_offset());
                match self.store.committed(&self.config.group_id, a.id) {
                    Some(c) if (start..=end).contains(&c.offset) => c.offset,
                    Some(c) => self.reset_to(
                        index,
                        Error::OffsetOutOfRange {
                            requested: c.offset,
                            start,
                            end,
                        },
                    )?,
                    None => self.reset_to(
                        index,
                        Error::NoCommittedOffset {
                            group: self.config.group_id.clone(),
                            partition: a.id,
                        },
                    )?,
                }
            }
        };
        self.assigned[index].set_position(Position::At(offset));
        Ok(offset)
    }

    /// Takes records from the partitions in turn, starting after the one
    /// that was served last, `max_poll_records / partitions` (at least one)
    /// from each per turn, until the poll is full or none has more.
    fn fetch(&mut self) -> Result<Vec<ConsumerRecord>> {
        let n = self.assigned.len();
        let max = self.config.max_poll_records;
        let share = (max / n).max(1);
        let mut out = Vec::new();
        let mut last_served = None;
        'turns: loop {
            let mut progressed = false;
            for step in 0..n {
                if out.len() >= max {
                    break 'turns;
                }
                let index = (self.next_fetch + step) % n;
                let quota = share.min(max - out.len());
                match self.fetch_partition(index, quota, &mut out) {
                    Ok(0) => {}
                    Ok(_) => {
                        progressed = true;
                        last_served = Some(index);
                    }
                    Err(error) if out.is_empty() => return Err(error),
                    Err(error) => {
                        self.deferred = Some(error);
                        break 'turns;
                    }
                }
            }
            if !progressed {
                break;
            }
        }
        if let Some(index) = last_served {
            self.next_fetch = (index + 1) % n;
        }
        Ok(out)
    }

    /// Moves up to `quota` records of `index` below its fetch limit into
    /// `out`; returns how many.
    fn fetch_partition(
        &mut self,
        index: usize,
        quota: usize,
        out: &mut Vec<ConsumerRecord>,
    ) -> Result<usize> {
        let mut position = self.resolve(index)?;
        let mut resets = 0;
        let mut taken = 0;
        while taken < quota {
            let a = &self.assigned[index];
            let (start, end) = (a.partition.start_offset(), a.partition.end_offset());
            let limit = self.fetch_limit(&a.partition);
            let mut next = None;
            if position >= start && position <= end {
                if position >= limit {
                    break;
                }
                let a = &mut self.assigned[index];
                next = match a.peeked.take() {
                    Some(record) => Some(Ok(record)),
                    None => {
                        let partition = &a.partition;
                        a.reader
                            .get_or_insert_with(|| partition.reader(position))
                            .next()
                    }
                };
            }
            let error = match next {
                Some(Ok(record)) => {
                    let a = &mut self.assigned[index];
                    if record.offset >= limit {
                        a.peeked = Some(record);
                        break;
                    }
                    position = record.offset + 1;
                    a.position = Position::At(position);
                    out.push(ConsumerRecord::new(a.id, record));
                    taken += 1;
                    continue;
                }
                None if position >= start && position <= end => break,
                // Outside the partition (moved by retention or truncation,
                // or sought there).
                None => Error::OffsetOutOfRange {
                    requested: position,
                    start,
                    end,
                },
                Some(Err(error)) => error,
            };
            self.assigned[index].reader = None;
            if !matches!(error, Error::OffsetOutOfRange { .. }) || resets == MAX_RESETS_PER_FETCH {
                return Err(error);
            }
            resets += 1;
            position = self.reset_to(index, error)?;
            self.assigned[index].set_position(Position::At(position));
        }
        Ok(taken)
    }

    /// Blocks until a fetch may find records or `remaining` passes.
    fn wait(&mut self, remaining: Duration) -> Result<()> {
        // Records written but not yet synced: join the fsync under way (or
        // run one) instead of sleeping until someone else's ends.
        if self.durable_reads {
            for a in &self.assigned {
                let Position::At(position) = a.position else {
                    continue;
                };
                let p = &a.partition;
                if p.end_offset() > position && p.durable_offset() < p.end_offset() {
                    return p.sync();
                }
            }
        }
        let n = self.assigned.len();
        for step in 0..n {
            let index = (self.next_wait + step) % n;
            let a = &self.assigned[index];
            let Position::At(position) = a.position else {
                continue;
            };
            self.next_wait = (index + 1) % n;
            let slice = if n == 1 {
                remaining
            } else {
                remaining.min(WAIT_SLICE)
            };
            a.partition.wait_for(position, slice)?;
            return Ok(());
        }
        Ok(())
    }
}
