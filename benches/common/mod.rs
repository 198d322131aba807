//! What the benches share: a fixed-seed generator and the workload's
//! 100-byte JSON-like log lines.

#![allow(dead_code, reason = "each bench uses part of this")]

/// Size of every record's value.
pub const RECORD_BYTES: usize = 100;

/// SplitMix64: a small, fixed-seed generator, so every run appends the same
/// bytes.
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }
}

/// One log line, `{"ts":…,"level":"…","msg":"…"}`, padded to exactly
/// `RECORD_BYTES` bytes.
pub fn log_line(rng: &mut SplitMix64, ts_ms: u64) -> Vec<u8> {
    const LEVELS: [&str; 4] = ["DEBUG", "INFO", "WARN", "ERROR"];
    const WORDS: [&str; 8] = [
        "request", "served", "user", "session", "cache", "miss", "upstream", "retry",
    ];
    let level = LEVELS[rng.below(LEVELS.len() as u64) as usize];
    let head = format!(r#"{{"ts":{ts_ms},"level":"{level}","msg":""#);
    let tail = r#""}"#;
    let room = RECORD_BYTES - head.len() - tail.len();
    let mut msg = String::with_capacity(room);
    while msg.len() < room {
        let word = WORDS[rng.below(WORDS.len() as u64) as usize];
        msg.push_str(word);
        msg.push_str(&format!(" id={} ", rng.below(100_000)));
    }
    msg.truncate(room);
    let line = format!("{head}{msg}{tail}");
    assert_eq!(line.len(), RECORD_BYTES);
    line.into_bytes()
}
