//! What a partition remembers of each idempotent producer: its epoch and
//! its last few batches, so that a retried batch is answered with the
//! offsets it got the first time instead of being appended again.
//!
//! The state is rebuilt at open from the latest snapshot plus the batches
//! after it, and snapshotted when a segment rolls and when the log closes,
//! so a clean open reads no batch and an unclean one only the batches
//! after the last roll.
//!
//! Snapshot file `<20-digit offset>.snapshot` (little-endian), covering
//! every batch below `offset`:
//!
//! ```text
//! crc:u32 magic:"DLPS" version:u8 reserved:[u8;3] offset:u64 count:u32
//! count × (producer_id:i64 epoch:i16 batches:u8 reserved:u8
//!          batches × (first_sequence:i32 last_sequence:i32 base_offset:u64
//!                     last_offset:u64 max_timestamp:i64))
//! ```
//!
//! `crc` is CRC-32 of every byte after it.

use std::collections::{HashMap, VecDeque};

use crate::error::{CorruptKind, Error, Result};
use crate::record::batch::BatchHeader;

/// Batches remembered per producer, as Kafka does.
pub(crate) const RETAINED_BATCHES: usize = 5;

pub(crate) const SNAPSHOT_SUFFIX: &str = ".snapshot";
const MAGIC: [u8; 4] = *b"DLPS";
const VERSION: u8 = 1;
const HEADER_BYTES: usize = 4 + 4 + 1 + 3 + 8 + 4;
const PRODUCER_BYTES: usize = 8 + 2 + 1 + 1;
const BATCH_BYTES: usize = 4 + 4 + 8 + 8 + 8;

/// One remembered batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchRecord {
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub base_offset: u64,
    pub last_offset: u64,
    pub max_timestamp: i64,
}

impl BatchRecord {
    pub(crate) fn of(header: &BatchHeader) -> BatchRecord {
        BatchRecord {
            first_sequence: header.base_sequence,
            // The offset span, not the record count: compaction may remove
            // records from a batch but keeps its span (appends write one
            // record per offset, so the two agree until then).
            last_sequence: last_sequence(
                header.base_sequence,
                header.last_offset_delta.saturating_add(1),
            ),
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
            max_timestamp: header.max_timestamp,
        }
    }
}

/// The sequence of the last record of a batch; sequences wrap from
/// `i32::MAX` to 0, as Kafka's do.
pub(crate) fn last_sequence(first: i32, records: u32) -> i32 {
    let span = i64::from(records.saturating_sub(1));
    ((i64::from(first) + span) % (i64::from(i32::MAX) + 1)) as i32
}

fn next_sequence(last: i32) -> i32 {
    if last == i32::MAX { 0 } else { last + 1 }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Producer {
    epoch: i16,
    batches: VecDeque<BatchRecord>,
}

/// The outcome of checking a producer's batch before it is appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// New and in order: append it.
    Append,
    /// Already appended: answer with its original offsets.
    Duplicate(BatchRecord),
}

/// The producer state of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ProducerStates {
    producers: HashMap<i64, Producer>,
}

impl ProducerStates {
    /// Checks a batch from `producer_id` at `epoch` whose records carry
    /// sequences `first..=last`.
    pub(crate) fn check(
        &self,
        producer_id: i64,
        epoch: i16,
        first: i32,
        last: i32,
    ) -> Result<Check> {
        let Some(producer) = self.producers.get(&producer_id) else {
            // A producer this partition has not seen (or whose batches were
            // all deleted) may start anywhere.
            return Ok(Check::Append);
        };
        if epoch < producer.epoch {
            return Err(Error::ProducerFenced {
                producer_id,
                epoch,
                current_epoch: producer.epoch,
            });
        }
        if epoch > producer.epoch {
            if first != 0 {
                return Err(Error::OutOfOrderSequence {
                    producer_id,
                    expected: 0,
                    found: first,
                });
            }
            return Ok(Check::Append);
        }
        if let Some(original) = producer
            .batches
            .iter()
            .find(|b| b.first_sequence == first && b.last_sequence == last)
        {
            return Ok(Check::Duplicate(*original));
        }
        let expected = producer
            .batches
            .back()
            .map_or(0, |b| next_sequence(b.last_sequence));
        if first != expected {
            return Err(Error::OutOfOrderSequence {
                producer_id,
                expected,
                found: first,
            });
        }
        Ok(Check::Append)
    }

    /// Remembers an appended (or replayed) batch. A batch of an older epoch
    /// than the producer's is ignored; a newer epoch forgets the old batches.
    pub(crate) fn record(&mut self, producer_id: i64, epoch: i16, batch: BatchRecord) {
        let producer = self
            .producers
            .entry(producer_id)
            .or_insert_with(|| Producer {
                epoch,
                batches: VecDeque::new(),
            });
        if epoch < producer.epoch {
            return;
        }
        if epoch > producer.epoch {
            producer.epoch = epoch;
            producer.batches.clear();
        }
        producer.batches.push_back(batch);
        while producer.batches.len() > RETAINED_BATCHES {
            producer.batches.pop_front();
        }
    }

    /// Replays a batch read from the log.
    pub(crate) fn replay(&mut self, header: &BatchHeader) {
        if header.producer_id >= 0 {
            self.record(
                header.producer_id,
                header.producer_epoch,
                BatchRecord::of(header),
            );
        }
    }

    /// The snapshot of this state as of `offset`.
    pub(crate) fn encode(&self, offset: u64) -> Vec<u8> {
        let mut ids: Vec<_> = self.producers.keys().copied().collect();
        ids.sort_unstable();
        let mut out = Vec::with_capacity(
            HEADER_BYTES + ids.len() * (PRODUCER_BYTES + RETAINED_BATCHES * BATCH_BYTES),
        );
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&[0; 3]);
        out.extend_from_slice(&offset.to_le_bytes());
        out.extend_from_slice(&u32::try_from(ids.len()).unwrap_or(u32::MAX).to_le_bytes());
        for id in ids.into_iter().take(u32::MAX as usize) {
            let producer = &self.producers[&id];
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&producer.epoch.to_le_bytes());
            out.push(producer.batches.len() as u8);
            out.push(0);
            for b in &producer.batches {
                out.extend_from_slice(&b.first_sequence.to_le_bytes());
                out.extend_from_slice(&b.last_sequence.to_le_bytes());
                out.extend_from_slice(&b.base_offset.to_le_bytes());
                out.extend_from_slice(&b.last_offset.to_le_bytes());
                out.extend_from_slice(&b.max_timestamp.to_le_bytes());
            }
        }
        let crc = crc32fast::hash(&out[4..]);
        out[..4].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes a snapshot; returns its offset and state.
    pub(crate) fn decode(bytes: &[u8]) -> Result<(u64, ProducerStates), CorruptKind> {
        let bad = CorruptKind::Metadata;
        if bytes.len() < HEADER_BYTES {
            return Err(CorruptKind::Truncated {
                needed: HEADER_BYTES as u64,
                available: bytes.len() as u64,
            });
        }
        let stored = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"));
        let computed = crc32fast::hash(&bytes[4..]);
        if stored != computed {
            return Err(CorruptKind::Checksum { stored, computed });
        }
        if bytes[4..8] != MAGIC {
            return Err(bad("not a producer snapshot"));
        }
        if bytes[8] != VERSION {
            return Err(CorruptKind::Version(bytes[8]));
        }
        let mut at = 12;
        let mut take = |n: usize| -> Result<&[u8], CorruptKind> {
            let slice = bytes.get(at..at + n).ok_or(bad("snapshot cut short"))?;
            at += n;
            Ok(slice)
        };
        let offset = u64::from_le_bytes(take(8)?.try_into().expect("8 bytes"));
        let count = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes"));
        let mut producers = HashMap::new();
        for _ in 0..count {
            let head = take(PRODUCER_BYTES)?;
            let id = i64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
            let epoch = i16::from_le_bytes(head[8..10].try_into().expect("2 bytes"));
            let n = usize::from(head[10]);
            if n > RETAINED_BATCHES {
                return Err(bad("too many batches for a producer"));
            }
            let mut batches = VecDeque::with_capacity(n);
            for _ in 0..n {
                let b = take(BATCH_BYTES)?;
                batches.push_back(BatchRecord {
                    first_sequence: i32::from_le_bytes(b[..4].try_into().expect("4 bytes")),
                    last_sequence: i32::from_le_bytes(b[4..8].try_into().expect("4 bytes")),
                    base_offset: u64::from_le_bytes(b[8..16].try_into().expect("8 bytes")),
                    last_offset: u64::from_le_bytes(b[16..24].try_into().expect("8 bytes")),
                    max_timestamp: i64::from_le_bytes(b[24..32].try_into().expect("8 bytes")),
                });
            }
            producers.insert(id, Producer { epoch, batches });
        }
        if at != bytes.len() {
            return Err(bad("bytes after the last producer"));
        }
        Ok((offset, ProducerStates { producers }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(first: i32, records: u32, base_offset: u64) -> BatchRecord {
        BatchRecord {
            first_sequence: first,
            last_sequence: last_sequence(first, records),
            base_offset,
            last_offset: base_offset + u64::from(records) - 1,
            max_timestamp: 7,
        }
    }

    #[test]
    fn retries_are_answered_with_the_original_offsets() {
        let mut states = ProducerStates::default();
        assert_eq!(states.check(1, 0, 0, 9).unwrap(), Check::Append);
        states.record(1, 0, batch(0, 10, 100));
        assert_eq!(
            states.check(1, 0, 0, 9).unwrap(),
            Check::Duplicate(batch(0, 10, 100))
        );
        assert_eq!(states.check(1, 0, 10, 14).unwrap(), Check::Append);
    }

    #[test]
    fn a_gap_is_out_of_order_and_an_old_epoch_is_fenced() {
        let mut states = ProducerStates::default();
        states.record(1, 3, batch(0, 10, 0));
        assert!(matches!(
            states.check(1, 3, 11, 11),
            Err(Error::OutOfOrderSequence {
                expected: 10,
                found: 11,
                ..
            })
        ));
        assert!(matches!(
            states.check(1, 2, 10, 10),
            Err(Error::ProducerFenced {
                epoch: 2,
                current_epoch: 3,
                ..
            })
        ));
        // A new epoch starts again at sequence 0.
        assert!(matches!(
            states.check(1, 4, 10, 10),
            Err(Error::OutOfOrderSequence { expected: 0, .. })
        ));
        assert_eq!(states.check(1, 4, 0, 0).unwrap(), Check::Append);
        states.record(1, 4, batch(0, 1, 10));
        assert!(matches!(
            states.check(1, 3, 10, 10),
            Err(Error::ProducerFenced { .. })
        ));
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut states = ProducerStates::default();
        for i in 0..7 {
            states.record(9, 0, batch(i * 2, 2, u64::try_from(i).unwrap() * 2));
        }
        // Batches 0 and 1 are forgotten: their sequences are out of order now.
        assert!(matches!(
            states.check(9, 0, 0, 1),
            Err(Error::OutOfOrderSequence { .. })
        ));
        assert!(matches!(states.check(9, 0, 4, 5), Ok(Check::Duplicate(_))));
        assert_eq!(states.check(9, 0, 14, 15).unwrap(), Check::Append);
    }

    #[test]
    fn sequences_wrap_like_kafkas() {
        assert_eq!(last_sequence(i32::MAX, 1), i32::MAX);
        assert_eq!(last_sequence(i32::MAX, 3), 1);
        let mut states = ProducerStates::default();
        states.record(1, 0, batch(i32::MAX - 1, 2, 0));
        assert_eq!(states.check(1, 0, 0, 0).unwrap(), Check::Append);
    }

    #[test]
    fn snapshots_round_trip_and_refuse_damage() {
        let mut states = ProducerStates::default();
        for p in 0..4 {
            for i in 0..(p + 2) {
                states.record(
                    p,
                    i16::try_from(p).unwrap(),
                    batch(
                        i32::try_from(i).unwrap() * 3,
                        3,
                        u64::try_from(p * 100 + i * 3).unwrap(),
                    ),
                );
            }
        }
        let bytes = states.encode(555);
        assert_eq!(
            ProducerStates::decode(&bytes).unwrap(),
            (555, states.clone())
        );
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 1;
            assert!(ProducerStates::decode(&bad).is_err(), "flip at {at}");
        }
        for len in 0..bytes.len() {
            assert!(ProducerStates::decode(&bytes[..len]).is_err());
        }
    }
}
