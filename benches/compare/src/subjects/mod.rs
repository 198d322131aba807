//! The systems measured, behind one small interface.
//!
//! Each adapter uses its system's public API the way its documentation
//! suggests, with the changes a fair comparison needs (each is noted in the
//! adapter's module documentation).

pub mod baseline;
pub mod commitlog;
pub mod durable;
pub mod okaywal;
pub mod raft;

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::stats::Figures;
use crate::workload::{BATCH_RECORDS, Check, Digest};

/// Errors of any of the systems.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether appends are durable on return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Appends may stay in the page cache until an explicit sync (W1).
    Buffered,
    /// Each batch is fsynced before its append returns (W2, the crash child).
    Synced,
}

/// Time taken by W1.
#[derive(Debug, Clone, Copy)]
pub struct W1Times {
    /// From the first append to the return of the last.
    pub appended: Duration,
    /// From the first append to the return of the final sync.
    pub synced: Duration,
}

/// One system under test, opened on one directory.
pub trait Subject: Sized {
    /// The name in the tables.
    const NAME: &'static str;

    /// Opens (creating if empty, recovering if needed) the log in `dir`.
    fn open(dir: &Path, mode: Mode) -> Result<Self>;

    /// W1: appends `records` in batches of [`BATCH_RECORDS`] without
    /// waiting for durability, then makes all of them durable.
    fn append_then_sync(&mut self, records: &[Bytes]) -> Result<W1Times>;

    /// Appends one batch; it is durable when this returns.
    fn append_synced(&mut self, batch: &[Bytes]) -> Result<()>;

    /// Reads every record from the first, in order, into a digest.
    fn scan(&mut self, check: Check) -> Result<Digest>;

    /// Reads the record at `offset` (0 is the first record appended) and
    /// returns its [`Check::Touch`] value.
    fn read(&mut self, offset: u64) -> Result<u64>;

    /// Measures, after W3 and before W4, any other way the system offers
    /// to scan the log W3 read (whose digest is `expected`), after
    /// reopening it if the first scan left something behind that a second
    /// one would profit from. None by default.
    fn other_scans(&mut self, _expected: &Digest, _figures: &mut Figures) -> Result<()> {
        Ok(())
    }

    /// Measures, on the log W4 read, any other point read the system offers
    /// (each read gives [`Subject::read`]'s value; their sum must be
    /// `expected`). None by default.
    fn other_point_reads(
        &mut self,
        _offsets: &[u64],
        _expected: u64,
        _figures: &mut Figures,
    ) -> Result<()> {
        Ok(())
    }

    /// Closes cleanly.
    fn close(self) -> Result<()>;
}

/// Times W1 for systems that have a plain append and a sync: `append` is
/// called for each batch, then `sync` once.
pub fn timed_append_then_sync<S>(
    subject: &mut S,
    records: &[Bytes],
    mut append: impl FnMut(&mut S, &[Bytes]) -> Result<()>,
    sync: impl FnOnce(&mut S) -> Result<()>,
) -> Result<W1Times> {
    let start = Instant::now();
    for batch in records.chunks(BATCH_RECORDS) {
        append(subject, batch)?;
    }
    let appended = start.elapsed();
    sync(subject)?;
    Ok(W1Times {
        appended,
        synced: start.elapsed(),
    })
}

/// An error with a message.
pub fn error(message: impl Into<String>) -> Error {
    message.into().into()
}
