//! Choosing a partition for a record, the way Kafka's producer does.
//!
//! Keyed records go to `to_positive(murmur2(key)) % partitions`, bit for bit
//! what Kafka's default partitioner computes, so a key lands on the same
//! partition number here as it would in a Kafka topic with the same partition
//! count. Unkeyed records use a [`StickyPartitioner`] (KIP-794): they stay on
//! one partition until a byte budget is spent there, which keeps batches large,
//! then move on to another partition so load still evens out over time.

use std::sync::atomic::{AtomicU64, Ordering};

/// Seed of Kafka's murmur2; fixed so hashes match Kafka's.
const MURMUR2_SEED: u32 = 0x9747_b28c;
/// Multiplicative mixing constant of murmur2.
const MURMUR2_M: u32 = 0x5bd1_e995;
/// Shift of murmur2's per-chunk mixing step.
const MURMUR2_R: u32 = 24;

/// Kafka's 32-bit murmur2 hash of `data` (`Utils.murmur2`).
///
/// Kept bit-exact with Kafka, including its signed `i32` result, because the
/// partition a key maps to is part of the data layout users may rely on when
/// moving between this log and Kafka.
pub(crate) fn murmur2(data: &[u8]) -> i32 {
    // Kafka mixes the length in as a Java `int`; keys never approach 2 GiB,
    // and truncating matches Java's behaviour for the lengths it can see.
    let mut h = MURMUR2_SEED ^ (data.len() as u32);

    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(MURMUR2_M);
        k ^= k >> MURMUR2_R;
        k = k.wrapping_mul(MURMUR2_M);
        h = h.wrapping_mul(MURMUR2_M);
        h ^= k;
    }

    // The 1 to 3 trailing bytes, each folded in at its little-endian position
    // (the C original's switch with fallthrough), then one multiply.
    let tail = chunks.remainder();
    if !tail.is_empty() {
        for (i, &byte) in tail.iter().enumerate() {
            h ^= u32::from(byte) << (8 * i);
        }
        h = h.wrapping_mul(MURMUR2_M);
    }

    h ^= h >> 13;
    h = h.wrapping_mul(MURMUR2_M);
    h ^= h >> 15;

    // Reinterpret the bits as Java's signed int.
    h.cast_signed()
}

/// Clears the sign bit of `x` (Kafka's `Utils.toPositive`).
///
/// Kafka masks rather than taking `abs`, since `abs(i32::MIN)` overflows;
/// doing the same keeps partition numbers identical to Kafka's.
pub(crate) fn to_positive(x: i32) -> u32 {
    (x & 0x7fff_ffff).cast_unsigned()
}

/// The partition, out of `partitions`, that a record with this key goes to.
///
/// Same formula as Kafka's `BuiltInPartitioner.partitionForKey`, so every
/// record with a given key lands in one partition (preserving per-key order)
/// and on the same partition number Kafka would choose.
///
/// # Panics
///
/// If `partitions` is 0; a log always has at least one partition.
pub(crate) fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    to_positive(murmur2(key)) % partitions
}

/// Picks partitions for unkeyed records, sticking to one until a byte budget
/// is spent there (Kafka's KIP-794 "uniform sticky" partitioner).
///
/// Sending consecutive unkeyed records to one partition lets them share
/// batches (fewer, larger writes), while switching after `switch_bytes` keeps
/// partitions evenly loaded by bytes, not by record count.
///
/// Lock-free: the current partition and the bytes routed to it live in one
/// `AtomicU64`, updated with compare-and-swap, so concurrent appenders agree on
/// when a switch happens and exactly one of them performs it.
#[derive(Debug)]
pub(crate) struct StickyPartitioner {
    /// Number of partitions to choose from; at least 1.
    partitions: u32,
    /// Bytes routed to a partition before moving on; at most `u32::MAX` so it
    /// fits the counter packed into `state`. 0 switches after every record.
    switch_bytes: u32,
    /// Current partition in the high 32 bits, bytes routed to it since the
    /// last switch in the low 32 bits (below `switch_bytes`, or 0 when
    /// `switch_bytes` is 0).
    state: AtomicU64,
    /// Counter of the splitmix64 generator that picks the next partition.
    rng: AtomicU64,
}

impl StickyPartitioner {
    /// A partitioner over `partitions` partitions that moves on after
    /// `switch_bytes` bytes; `seed` makes the sequence of choices reproducible.
    ///
    /// `partitions == 0` is treated as 1, and `switch_bytes` is capped at
    /// `u32::MAX` (0 means switch after every record), so construction never
    /// fails and [`partition`](Self::partition) never panics.
    pub(crate) fn new(partitions: u32, switch_bytes: u64, seed: u64) -> Self {
        let partitions = partitions.max(1);
        let switch_bytes = u32::try_from(switch_bytes).unwrap_or(u32::MAX);
        let rng = AtomicU64::new(seed);
        let first = Self::random_below(&rng, partitions);
        Self {
            partitions,
            switch_bytes,
            state: AtomicU64::new(pack(first, 0)),
            rng,
        }
    }

    /// The partition for an unkeyed record of `record_bytes` bytes, counting
    /// those bytes against the current partition's budget.
    ///
    /// The record that uses up the budget still goes to the current partition
    /// (as in Kafka); the records after it go to a newly chosen partition,
    /// different from the current one whenever there is more than one.
    pub(crate) fn partition(&self, record_bytes: u64) -> u32 {
        let mut current = self.state.load(Ordering::Relaxed);
        loop {
            let (partition, routed) = unpack(current);
            let total = u64::from(routed).saturating_add(record_bytes);
            let next = if total >= u64::from(self.switch_bytes) {
                pack(self.next_partition(partition), 0)
            } else {
                // `total < switch_bytes <= u32::MAX`, so the cast is lossless.
                pack(partition, total as u32)
            };
            // Only the ordering of updates to `state` itself matters; it
            // guards no other memory.
            match self.state.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return partition,
                Err(actual) => current = actual,
            }
        }
    }

    /// A partition chosen uniformly among those other than `current`, or 0
    /// when there is only one partition.
    fn next_partition(&self, current: u32) -> u32 {
        if self.partitions == 1 {
            return 0;
        }
        // Skip ahead by 1..partitions, which never lands back on `current`.
        let step = 1 + Self::random_below(&self.rng, self.partitions - 1);
        // Widen so `current + step` cannot overflow for huge partition counts.
        ((u64::from(current) + u64::from(step)) % u64::from(self.partitions)) as u32
    }

    /// A pseudo-random number in `0..bound` (`bound > 0`) from the shared
    /// splitmix64 counter; quality only needs to be good enough to spread
    /// load, and a counter-based generator stays lock-free under contention.
    fn random_below(rng: &AtomicU64, bound: u32) -> u32 {
        let counter = rng
            .fetch_add(SPLITMIX_GAMMA, Ordering::Relaxed)
            .wrapping_add(SPLITMIX_GAMMA);
        // Multiply-shift maps the 64-bit output onto `0..bound` without the
        // bias a plain `%` has for large bounds.
        ((u128::from(splitmix64(counter)) * u128::from(bound)) >> 64) as u32
    }
}

/// Increment of the splitmix64 counter (the golden-ratio constant).
const SPLITMIX_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// splitmix64's output function: scrambles a counter value into a
/// well-distributed 64-bit number.
fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Packs a partition and its routed byte count into one atomic word.
fn pack(partition: u32, routed: u32) -> u64 {
    (u64::from(partition) << 32) | u64::from(routed)
}

/// Splits a word made by [`pack`] back into partition and routed bytes.
fn unpack(word: u64) -> (u32, u32) {
    ((word >> 32) as u32, word as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Arc;

    /// Kafka's `UtilsTest.testMurmur2` vectors
    /// (clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java).
    const KAFKA_VECTORS: &[(&[u8], i32)] = &[
        (b"21", -973932308),
        (b"foobar", -790332482),
        (b"a-little-bit-long-string", -985981536),
        (b"a-little-bit-longer-string", -1486304829),
        (
            b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
            -58897971,
        ),
        (b"abc", 479470107),
    ];

    #[test]
    fn murmur2_matches_kafka_vectors() {
        for &(input, expected) in KAFKA_VECTORS {
            assert_eq!(
                murmur2(input),
                expected,
                "murmur2({:?})",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn murmur2_covers_every_tail_length() {
        // Lengths 0..=7 exercise an empty input and tails of 0 to 3 bytes;
        // the hashes must all differ from one another.
        let data = b"abcdefg";
        let hashes: HashSet<i32> = (0..=data.len()).map(|n| murmur2(&data[..n])).collect();
        assert_eq!(hashes.len(), data.len() + 1);
    }

    #[test]
    fn to_positive_masks_the_sign_bit() {
        assert_eq!(to_positive(0), 0);
        assert_eq!(to_positive(5), 5);
        assert_eq!(to_positive(-1), 0x7fff_ffff);
        assert_eq!(to_positive(i32::MIN), 0);
        assert_eq!(to_positive(i32::MAX), 0x7fff_ffff);
        assert_eq!(to_positive(-973932308), 1_173_551_340);
    }

    #[test]
    fn partition_for_key_is_kafkas_formula() {
        // Expected values worked out from the Kafka vectors above:
        // to_positive(h) % n.
        let known: &[(&[u8], u32, u32)] = &[
            (b"21", 3, 1_173_551_340 % 3),
            (b"21", 10, 0),
            (b"foobar", 10, 1_357_151_166 % 10),
            (b"foobar", 7, 1_357_151_166 % 7),
            (b"abc", 12, 479_470_107 % 12),
            (b"a-little-bit-long-string", 16, 1_161_502_112 % 16),
        ];
        for &(key, n, expected) in known {
            assert_eq!(partition_for_key(key, n), expected);
            assert_eq!(partition_for_key(key, n), to_positive(murmur2(key)) % n);
        }
        for &(key, _) in KAFKA_VECTORS {
            assert_eq!(partition_for_key(key, 1), 0);
        }
    }

    #[test]
    fn sticky_stays_until_budget_then_switches() {
        let p = StickyPartitioner::new(8, 100, 42);
        let mut current = p.partition(10);
        for _switch in 0..50 {
            // 10 records of 10 bytes fill the 100-byte budget; the first of
            // them was taken above or at the end of the previous round.
            for _ in 1..10 {
                assert_eq!(p.partition(10), current);
            }
            let next = p.partition(10);
            assert_ne!(next, current, "must move to a different partition");
            assert!(next < 8);
            current = next;
        }
    }

    #[test]
    fn sticky_record_crossing_budget_stays_then_switches() {
        let p = StickyPartitioner::new(4, 100, 7);
        let first = p.partition(60);
        // Crosses the budget: still on the current partition.
        assert_eq!(p.partition(60), first);
        assert_ne!(p.partition(1), first);

        // A record larger than the whole budget is sent, then we move on.
        let q = StickyPartitioner::new(4, 100, 7);
        let a = q.partition(u64::MAX);
        let b = q.partition(u64::MAX);
        assert_ne!(a, b);
    }

    #[test]
    fn sticky_single_partition_is_always_zero() {
        for switch_bytes in [0, 1, 100, u64::MAX] {
            let p = StickyPartitioner::new(1, switch_bytes, 3);
            for size in [0, 1, 50, 1000, u64::MAX] {
                assert_eq!(p.partition(size), 0);
            }
        }
        // Zero partitions is treated as one rather than panicking.
        let p = StickyPartitioner::new(0, 10, 3);
        assert_eq!(p.partition(100), 0);
        assert_eq!(p.partition(100), 0);
    }

    #[test]
    fn sticky_zero_budget_switches_every_record() {
        let p = StickyPartitioner::new(3, 0, 9);
        let mut prev = p.partition(0);
        for _ in 0..100 {
            let next = p.partition(0);
            assert_ne!(next, prev);
            prev = next;
        }
    }

    #[test]
    fn sticky_spreads_over_all_partitions() {
        let n = 16;
        let p = StickyPartitioner::new(n, 1, 0xdead_beef);
        let mut counts = vec![0u32; n as usize];
        for _ in 0..16_000 {
            counts[p.partition(1) as usize] += 1;
        }
        // Every partition is used, and none is starved or hogged.
        for &c in &counts {
            assert!((500..=1500).contains(&c), "uneven spread: {counts:?}");
        }
    }

    #[test]
    fn sticky_is_reproducible_from_seed() {
        let a = StickyPartitioner::new(10, 5, 1234);
        let b = StickyPartitioner::new(10, 5, 1234);
        let seq_a: Vec<u32> = (0..200).map(|_| a.partition(3)).collect();
        let seq_b: Vec<u32> = (0..200).map(|_| b.partition(3)).collect();
        assert_eq!(seq_a, seq_b);
    }

    #[test]
    fn sticky_concurrent_runs_respect_budget() {
        // With every record exactly 1 byte and a 64-byte budget, each switch
        // happens after exactly 64 records no matter how threads interleave,
        // so the total per partition is a multiple of 64 except for the last.
        let threads = 8;
        let per_thread = 64 * 125;
        let p = Arc::new(StickyPartitioner::new(5, 64, 77));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let p = Arc::clone(&p);
                std::thread::spawn(move || {
                    let mut counts = [0u64; 5];
                    for _ in 0..per_thread {
                        counts[p.partition(1) as usize] += 1;
                    }
                    counts
                })
            })
            .collect();
        let mut totals = [0u64; 5];
        for h in handles {
            for (t, c) in totals.iter_mut().zip(h.join().unwrap()) {
                *t += c;
            }
        }
        assert_eq!(totals.iter().sum::<u64>(), (threads * per_thread) as u64);
        for &t in &totals {
            assert_eq!(t % 64, 0, "partial stint in totals {totals:?}");
        }
        // The counter was reset exactly at the last switch.
        assert_eq!(unpack(p.state.load(Ordering::Relaxed)).1, 0);
    }
}
