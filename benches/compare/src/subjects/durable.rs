//! durable-log, one partition, default configuration except for the
//! durability policy: `Durability::None` plus one `Log::sync` for W1,
//! `Durability::Sync` for W2 and the crash child.

use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;
use durable_log::{Config, Durability, Log, Partition, Record};

use super::{Mode, Result, Subject, W1Times, error, timed_append_then_sync};
use crate::stats::{Figures, rate};
use crate::workload::{Check, Digest};

/// A durable-log with its only partition.
#[derive(Debug)]
pub struct DurableLog {
    /// Always `Some` but while reopening.
    log: Option<Log>,
    partition: Partition,
    dir: PathBuf,
    config: Config,
    /// Reused batch of records.
    records: Vec<Record>,
    mode: Mode,
}

/// How W4 reads one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointRead {
    /// `partition.reader(offset).next()`.
    Reader,
    /// `partition.read(offset, 1)`: the batch holding `offset`, decoded
    /// from `offset` on.
    Read,
}

impl DurableLog {
    /// Opens with `config` (of which the caller chose everything).
    pub fn open_with(dir: &Path, config: Config) -> Result<DurableLog> {
        let mode = if config.durability == Durability::Sync {
            Mode::Synced
        } else {
            Mode::Buffered
        };
        let log = Log::open(dir, config.clone())?;
        let partition = log.partition(0)?;
        Ok(DurableLog {
            log: Some(log),
            partition,
            dir: dir.to_path_buf(),
            config,
            records: Vec::new(),
            mode,
        })
    }

    /// The configuration used for `mode`.
    pub fn config(mode: Mode) -> Config {
        Config::default().durability(match mode {
            Mode::Buffered => Durability::None,
            Mode::Synced => Durability::Sync,
        })
    }

    /// The partition, for the workloads only durable-log runs.
    pub fn partition(&self) -> &Partition {
        &self.partition
    }

    /// Reads the record at `offset` the given way; returns its
    /// [`Check::Touch`] value.
    pub fn read_with(&self, offset: u64, how: PointRead) -> Result<u64> {
        let record = match how {
            PointRead::Reader => self
                .partition
                .reader(offset)
                .next()
                .ok_or_else(|| error(format!("offset {offset} not in the log")))??,
            PointRead::Read => self
                .partition
                .read(offset, 1)?
                .into_iter()
                .next()
                .ok_or_else(|| error(format!("offset {offset} not in the log")))?,
        };
        if record.offset != offset {
            return Err(error(format!("asked for {offset}, got {}", record.offset)));
        }
        Ok(Check::Touch.value(record.value.as_deref().unwrap_or_default()))
    }

    fn log(&self) -> Result<&Log> {
        self.log
            .as_ref()
            .ok_or_else(|| error("the log is not open"))
    }

    /// Closes the log and opens it again, with nothing read yet.
    fn reopen(&mut self) -> Result<()> {
        if let Some(log) = self.log.take() {
            log.close()?;
        }
        let log = Log::open(&self.dir, self.config.clone())?;
        self.partition = log.partition(0)?;
        self.log = Some(log);
        Ok(())
    }

    fn append(&mut self, batch: &[Bytes]) -> Result<()> {
        self.records.clear();
        self.records
            .extend(batch.iter().map(|payload| Record::new(payload.clone())));
        self.partition.append(&self.records)?;
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        Ok(self.log()?.sync()?)
    }
}

impl Subject for DurableLog {
    const NAME: &'static str = "durable-log";

    fn open(dir: &Path, mode: Mode) -> Result<DurableLog> {
        DurableLog::open_with(dir, DurableLog::config(mode))
    }

    fn append_then_sync(&mut self, records: &[Bytes]) -> Result<W1Times> {
        timed_append_then_sync(self, records, DurableLog::append, DurableLog::sync)
    }

    fn append_synced(&mut self, batch: &[Bytes]) -> Result<()> {
        self.append(batch)?;
        if self.mode == Mode::Buffered {
            self.sync()?;
        }
        Ok(())
    }

    /// Through `Partition::batches`: each batch checked once, its records
    /// borrowed from it (`partition.reader(0)`, which hands out owned
    /// records, is timed as W3 with `reader` in `durable_only`).
    fn scan(&mut self, check: Check) -> Result<Digest> {
        let mut digest = Digest::new(check);
        for batch in self.partition.batches(0) {
            for record in batch?.records() {
                digest.add(record?.value.unwrap_or_default());
            }
        }
        Ok(digest)
    }

    /// W3 through `partition.reader(0)`, after a reopen (the scan before
    /// it verified every batch; a reopened log has verified none). It
    /// leaves the log as W3 leaves it for W4: every batch verified.
    fn other_scans(&mut self, expected: &Digest, figures: &mut Figures) -> Result<()> {
        self.reopen()?;
        let start = Instant::now();
        let mut digest = Digest::new(Check::Touch);
        for record in self.partition.reader(0) {
            digest.add(record?.value.as_deref().unwrap_or_default());
        }
        let elapsed = start.elapsed();
        if digest != *expected {
            return Err(error("reader(0) read wrong records"));
        }
        figures.add(
            "w3.reader",
            Self::NAME,
            rate(digest.count as usize, elapsed),
        );
        Ok(())
    }

    fn read(&mut self, offset: u64) -> Result<u64> {
        self.read_with(offset, PointRead::Reader)
    }

    fn other_point_reads(
        &mut self,
        offsets: &[u64],
        expected: u64,
        figures: &mut Figures,
    ) -> Result<()> {
        crate::durable_only::point_reads_with_read(self, offsets, expected, figures)
    }

    fn close(self) -> Result<()> {
        Ok(self
            .log
            .ok_or_else(|| error("the log is not open"))?
            .close()?)
    }
}
