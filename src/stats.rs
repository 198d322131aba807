//! Counters an operator needs to see a partition's health, kept as relaxed
//! atomic increments on the hot paths and read as a [`PartitionStats`]
//! snapshot.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::partition::RecoveryReport;

/// A snapshot of one partition's counters since it was opened, and of its
/// current extent. See [`Partition::stats`](crate::Partition::stats).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionStats {
    /// Batches appended.
    pub batches_appended: u64,
    /// Records appended.
    pub records_appended: u64,
    /// Bytes written to segments (batch headers included, after compression).
    pub bytes_appended: u64,
    /// Bytes the appended batches would have taken uncompressed.
    pub bytes_appended_uncompressed: u64,
    /// Largest batch appended, in bytes on disk.
    pub largest_batch_bytes: u64,
    /// Data fsyncs of segment files (group commits, rolls and closes).
    pub fsyncs: u64,
    /// Time spent in those fsyncs.
    pub fsync_time: Duration,
    /// Batches made durable by group-commit fsyncs: divided by
    /// `group_commits`, the average group size.
    pub group_commit_batches: u64,
    /// Group-commit fsyncs (those run by `sync` or a `Durability::Sync`
    /// append).
    pub group_commits: u64,
    /// Segments rolled.
    pub rolls: u64,
    /// Batches read (by `read`, readers and timestamp lookups).
    pub batches_read: u64,
    /// Bytes of batches read.
    pub bytes_read: u64,
    /// What opening the partition found.
    pub recovery: RecoveryReport,
    /// How long opening the partition took.
    pub recovery_time: Duration,
    /// Current first offset.
    pub start_offset: u64,
    /// Current end offset.
    pub end_offset: u64,
    /// Current durable offset.
    pub durable_offset: u64,
    /// Current number of segments.
    pub segments: u64,
    /// Current bytes in segments.
    pub size_bytes: u64,
}

impl PartitionStats {
    /// Uncompressed bytes per byte on disk of what was appended (1.0 without
    /// compression; 0.0 before any append).
    pub fn compression_ratio(&self) -> f64 {
        if self.bytes_appended == 0 {
            return 0.0;
        }
        self.bytes_appended_uncompressed as f64 / self.bytes_appended as f64
    }

    /// Average number of batches one group-commit fsync made durable.
    pub fn average_group_commit(&self) -> f64 {
        if self.group_commits == 0 {
            return 0.0;
        }
        self.group_commit_batches as f64 / self.group_commits as f64
    }
}

/// The live counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub batches_appended: AtomicU64,
    pub records_appended: AtomicU64,
    pub bytes_appended: AtomicU64,
    pub bytes_appended_uncompressed: AtomicU64,
    pub largest_batch_bytes: AtomicU64,
    pub fsyncs: AtomicU64,
    pub fsync_nanos: AtomicU64,
    pub group_commit_batches: AtomicU64,
    pub group_commits: AtomicU64,
    pub rolls: AtomicU64,
    pub batches_read: AtomicU64,
    pub bytes_read: AtomicU64,
    /// Batches appended when the last group commit started.
    pub batches_at_last_commit: AtomicU64,
}

pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

pub(crate) fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl Counters {
    pub(crate) fn appended(&self, records: u64, bytes: u64, uncompressed: u64) {
        add(&self.batches_appended, 1);
        add(&self.records_appended, records);
        add(&self.bytes_appended, bytes);
        add(&self.bytes_appended_uncompressed, uncompressed);
        self.largest_batch_bytes.fetch_max(bytes, Ordering::Relaxed);
    }

    pub(crate) fn fsynced(&self, took: Duration) {
        add(&self.fsyncs, 1);
        add(
            &self.fsync_nanos,
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
        );
    }

    pub(crate) fn read(&self, bytes: usize) {
        add(&self.batches_read, 1);
        add(&self.bytes_read, bytes as u64);
    }
}
