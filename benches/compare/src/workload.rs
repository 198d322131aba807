//! The workload every system runs: its size (from the environment), the
//! fixed-seed records, and the digests used to check what comes back.

use std::path::PathBuf;

use bytes::Bytes;

/// Every record's size in bytes.
pub const RECORD_BYTES: usize = 100;
/// Records per appended batch.
pub const BATCH_RECORDS: usize = 100;
/// Seed of the record generator.
const RECORD_SEED: u64 = 0x005E_ED0F_10C5;
/// Seed of the random offsets read by W4.
pub const READ_SEED: u64 = 0x00FF_5E75;

/// Sizes of the run, read from `COMPARE_*` environment variables.
#[derive(Debug, Clone)]
pub struct Params {
    /// Records appended by W1 (`COMPARE_RECORDS`, default 1,000,000),
    /// rounded up to whole batches.
    pub records: usize,
    /// Batches appended by W2 and W6, each synced (`COMPARE_W2_BATCHES`,
    /// default 20,000, and never more than W1's batches).
    pub w2_batches: usize,
    /// Random reads of W4 (`COMPARE_READS`, default 100,000).
    pub reads: usize,
    /// Synced batches the crash child is acknowledged for before it is
    /// killed (`COMPARE_KILL_BATCHES`, default 1,000).
    pub kill_batches: usize,
    /// Single-record appends of W7 (`COMPARE_W7_RECORDS`, default 100,000).
    pub w7_records: usize,
    /// Gap between two W7 appends in microseconds (`COMPARE_W7_PACE_US`,
    /// default 20).
    pub w7_pace_us: u64,
    /// Bytes written by the machine's write-bandwidth probe
    /// (`COMPARE_MACHINE_MB`, default 1024 MiB).
    pub machine_bytes: usize,
    /// 4 KiB append + fdatasync pairs timed by the machine probe
    /// (`COMPARE_FSYNC_OPS`, default 2,000).
    pub fsync_ops: usize,
    /// Runs of everything; each figure is the median (`COMPARE_RUNS`,
    /// default 3).
    pub runs: usize,
    /// Systems to run, by name (`COMPARE_SYSTEMS`, comma-separated; default
    /// all). `durable-log-only` names W6, W7 and the codecs, `memory` the
    /// peak memory of a writer and a reader, `machine` the machine's limits.
    pub systems: Option<Vec<String>>,
    /// Where the systems keep their data (`COMPARE_DIR`, default
    /// `./target/compare-data`). Emptied before and after each system.
    pub dir: PathBuf,
}

impl Params {
    /// Reads the parameters from the environment.
    pub fn from_env() -> Params {
        let records = env_usize("COMPARE_RECORDS", 1_000_000).max(BATCH_RECORDS);
        let records = records.div_ceil(BATCH_RECORDS) * BATCH_RECORDS;
        let batches = records / BATCH_RECORDS;
        Params {
            records,
            w2_batches: env_usize("COMPARE_W2_BATCHES", 20_000).clamp(1, batches),
            reads: env_usize("COMPARE_READS", 100_000).max(1),
            kill_batches: env_usize("COMPARE_KILL_BATCHES", 1_000).max(1),
            w7_records: env_usize("COMPARE_W7_RECORDS", 100_000).max(1),
            w7_pace_us: env_usize("COMPARE_W7_PACE_US", 20) as u64,
            machine_bytes: env_usize("COMPARE_MACHINE_MB", 1024).max(1) << 20,
            fsync_ops: env_usize("COMPARE_FSYNC_OPS", 2_000).max(1),
            runs: env_usize("COMPARE_RUNS", 3).max(1),
            systems: std::env::var("COMPARE_SYSTEMS")
                .ok()
                .map(|list| list.split(',').map(|s| s.trim().to_owned()).collect()),
            dir: std::env::var_os("COMPARE_DIR")
                .map_or_else(|| PathBuf::from("target/compare-data"), PathBuf::from),
        }
    }
}

impl Params {
    /// Whether `system` is to be run.
    pub fn runs_system(&self, system: &str) -> bool {
        self.systems
            .as_ref()
            .is_none_or(|list| list.iter().any(|s| s == system))
    }
}

/// An unsigned integer from the environment, or `default` when unset.
///
/// # Panics
///
/// When the variable is set to something that is not a number.
pub fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(value) => value
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
        Err(_) => default,
    }
}

/// SplitMix64: small, fast and good enough to pick words and offsets.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound` > 0); the modulo bias is irrelevant
    /// here.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }

    fn pick<'a>(&mut self, words: &[&'a str]) -> &'a str {
        words[self.below(words.len() as u64) as usize]
    }
}

/// The first `count` records of the workload: 100-byte JSON-like log lines
/// (a millisecond timestamp that moves forward, a level, a service, a
/// request id, an HTTP-style message and a duration), each ending in a
/// newline. All of them are slices of one buffer, so cloning one is cheap.
pub fn records(count: usize) -> Vec<Bytes> {
    const LEVELS: [&str; 4] = ["INFO", "INFO", "WARN", "DEBUG"];
    const SERVICES: [&str; 6] = ["api", "auth", "billing", "search", "cart", "gateway"];
    const METHODS: [&str; 4] = ["GET", "GET", "POST", "PUT"];
    const PATHS: [&str; 8] = [
        "/v1/users",
        "/v1/orders",
        "/v1/cart",
        "/v1/items",
        "/login",
        "/v2/search",
        "/health",
        "/v1/pay",
    ];
    const STATUSES: [&str; 5] = ["200", "200", "201", "404", "500"];
    let mut rng = SplitMix64::new(RECORD_SEED);
    let mut buffer = Vec::with_capacity(count * RECORD_BYTES);
    let mut ts_ms = 1_767_225_600_000u64;
    let mut line = String::with_capacity(2 * RECORD_BYTES);
    for _ in 0..count {
        use std::fmt::Write as _;
        ts_ms += rng.below(4);
        line.clear();
        write!(
            line,
            r#"{{"ts":{ts_ms},"lvl":"{}","svc":"{}","req":"{:08x}","msg":"{} {}/{} {}","ms":{}}}"#,
            rng.pick(&LEVELS),
            rng.pick(&SERVICES),
            rng.next_u64() as u32,
            rng.pick(&METHODS),
            rng.pick(&PATHS),
            rng.below(10_000),
            rng.pick(&STATUSES),
            rng.below(500),
        )
        .expect("writing to a String");
        // Pad (or cut) to the fixed size, keeping the final newline.
        let text = &line.as_bytes()[..line.len().min(RECORD_BYTES - 1)];
        buffer.extend_from_slice(text);
        buffer.resize(buffer.len() + RECORD_BYTES - 1 - text.len(), b' ');
        buffer.push(b'\n');
    }
    let buffer = Bytes::from(buffer);
    (0..count)
        .map(|i| buffer.slice(i * RECORD_BYTES..(i + 1) * RECORD_BYTES))
        .collect()
}

/// How much of each record a read-back digest looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The length and a few bytes: enough to prove the record was delivered
    /// without adding a hash to the timed scan.
    Touch,
    /// Every byte (FNV-1a): used where correctness matters more than time.
    Full,
}

impl Check {
    /// The value this check gives one record.
    pub fn value(self, record: &[u8]) -> u64 {
        match self {
            Check::Touch => {
                let first = record.first().copied().unwrap_or(0);
                let middle = record.get(record.len() / 2).copied().unwrap_or(0);
                let last = record.last().copied().unwrap_or(0);
                (record.len() as u64) << 24
                    | u64::from(first) << 16
                    | u64::from(middle) << 8
                    | u64::from(last)
            }
            Check::Full => record.iter().fold(0xCBF2_9CE4_8422_2325u64, |h, &b| {
                (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
            }),
        }
    }
}

/// An order-sensitive digest of a sequence of records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digest {
    check: Check,
    /// Records added.
    pub count: u64,
    acc: u64,
}

impl Digest {
    /// An empty digest.
    pub fn new(check: Check) -> Digest {
        Digest {
            check,
            count: 0,
            acc: 0,
        }
    }

    /// Adds the next record.
    #[inline]
    pub fn add(&mut self, record: &[u8]) {
        self.add_value(self.check.value(record));
    }

    /// Adds the next record's value (see [`Check::value`]).
    #[inline]
    pub fn add_value(&mut self, value: u64) {
        self.count += 1;
        self.acc = self.acc.rotate_left(7) ^ value.wrapping_add(self.count);
    }

    /// The digest of `records` in order.
    pub fn of(check: Check, records: &[Bytes]) -> Digest {
        let mut digest = Digest::new(check);
        for record in records {
            digest.add(record);
        }
        digest
    }
}

/// The offsets W4 reads: `count` uniform picks in `0..records`.
pub fn read_offsets(records: usize, count: usize) -> Vec<u64> {
    let mut rng = SplitMix64::new(READ_SEED);
    (0..count).map(|_| rng.below(records as u64)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_fixed_size_lines() {
        let records = records(1_000);
        assert!(records.iter().all(|r| r.len() == RECORD_BYTES));
        assert!(records.iter().all(|r| r.ends_with(b"\n")));
        assert_eq!(records, super::records(1_000), "same seed, same records");
    }
}
