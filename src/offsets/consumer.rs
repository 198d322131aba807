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
    /// # Errors
    ///
    /// [`Error::UnknownPartition`] for a partition the log does not have;
    /// the errors of [`OffsetStore::commit`] for the auto-commit, in which
    /// case the assignment is unchanged.
    pub fn assign(&mut self, partitions: &[u32]) -> Result<()> {
        self.reassign(partitions)
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
        let mut wanted = Vec::new();
        for &id in partitions {
            self.log_partition(id)?;
            if seen.insert(id) {
                wanted.push(id);
            }
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
            self.store.commit(&self.config.group_id, &revoked)?;
        }
        let mut kept: Vec<Option<Assigned>> = self.assigned.drain(..).map(Some).collect();
        for id in wanted {
            let existing = kept
                .iter_mut()
                .find(|a| a.as_ref().is_some_and(|a| a.id == id))
                .and_then(Option::take);
            let assigned = match existing {
                Some(assigned) => assigned,
                None => Assigned {
                    id,
                    partition: self.partitions[id as usize].clone(),
                    position: Position::Committed,
                    reader: None,
                    peeked: None,
                },
            };
            self.assigned.push(assigned);
        }
        self.next_fetch = 0;
        self.next_wait = 0;
        self.deferred = None;
        Ok(())
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
    /// The errors of [`OffsetStore::commit`].
    pub fn commit_sync(&self) -> Result<()> {
        let positions: Vec<(u32, OffsetAndMetadata)> = self
            .assigned
            .iter()
            .filter_map(|a| match a.position {
                Position::At(offset) => Some((a.id, OffsetAndMetadata::new(offset))),
                _ => None,
            })
            .collect();
        self.store.commit(&self.config.group_id, &positions)
    }

    /// Commits the given offsets (the next offset to read in each
    /// partition), assigned or not, without changing any position. Durable
    /// and atomic when this returns.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownPartition`] (nothing is committed then), and the
    /// errors of [`OffsetStore::commit`].
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
        self.store.commit(&self.config.group_id, offsets)
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
    pub fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        if let Some(error) = self.deferred.take() {
            return Err(error);
        }
        self.auto_commit_if_due()?;
        let deadline = Instant::now().checked_add(timeout);
        if self.assigned.is_empty() {
            std::thread::sleep(timeout);
            return Ok(Vec::new());
        }
        loop {
            let records = self.fetch()?;
            if !records.is_empty() {
                return Ok(records);
            }
            let remaining = match deadline {
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Ok(records);
                    }
                    deadline - now
                }
                None => MAX_WAIT,
            };
            self.wait(remaining.min(MAX_WAIT))?;
        }
    }

    /// Commits the positions first if auto-commit is on, then releases the
    /// consumer. Dropping a consumer without closing it commits nothing, as
    /// a crash would not.
    ///
    /// # Errors
    ///
    /// The errors of [`OffsetStore::commit`]; the consumer is released
    /// anyway.
    pub fn close(mut self) -> Result<()> {
        let result = if self.config.auto_commit {
            self.commit_sync()
        } else {
            Ok(())
        };
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
