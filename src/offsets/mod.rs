//! Consumers and their committed offsets.
//!
//! Built with the `offsets` cargo feature, which is on by default.
//!
//! A [`Consumer`] reads the partitions assigned to it and remembers, per
//! consumer group and partition, the next offset to read: its *committed
//! offset*, kept durably by the log's [`OffsetStore`] in
//! `<log dir>/__consumer_offsets/`. A consumer that restarts (or another
//! one of the same group) goes on from there.
//!
//! ```
//! use std::time::Duration;
//! use durable_log::{Config, Log, Record};
//! use durable_log::offsets::{AutoOffsetReset, Consumer, ConsumerConfig};
//!
//! # fn main() -> durable_log::Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! let log = Log::open(dir.path(), Config::default().partitions(2))?;
//! log.partition(1)?.append(&[Record::new("a"), Record::new("b")])?;
//!
//! let config = ConsumerConfig::new("billing")
//!     .auto_commit(false)
//!     .auto_offset_reset(AutoOffsetReset::Earliest);
//! let mut consumer = Consumer::new(&log, config.clone())?;
//! consumer.assign(&[0, 1])?;
//! let first = consumer.poll(Duration::from_secs(1))?;
//! assert_eq!(first.len(), 2);
//! consumer.commit_sync()?; // after processing `first`
//! drop(consumer);
//!
//! // A new consumer of the group starts after what was committed.
//! log.partition(1)?.append(&[Record::new("c")])?;
//! let mut consumer = Consumer::new(&log, config)?;
//! consumer.assign(&[0, 1])?;
//! let next = consumer.poll(Duration::from_secs(1))?;
//! assert_eq!((next[0].partition, next[0].offset), (1, 2));
//! # Ok(()) }
//! ```
//!
//! # Delivery guarantees
//!
//! A commit is durable (fsynced) when the call that makes it returns, and a
//! commit of several partitions is atomic. What a crash does to delivery
//! then depends on when the application commits:
//!
//! - **Process, then commit** ([`Consumer::commit_sync`] after handling
//!   what a poll returned; `auto_commit(false)`): *at least once*. A crash
//!   after processing and before the commit returns delivers again the
//!   records processed since the previous commit; none is skipped.
//! - **Commit, then process**: *at most once*. A crash after the commit and
//!   before processing ends skips the records returned since the previous
//!   commit; none is delivered twice.
//! - **Auto-commit** (the default): every poll that comes at least
//!   `auto_commit_interval` after the previous auto-commit first commits
//!   the positions, that is, everything returned by the polls before it;
//!   [`Consumer::close`] and a change of assignment (for the partitions
//!   taken away) do the same. A record is therefore committed only once the
//!   application has called `poll` again after receiving it (or closed the
//!   consumer). *Duplicates*: a crash delivers again exactly the records
//!   returned by the poll that made the last auto-commit and by every poll
//!   after it: the polls of about one interval, if the application polls
//!   more often than that. *Loss*:
//!   none, provided the application has finished with a poll's records
//!   before it calls `poll` (or `close`) again; records handed to another
//!   thread and still in flight at the next poll may be committed before
//!   they are handled, and a crash then skips them. Dropping a consumer
//!   without [`Consumer::close`] commits nothing, like a crash.
//!
//! [`Consumer::seek`] moves the position, and the next commit covers it: a
//! seek forward skips records on purpose.
//!
//! # What a consumer reads
//!
//! On a log with [`Durability::Sync`](crate::Durability::Sync), a consumer
//! returns only records below the partition's
//! [`durable_offset`](crate::Partition::durable_offset): a record that a
//! power loss could still take away (written, not yet synced) is never
//! returned, so a committed offset never points past records that a crash
//! removes and the log then gives to new records. When a poll finds records
//! written but not yet synced, it joins the fsync under way (group commit)
//! rather than sleeping. With `Durability::Interval` or `Durability::None`
//! the application has chosen to lose unsynced appends in a power loss;
//! consumers then read up to the end offset, and a committed offset may
//! point past the end after such a crash (the reset policy then applies).
//!
//! Where a partition has no committed offset, or its committed offset or
//! position is outside the partition (retention deleted the records, a
//! truncation removed them, or a seek went there), the
//! [`AutoOffsetReset`] policy decides: `Earliest` starts at the first
//! stored offset, `Latest` at the end, `None` reports an error until the
//! application seeks.
//!
//! # Waiting and fairness
//!
//! A poll that finds nothing blocks on [`Partition::wait_for`](crate::Partition::wait_for),
//! which an append wakes, so it never spins. With one partition assigned it
//! sleeps on it for the whole timeout. With several, it sleeps on one at a
//! time, in turn, for at most 10 ms, then looks at all of them: an append to
//! the partition being waited on wakes the poll at once, an append to
//! another one within 10 ms; an idle consumer wakes at most 100 times a
//! second.
//!
//! A poll takes up to `max_poll_records / partitions` (at least one) from
//! each partition in turn, and goes round again while there is room and
//! records; the next poll starts with the partition after the last one
//! served. A busy partition thus cannot starve the others.
//!
//! # The offset store
//!
//! See [`OffsetStore`]: commits are keyed records in an internal log, the
//! latest per key wins, the current state is kept in memory and rebuilt at
//! open. Until the log supports compaction, the store bounds its own log by
//! rewriting the live commits once its log holds at least four times as many
//! records as live commits (and 10 000 or more).

mod assignor;
mod config;
mod consumer;
mod encoding;
mod group;
mod store;

#[cfg(test)]
mod tests;

pub use assignor::{AssignorKind, AssignorMember};
pub use config::{AutoOffsetReset, ConsumerConfig};
pub use consumer::{Consumer, ConsumerRecord};
pub use group::{
    Clock, GroupConfig, GroupCoordinator, GroupDescription, GroupState, HeartbeatRequest,
    HeartbeatResponse, JoinRequest, JoinResponse, JoinStatus, LeaveRequest, ManualClock,
    MemberDescription, SyncRequest, SyncResponse, SystemClock,
};
pub use store::{OffsetAndMetadata, OffsetStore};
