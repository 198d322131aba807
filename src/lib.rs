//! An embeddable, durable, partitioned append-only log.
//!
//! `durable-log` gives a Rust program what Kafka's log layer gives a
//! cluster — records that are not lost once acknowledged, total order within
//! a partition, fast sequential appends, retention — as a library, with no
//! broker to run.
//!
//! ```
//! use std::time::Duration;
//! use durable_log::{Config, Log, Record};
//!
//! # fn main() -> durable_log::Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! let log = Log::open(dir.path(), Config::default())?;
//! let p = log.partition(0)?;
//!
//! // One atomic batch; with the default `Durability::Sync` it is on disk
//! // when `append` returns.
//! let a = p.append(&[Record::new("hello").with_key("k"), Record::new("world")])?;
//! assert_eq!((a.base_offset, a.last_offset), (0, 1));
//!
//! let values: Vec<_> = p.reader(0).map(|r| r.map(|r| r.value)).collect::<Result<_, _>>()?;
//! assert_eq!(values.len(), 2);
//!
//! // A consumer tailing the log blocks instead of polling.
//! assert!(!p.wait_for(2, Duration::from_millis(1))?);
//! log.close()?;
//! # Ok(()) }
//! ```
//!
//! # Guarantees
//!
//! - An append returns `Ok` only once the configured [`Durability`] is met;
//!   with the default, [`Durability::Sync`], its bytes are fsynced.
//! - Records in a partition keep the order and the offsets the log gave
//!   them; an offset is never given to two different records.
//! - Every batch carries a CRC-32 that is verified before a read hands out
//!   any of its records (once per batch while its segment is open, unless
//!   [`Config::verify_every_read`] asks for every read) and, at recovery,
//!   for every batch from the last synced one on: corrupt bytes are never
//!   returned as records.
//! - After a crash, a torn tail of unsynced bytes is cut away; damage to
//!   synced data is reported as [`Error::Corrupt`], never silently dropped.
//! - After a failed write or fsync the partition refuses writes until the
//!   log is reopened.
//!
//! The on-disk format is described byte by byte in `FORMAT.md`.

#![deny(missing_docs)]
#![deny(unsafe_code)]
#![warn(clippy::semicolon_if_nothing_returned)]

mod batches;
mod checkpoint;
mod cleaner;
mod codec;
mod config;
mod error;
#[cfg(any(test, feature = "internals"))]
mod fuzzing;
pub mod inspect;
#[cfg(feature = "internals")]
pub mod internals;
mod log;
#[cfg(feature = "metrics")]
mod metrics;
#[cfg(feature = "offsets")]
pub mod offsets;
mod partition;
mod partitioner;
mod poison;
mod producer;
mod producer_state;
mod record;
mod recovery;
#[cfg(feature = "replication")]
pub mod replication;
mod segment;
mod stats;
#[cfg(not(feature = "internals"))]
#[allow(dead_code)]
mod storage;
/// Internal building blocks, exposed for benches and fuzzing only.
#[cfg(feature = "internals")]
pub mod storage;
#[cfg(feature = "async")]
mod tail;

#[cfg(test)]
mod tests;

pub use batches::{Batch, BatchRecords, Batches, HeaderRef, HeaderRefs, RecordRef};
pub use cleaner::CompactionReport;
pub use config::{Cleanup, Compression, Config, Durability};
pub use error::{CorruptKind, Error, Result};
pub use log::Log;
pub use partition::{Partition, Reader, RecoveryReport, SentRange};
pub use producer::{Producer, ProducerConfig, SendHandle, WhenFull};
pub use record::{Appended, Header, Record, StoredRecord};
pub use stats::PartitionStats;
#[cfg(feature = "async")]
pub use tail::{RecordStream, WaitFor};
