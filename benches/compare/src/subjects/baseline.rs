//! The naive baseline: what an application would write by hand.
//!
//! One file of frames `[u32 length][u32 crc32 of the payload][payload]`
//! (little-endian), one `write` per batch, `fdatasync` where the workload
//! syncs, and an in-memory `Vec<u64>` of frame positions rebuilt by reading
//! the whole file on open. A frame that is torn or fails its checksum ends
//! the log: open truncates the file there.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use bytes::Bytes;

use super::{Mode, Result, Subject, W1Times, error, timed_append_then_sync};
use crate::workload::{Check, Digest};

/// Bytes before each payload: length and checksum.
const FRAME_HEADER_BYTES: usize = 8;
/// A length above this is garbage, not a frame.
const MAX_PAYLOAD_BYTES: usize = 1 << 20;
/// Read size of the sequential scans.
const SCAN_BUFFER_BYTES: usize = 1 << 20;

/// The baseline log.
#[derive(Debug)]
pub struct Baseline {
    file: File,
    /// Position of each frame, by offset.
    positions: Vec<u64>,
    /// End of the last whole frame.
    end: u64,
    /// Reused for encoding a batch and for point reads.
    buffer: Vec<u8>,
    mode: Mode,
}

impl Baseline {
    fn append(&mut self, batch: &[Bytes]) -> Result<()> {
        self.buffer.clear();
        for payload in batch {
            self.positions.push(self.end + self.buffer.len() as u64);
            let length = u32::try_from(payload.len())?;
            self.buffer.extend_from_slice(&length.to_le_bytes());
            self.buffer
                .extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
            self.buffer.extend_from_slice(payload);
        }
        self.file.write_all(&self.buffer)?;
        self.end += self.buffer.len() as u64;
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        Ok(self.file.sync_data()?)
    }
}

impl Subject for Baseline {
    const NAME: &'static str = "baseline";

    fn open(dir: &Path, mode: Mode) -> Result<Baseline> {
        fs::create_dir_all(dir)?;
        let file = File::options()
            .read(true)
            .append(true)
            .create(true)
            .open(dir.join("log"))?;
        let mut positions = Vec::new();
        let end = scan_frames(&file, |position, _| positions.push(position))?;
        if end < file.metadata()?.len() {
            // A torn or damaged tail: cut it so appends follow whole frames.
            file.set_len(end)?;
            file.sync_data()?;
        }
        Ok(Baseline {
            file,
            positions,
            end,
            buffer: Vec::new(),
            mode,
        })
    }

    fn append_then_sync(&mut self, records: &[Bytes]) -> Result<W1Times> {
        timed_append_then_sync(self, records, Baseline::append, Baseline::sync)
    }

    fn append_synced(&mut self, batch: &[Bytes]) -> Result<()> {
        self.append(batch)?;
        self.sync()
    }

    fn scan(&mut self, check: Check) -> Result<Digest> {
        let mut digest = Digest::new(check);
        let end = scan_frames(&self.file, |_, payload| digest.add(payload))?;
        if end != self.end {
            return Err(error(format!(
                "scan stopped at {end}, log ends at {}",
                self.end
            )));
        }
        Ok(digest)
    }

    fn read(&mut self, offset: u64) -> Result<u64> {
        let index = usize::try_from(offset)?;
        let position = *self
            .positions
            .get(index)
            .ok_or_else(|| error(format!("offset {offset} not in the log")))?;
        let next = self.positions.get(index + 1).copied().unwrap_or(self.end);
        self.buffer.resize(usize::try_from(next - position)?, 0);
        self.file.read_exact_at(&mut self.buffer, position)?;
        let (header, payload) = self.buffer.split_at(FRAME_HEADER_BYTES);
        let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        if crc32fast::hash(payload) != crc {
            return Err(error(format!("checksum mismatch at offset {offset}")));
        }
        Ok(Check::Touch.value(payload))
    }

    fn close(mut self) -> Result<()> {
        if self.mode == Mode::Buffered {
            self.sync()?;
        }
        Ok(())
    }
}

/// Reads `file` from the start, calling `visit(position, payload)` for each
/// whole frame with a valid checksum, and returns the end of the last one.
fn scan_frames(file: &File, mut visit: impl FnMut(u64, &[u8])) -> Result<u64> {
    let mut buffer = vec![0u8; SCAN_BUFFER_BYTES];
    // File position of `buffer[0]`; `buffer[start..filled]` is unparsed.
    let mut base = 0u64;
    let mut start = 0usize;
    let mut filled = 0usize;
    loop {
        while filled - start >= FRAME_HEADER_BYTES {
            let header = &buffer[start..start + FRAME_HEADER_BYTES];
            let length = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
            let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
            if length > MAX_PAYLOAD_BYTES {
                return Ok(base + start as u64);
            }
            let frame_end = start + FRAME_HEADER_BYTES + length;
            if frame_end > filled {
                break;
            }
            let payload = &buffer[start + FRAME_HEADER_BYTES..frame_end];
            if crc32fast::hash(payload) != crc {
                return Ok(base + start as u64);
            }
            visit(base + start as u64, payload);
            start = frame_end;
        }
        // Keep the partial frame and read on after it.
        buffer.copy_within(start..filled, 0);
        base += start as u64;
        filled -= start;
        start = 0;
        let read = file.read_at(&mut buffer[filled..], base + filled as u64)?;
        if read == 0 {
            return Ok(base);
        }
        filled += read;
    }
}
