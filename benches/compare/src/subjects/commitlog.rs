//! The `commitlog` crate (0.2).
//!
//! Two changes for a fair comparison:
//!
//! - `CommitLog::flush` never fsyncs segment data (it calls `File::flush`,
//!   a no-op on a file), so every sync here is `flush` followed by an
//!   `fdatasync` of the active segment file.
//! - Reopening a log whose active index is exactly full makes the next
//!   append panic. The index starts at `index_max_items` entries and grows
//!   by half each time it fills; at the default 100,000 it is exactly full
//!   after any multiple of 100,000 records, which whole batches of 100 hit.
//!   With 100,001 the sizes it passes through (100,001, 150,001, 225,001,
//!   337,501, 506,251, 759,376, 1,139,064 entries) are never a multiple of
//!   100, so whole batches never fill it exactly.
//!
//! The log rolls to a new segment at 1 GB; the workload stays below that, so
//! the active segment is always the first one, whose file is fsynced.

use std::fs::File;
use std::path::Path;

use bytes::Bytes;
use commitlog::message::{MessageBuf, MessageSet};
use commitlog::{CommitLog, LogOptions, ReadLimit};

use super::{Mode, Result, Subject, W1Times, error, timed_append_then_sync};
use crate::workload::{Check, Digest};

/// Initial index capacity; see the module documentation.
const INDEX_MAX_ITEMS: usize = 100_001;
/// Bytes asked for by each read of the scan.
const SCAN_READ_BYTES: usize = 1 << 20;
/// Bytes asked for by a point read: one message (20-byte header and a
/// 100-byte payload) with room to spare.
const POINT_READ_BYTES: usize = 256;
/// Name of the first segment file.
const FIRST_SEGMENT: &str = "00000000000000000000.log";

/// A commitlog and its segment file, for fsync.
pub struct CommitLogSubject {
    log: CommitLog,
    segment: File,
    /// Reused batch.
    batch: MessageBuf,
}

impl std::fmt::Debug for CommitLogSubject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitLogSubject")
            .field("next_offset", &self.log.next_offset())
            .finish_non_exhaustive()
    }
}

impl CommitLogSubject {
    fn append(&mut self, batch: &[Bytes]) -> Result<()> {
        self.batch.clear();
        for payload in batch {
            self.batch
                .push(payload)
                .map_err(|e| error(format!("{e:?}")))?;
        }
        self.log.append(&mut self.batch)?;
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        self.log.flush()?;
        self.segment.sync_data()?;
        Ok(())
    }
}

impl Subject for CommitLogSubject {
    const NAME: &'static str = "commitlog";

    fn open(dir: &Path, _mode: Mode) -> Result<CommitLogSubject> {
        let mut options = LogOptions::new(dir);
        options.index_max_items(INDEX_MAX_ITEMS);
        let log = CommitLog::new(options)?;
        let segment = File::open(dir.join(FIRST_SEGMENT))?;
        Ok(CommitLogSubject {
            log,
            segment,
            batch: MessageBuf::default(),
        })
    }

    fn append_then_sync(&mut self, records: &[Bytes]) -> Result<W1Times> {
        timed_append_then_sync(
            self,
            records,
            CommitLogSubject::append,
            CommitLogSubject::sync,
        )
    }

    fn append_synced(&mut self, batch: &[Bytes]) -> Result<()> {
        self.append(batch)?;
        self.sync()
    }

    fn scan(&mut self, check: Check) -> Result<Digest> {
        let mut digest = Digest::new(check);
        let end = self.log.next_offset();
        let mut next = 0;
        while next < end {
            let messages = self.log.read(next, ReadLimit::max_bytes(SCAN_READ_BYTES))?;
            if messages.len() == 0 {
                return Err(error(format!(
                    "read at {next} returned nothing, log ends at {end}"
                )));
            }
            for message in messages.iter() {
                if message.offset() != next {
                    return Err(error(format!(
                        "expected offset {next}, found {}",
                        message.offset()
                    )));
                }
                digest.add(message.payload());
                next += 1;
            }
        }
        Ok(digest)
    }

    fn read(&mut self, offset: u64) -> Result<u64> {
        let messages = self
            .log
            .read(offset, ReadLimit::max_bytes(POINT_READ_BYTES))?;
        let message = messages
            .iter()
            .next()
            .ok_or_else(|| error(format!("offset {offset} not in the log")))?;
        if message.offset() != offset {
            return Err(error(format!(
                "asked for {offset}, got {}",
                message.offset()
            )));
        }
        Ok(Check::Touch.value(message.payload()))
    }

    fn close(mut self) -> Result<()> {
        self.sync()
    }
}
