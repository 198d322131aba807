//! `raft-engine` (0.4), with its default configuration.
//!
//! - Records are the entries of one raft group, at indexes 1, 2, …
//!   (offset + 1). An entry must be a protobuf message that knows its own
//!   index; `BytesValue` (a message with one `bytes` field) holds the index
//!   as 8 little-endian bytes followed by the record, so each entry is 110
//!   bytes encoded, about what a raft `Entry` (index, term, data) takes.
//! - `Engine::sync` is a no-op in 0.4.2 (it writes an empty batch, which
//!   returns early), so a sync writes a small key-value batch with
//!   `sync = true`.
//! - Batches whose entries exceed 8 KiB (`batch_compression_threshold`) are
//!   lz4-compressed by default; a batch of 100 records is about 11 KiB, so
//!   raft-engine compresses every batch of this workload, and durable-log
//!   and the others do not.

use std::path::Path;

use bytes::Bytes;
use protobuf::well_known_types::BytesValue;
use raft_engine::{Config, Engine, LogBatch, MessageExt};

use super::{Mode, Result, Subject, W1Times, error, timed_append_then_sync};
use crate::workload::{Check, Digest};

/// The raft group holding the records.
const GROUP: u64 = 1;
/// The raft group written to force an fsync.
const SYNC_GROUP: u64 = 2;
/// Bytes of the index in front of each record.
const INDEX_BYTES: usize = 8;
/// Entries fetched by each call of the scan.
const SCAN_ENTRIES: u64 = 4096;

/// How raft-engine finds an entry's index.
#[derive(Debug, Clone, Copy)]
struct Entries;

impl MessageExt for Entries {
    type Entry = BytesValue;

    fn index(entry: &BytesValue) -> u64 {
        let bytes = entry.get_value()[..INDEX_BYTES]
            .try_into()
            .expect("every entry starts with its index");
        u64::from_le_bytes(bytes)
    }
}

/// A raft-engine and the next index to append.
pub struct RaftEngine {
    engine: Engine,
    next_index: u64,
    /// Reused batch.
    batch: LogBatch,
    entries: Vec<BytesValue>,
}

impl std::fmt::Debug for RaftEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftEngine")
            .field("next_index", &self.next_index)
            .finish_non_exhaustive()
    }
}

impl RaftEngine {
    fn write(&mut self, batch: &[Bytes], sync: bool) -> Result<()> {
        self.entries.clear();
        for (i, payload) in batch.iter().enumerate() {
            let mut value = Vec::with_capacity(INDEX_BYTES + payload.len());
            value.extend_from_slice(&(self.next_index + i as u64).to_le_bytes());
            value.extend_from_slice(payload);
            let mut entry = BytesValue::new();
            entry.set_value(value);
            self.entries.push(entry);
        }
        self.batch.add_entries::<Entries>(GROUP, &self.entries)?;
        self.engine.write(&mut self.batch, sync)?;
        self.next_index += batch.len() as u64;
        Ok(())
    }

    fn append(&mut self, batch: &[Bytes]) -> Result<()> {
        self.write(batch, false)
    }

    fn sync(&mut self) -> Result<()> {
        let mut batch = LogBatch::default();
        batch.put(SYNC_GROUP, b"sync".to_vec(), vec![1])?;
        self.engine.write(&mut batch, true)?;
        Ok(())
    }
}

impl Subject for RaftEngine {
    const NAME: &'static str = "raft-engine";

    fn open(dir: &Path, _mode: Mode) -> Result<RaftEngine> {
        let config = Config {
            dir: dir
                .to_str()
                .ok_or_else(|| error("data directory is not UTF-8"))?
                .to_owned(),
            ..Config::default()
        };
        let engine = Engine::open(config)?;
        let next_index = engine.last_index(GROUP).map_or(1, |last| last + 1);
        Ok(RaftEngine {
            engine,
            next_index,
            batch: LogBatch::default(),
            entries: Vec::new(),
        })
    }

    fn append_then_sync(&mut self, records: &[Bytes]) -> Result<W1Times> {
        timed_append_then_sync(self, records, RaftEngine::append, RaftEngine::sync)
    }

    fn append_synced(&mut self, batch: &[Bytes]) -> Result<()> {
        self.write(batch, true)
    }

    fn scan(&mut self, check: Check) -> Result<Digest> {
        let mut digest = Digest::new(check);
        let (Some(first), Some(last)) = (
            self.engine.first_index(GROUP),
            self.engine.last_index(GROUP),
        ) else {
            return Ok(digest);
        };
        if first != 1 {
            return Err(error(format!("first index is {first}, not 1")));
        }
        let mut entries = Vec::with_capacity(SCAN_ENTRIES as usize);
        let mut begin = first;
        while begin <= last {
            let end = (begin + SCAN_ENTRIES).min(last + 1);
            entries.clear();
            self.engine
                .fetch_entries_to::<Entries>(GROUP, begin, end, None, &mut entries)?;
            for entry in &entries {
                digest.add(&entry.get_value()[INDEX_BYTES..]);
            }
            begin = end;
        }
        Ok(digest)
    }

    fn read(&mut self, offset: u64) -> Result<u64> {
        let entry = self
            .engine
            .get_entry::<Entries>(GROUP, offset + 1)?
            .ok_or_else(|| error(format!("offset {offset} not in the log")))?;
        Ok(Check::Touch.value(&entry.get_value()[INDEX_BYTES..]))
    }

    fn close(self) -> Result<()> {
        // Dropping the engine is its shutdown; appends were synced already.
        Ok(())
    }
}
