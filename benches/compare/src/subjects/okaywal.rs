//! `okaywal` (0.3): a write-ahead log, not an offset-addressed one.
//!
//! How the workload maps onto it:
//!
//! - A record is a chunk; a batch is an entry of 100 chunks. Committing an
//!   entry always fsyncs, so W1 (no sync until the end) writes all records
//!   as chunks of one entry and commits it once at the end.
//! - Checkpointing recycles a file's entries once they are handed to the
//!   `LogManager`; it is switched off (`checkpoint_after_bytes = u64::MAX`)
//!   so every record stays readable.
//! - The API has no sequential reader: the only way to read entries in order
//!   is recovery, which passes each entry to `LogManager::recover`. So
//!   opening reads every chunk (skipping chunks loses entries
//!   because `skip_remaining_bytes` skips the checksum twice) and records
//!   each chunk's `LogPosition` in memory, the index W4 reads through with
//!   `read_at`; and a scan is a reopen.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use okaywal::{
    Configuration, Entry, EntryId, LogManager, LogPosition, ReadChunkResult, SegmentReader,
    WriteAheadLog,
};

use super::{Mode, Result, Subject, W1Times, error};
use crate::workload::{BATCH_RECORDS, Check, Digest};

/// What a recovery found: each chunk's position and a digest of the chunks.
#[derive(Debug)]
struct Recovered {
    positions: Vec<LogPosition>,
    digest: Digest,
}

/// The `LogManager`: reads every chunk of every complete entry.
#[derive(Debug)]
struct Replay {
    found: Arc<Mutex<Recovered>>,
    check: Check,
    /// Chunks of the entry being read, kept until its end is seen.
    pending: Vec<(LogPosition, u64)>,
    buffer: Vec<u8>,
}

impl Replay {
    /// Reads every chunk of `entry` into `pending`; returns whether the
    /// entry is complete.
    fn read_entry(&mut self, entry: &mut Entry<'_>) -> io::Result<bool> {
        loop {
            match entry.read_chunk()? {
                ReadChunkResult::Chunk(mut chunk) => {
                    let position = chunk.log_position();
                    self.buffer.clear();
                    chunk.read_to_end(&mut self.buffer)?;
                    if chunk.bytes_remaining() > 0 {
                        return Ok(false);
                    }
                    if !chunk.check_crc()? {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, "chunk crc"));
                    }
                    self.pending
                        .push((position, self.check.value(&self.buffer)));
                }
                ReadChunkResult::EndOfEntry => return Ok(true),
                ReadChunkResult::AbortedEntry => return Ok(false),
            }
        }
    }
}

impl LogManager for Replay {
    fn recover(&mut self, entry: &mut Entry<'_>) -> io::Result<()> {
        self.pending.clear();
        // okaywal's documentation: an entry that ends early (an aborted
        // entry, or the end of the file inside a chunk) was torn by a crash
        // and is ignored.
        let complete = match self.read_entry(entry) {
            Ok(complete) => complete,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => false,
            Err(e) => return Err(e),
        };
        if complete {
            let mut found = self.found.lock().unwrap_or_else(PoisonError::into_inner);
            for &(position, value) in &self.pending {
                found.positions.push(position);
                found.digest.add_value(value);
            }
        }
        Ok(())
    }

    fn checkpoint_to(
        &mut self,
        _last_checkpointed_id: EntryId,
        _checkpointed_entries: &mut SegmentReader,
        _wal: &WriteAheadLog,
    ) -> io::Result<()> {
        // Never called: checkpointing is switched off.
        Ok(())
    }
}

/// An okaywal log and the positions of its chunks.
#[derive(Debug)]
pub struct OkayWal {
    /// Always `Some` but while a scan reopens the log.
    wal: Option<WriteAheadLog>,
    dir: PathBuf,
    positions: Vec<LogPosition>,
    /// Digest of what the last recovery read.
    recovered: Digest,
    buffer: Vec<u8>,
}

impl OkayWal {
    fn open_checked(dir: &Path, check: Check) -> Result<OkayWal> {
        let found = Arc::new(Mutex::new(Recovered {
            positions: Vec::new(),
            digest: Digest::new(check),
        }));
        let manager = Replay {
            found: found.clone(),
            check,
            pending: Vec::new(),
            buffer: Vec::new(),
        };
        let wal = Configuration::default_for(dir)
            .checkpoint_after_bytes(u64::MAX)
            .open(manager)?;
        let found = std::mem::replace(
            &mut *found.lock().unwrap_or_else(PoisonError::into_inner),
            Recovered {
                positions: Vec::new(),
                digest: Digest::new(check),
            },
        );
        Ok(OkayWal {
            wal: Some(wal),
            dir: dir.to_path_buf(),
            positions: found.positions,
            recovered: found.digest,
            buffer: Vec::new(),
        })
    }

    /// Writes `batch` as one entry and commits (fsyncs) it.
    fn append_entry(&mut self, batch: &[Bytes]) -> Result<()> {
        let wal = self.wal.as_ref().expect("the log is open");
        let mut entry = wal.begin_entry()?;
        for payload in batch {
            self.positions.push(entry.write_chunk(payload)?.position);
        }
        entry.commit()?;
        Ok(())
    }
}

impl Subject for OkayWal {
    const NAME: &'static str = "okaywal";

    fn open(dir: &Path, _mode: Mode) -> Result<OkayWal> {
        OkayWal::open_checked(dir, Check::Touch)
    }

    fn append_then_sync(&mut self, records: &[Bytes]) -> Result<W1Times> {
        let start = Instant::now();
        let wal = self.wal.as_ref().expect("the log is open");
        let mut entry = wal.begin_entry()?;
        for batch in records.chunks(BATCH_RECORDS) {
            for payload in batch {
                self.positions.push(entry.write_chunk(payload)?.position);
            }
        }
        let appended = start.elapsed();
        entry.commit()?;
        Ok(W1Times {
            appended,
            synced: start.elapsed(),
        })
    }

    fn append_synced(&mut self, batch: &[Bytes]) -> Result<()> {
        self.append_entry(batch)
    }

    fn scan(&mut self, check: Check) -> Result<Digest> {
        if let Some(wal) = self.wal.take() {
            wal.shutdown()?;
        }
        *self = OkayWal::open_checked(&self.dir, check)?;
        Ok(self.recovered)
    }

    fn read(&mut self, offset: u64) -> Result<u64> {
        let position = *self
            .positions
            .get(usize::try_from(offset)?)
            .ok_or_else(|| error(format!("offset {offset} not in the log")))?;
        let wal = self.wal.as_ref().expect("the log is open");
        let mut reader = wal.read_at(position)?;
        self.buffer.resize(reader.chunk_length() as usize, 0);
        reader.read_exact(&mut self.buffer)?;
        if !reader.crc_is_valid()? {
            return Err(error(format!("checksum mismatch at offset {offset}")));
        }
        Ok(Check::Touch.value(&self.buffer))
    }

    fn close(mut self) -> Result<()> {
        match self.wal.take() {
            Some(wal) => Ok(wal.shutdown()?),
            None => Ok(()),
        }
    }
}
