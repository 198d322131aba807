//! The tables: medians over the runs, durable-log's ratios against the
//! baseline and the best peer, and each target met or not.

use crate::machine::MACHINE;
use crate::stats::Figures;
use crate::subjects::Subject;
use crate::subjects::baseline::Baseline;
use crate::subjects::commitlog::CommitLogSubject;
use crate::subjects::durable::DurableLog;
use crate::subjects::okaywal::OkayWal;
use crate::subjects::raft::RaftEngine;
use crate::workload::{BATCH_RECORDS, Params};

const DURABLE: &str = DurableLog::NAME;
const BASELINE: &str = Baseline::NAME;
/// The peers, in table order.
const PEERS: [&str; 3] = [CommitLogSubject::NAME, OkayWal::NAME, RaftEngine::NAME];

/// How a figure is shown and compared.
#[derive(Clone, Copy)]
enum Unit {
    /// Events per second: higher is better.
    Rate,
    /// Milliseconds: lower is better.
    Millis,
    /// Megabytes: lower is better.
    Megabytes,
}

impl Unit {
    fn higher_is_better(self) -> bool {
        matches!(self, Unit::Rate)
    }

    fn show(self, value: f64) -> String {
        match self {
            Unit::Rate => rate(value),
            Unit::Millis if value < 10.0 => format!("{value:.2} ms"),
            Unit::Millis => format!("{value:.0} ms"),
            Unit::Megabytes => format!("{value:.1} MB"),
        }
    }

    /// How many times better `ours` is than `theirs` (> 1: better).
    fn advantage(self, ours: f64, theirs: f64) -> f64 {
        if self.higher_is_better() {
            ours / theirs
        } else {
            theirs / ours
        }
    }
}

/// A rate as `9.10M`, `660k` or `5,687`.
fn rate(value: f64) -> String {
    if value >= 1e6 {
        format!("{:.2}M", value / 1e6)
    } else if value >= 1e5 {
        format!("{:.0}k", value / 1e3)
    } else {
        let whole = value.round() as u64;
        let digits = whole.to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        out
    }
}

fn show(value: Option<f64>, unit: Unit) -> String {
    value.map_or_else(|| "–".to_owned(), |v| unit.show(v))
}

fn ratio(value: Option<f64>) -> String {
    match value {
        Some(v) if v.is_finite() => format!("{v:.2}×"),
        _ => "–".to_owned(),
    }
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "**not met**",
        None => "–",
    }
}

/// One row of the main table.
struct Row {
    figure: &'static str,
    label: &'static str,
    unit: Unit,
    /// The target, as (text, minimum advantage over the baseline, minimum
    /// advantage over the best peer).
    target: Option<(&'static str, Option<f64>, Option<f64>)>,
}

const ROWS: [Row; 10] = [
    Row {
        figure: "w1",
        label: "W1 append, records/s",
        unit: Unit::Rate,
        target: Some(("≥1.6× baseline", Some(1.6), None)),
    },
    Row {
        figure: "w1_sync",
        label: "W1 append + one final sync, records/s",
        unit: Unit::Rate,
        target: Some(("≥1.1× baseline", Some(1.1), None)),
    },
    Row {
        figure: "w2",
        label: "W2 sync per batch, batches/s",
        unit: Unit::Rate,
        target: Some(("≥1.3× baseline", Some(1.3), None)),
    },
    Row {
        figure: "w3",
        label: "W3 scan after reopen, records/s (durable-log: `batches(0)`)",
        unit: Unit::Rate,
        target: Some(("≥1.4× best peer, ≥1.2× baseline", Some(1.2), Some(1.4))),
    },
    Row {
        figure: "w3.reader",
        label: "W3 with durable-log's `reader(0)`, records/s",
        unit: Unit::Rate,
        target: None,
    },
    Row {
        figure: "w4",
        label: "W4 random point reads, reads/s (durable-log: `reader(o).next()`)",
        unit: Unit::Rate,
        target: Some(("≥1.5× best peer", None, Some(1.5))),
    },
    Row {
        figure: "w4.read",
        label: "W4 with durable-log's `read(o, 1)`, reads/s",
        unit: Unit::Rate,
        target: None,
    },
    Row {
        figure: "w5_clean_ms",
        label: "W5 reopen after clean close",
        unit: Unit::Millis,
        target: Some(("< 1/10 of baseline's", Some(10.0), None)),
    },
    Row {
        figure: "w5_kill_ms",
        label: "W5 reopen after SIGKILL of a writer",
        unit: Unit::Millis,
        target: None,
    },
    Row {
        figure: "disk_mb",
        label: "bytes on disk after W1",
        unit: Unit::Megabytes,
        target: None,
    },
];

/// Prints every table to stdout.
pub fn print(params: &Params, figures: &Figures) {
    println!(
        "Workload: {} records of 100 bytes in batches of {BATCH_RECORDS}; W2 and W6 {} batches; \
         W4 {} reads; W5 kill after {} acknowledged batches; W7 {} appends every {} µs; \
         medians of {} runs.\n",
        params.records,
        params.w2_batches,
        params.reads,
        params.kill_batches,
        params.w7_records,
        params.w7_pace_us,
        params.runs,
    );
    print_main(figures);
    print_recovery(params, figures);
    print_durable_only(figures);
    print_machine(figures);
    print_failures(figures);
    print_runs(figures);
}

fn print_main(figures: &Figures) {
    println!("## Systems\n");
    print!("| workload | {BASELINE} |");
    for peer in PEERS {
        print!(" {peer} |");
    }
    println!(" {DURABLE} | vs baseline | vs best peer | target |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for row in &ROWS {
        let ours = figures.median(row.figure, DURABLE);
        let baseline = figures.median(row.figure, BASELINE);
        let peers: Vec<Option<f64>> = PEERS
            .iter()
            .map(|peer| figures.median(row.figure, peer))
            .collect();
        let best_peer = peers.iter().flatten().copied().reduce(|a, b| {
            if row.unit.higher_is_better() {
                a.max(b)
            } else {
                a.min(b)
            }
        });
        let advantage = |theirs: Option<f64>| Some(row.unit.advantage(ours?, theirs?));
        let over_baseline = advantage(baseline);
        let over_peer = advantage(best_peer);
        let target = row
            .target
            .map_or_else(String::new, |(text, min_baseline, min_peer)| {
                let checks = [(min_baseline, over_baseline), (min_peer, over_peer)];
                let met = checks
                    .iter()
                    .filter_map(|(min, got)| min.map(|min| got.map(|got| got >= min)))
                    .try_fold(true, |all, one| one.map(|one| all && one));
                format!("{text}: {}", verdict(met))
            });
        print!("| {} | {} |", row.label, show(baseline, row.unit));
        for peer in &peers {
            print!(" {} |", show(*peer, row.unit));
        }
        println!(
            " {} | {} | {} | {target} |",
            show(ours, row.unit),
            ratio(over_baseline),
            ratio(over_peer),
        );
    }
    println!(
        "\nRatios are durable-log's advantage: > 1 means durable-log is better (faster, or less time or space).\n"
    );
}

fn print_recovery(params: &Params, figures: &Figures) {
    println!(
        "## W5 after SIGKILL: acknowledged records recovered\n\n\
         The writer was killed after {} acknowledged synced batches; then the log was reopened, \
         scanned (every byte checked against what was written), appended to, reopened and \
         scanned again.\n",
        params.kill_batches
    );
    println!("| system | trials with everything recovered | per trial |");
    println!("|---|---:|---|");
    for system in [BASELINE, PEERS[0], PEERS[1], PEERS[2], DURABLE] {
        let ok = figures.all("w5_kill_ok", system);
        let passed = ok.iter().filter(|&&v| v > 0.0).count();
        println!(
            "| {system} | {passed}/{} | {} |",
            ok.len(),
            figures.notes("w5_kill", system).join("; ")
        );
    }
    println!();
}

fn print_durable_only(figures: &Figures) {
    let get = |figure: &str| figures.median(figure, DURABLE);
    println!("## durable-log only\n");
    println!("| figure | value | compared with | ratio | target |");
    println!("|---|---:|---|---:|---|");
    let w2_records = get("w2").map(|b| b * BATCH_RECORDS as f64);
    let w6 = get("w6");
    let w6_ratio = w6.zip(w2_records).map(|(a, b)| a / b);
    println!(
        "| W6 8 threads, `Durability::Sync`, records/s | {} | W2 (one writer): {} records/s | {} | ≥4×: {} |",
        show(w6, Unit::Rate),
        show(w2_records, Unit::Rate),
        ratio(w6_ratio),
        verdict(w6_ratio.map(|r| r >= 4.0)),
    );
    println!(
        "| W6 batches made durable per group-commit fsync (partition stats) | {} | 1 for W2 | | |",
        get("w6.batches_per_fsync").map_or("–".into(), |v| format!("{v:.2}")),
    );
    for (label, suffix) in [("p50", "p50"), ("p99", "p99"), ("p999", "p999")] {
        let log = get(&format!("w7.log.returned.{suffix}"));
        let channel = get(&format!("w7.mpsc.returned.{suffix}"));
        let r = log.zip(channel).map(|(a, b)| a / b);
        let target = if suffix == "p99" {
            format!("≤3× mpsc: {}", verdict(r.map(|r| r <= 3.0)))
        } else {
            String::new()
        };
        println!(
            "| W7 append returned → tailing reader has it, {label} | {} | mpsc send returned → recv: {} | {} | {target} |",
            micros(log),
            micros(channel),
            ratio(r),
        );
    }
    for (label, suffix) in [("p50", "p50"), ("p99", "p99"), ("p999", "p999")] {
        let log = get(&format!("w7.log.called.{suffix}"));
        let channel = get(&format!("w7.mpsc.called.{suffix}"));
        let r = log.zip(channel).map(|(a, b)| a / b);
        println!(
            "| W7 append called → tailing reader has it, {label} | {} | mpsc send called → recv: {} | {} | |",
            micros(log),
            micros(channel),
            ratio(r),
        );
    }
    println!(
        "| W7 records the reader had before `append` returned (median count) | {} | | | |",
        get("w7.log.early").map_or("–".into(), |v| format!("{v:.0}")),
    );
    println!();

    println!("### Compression (durable-log W1 and W3)\n");
    println!(
        "| codec | W1 records/s | W1 + sync records/s | W3 records/s | segment bytes | vs uncompressed |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let plain = get("codec.none.segment_mb");
    for (label, name) in [
        ("none", "none"),
        ("lz4", "Lz4"),
        ("zstd1", "Zstd { level: 1 }"),
    ] {
        let size = get(&format!("codec.{label}.segment_mb"));
        println!(
            "| {name} | {} | {} | {} | {} | {} |",
            show(get(&format!("codec.{label}.w1")), Unit::Rate),
            show(get(&format!("codec.{label}.w1_sync")), Unit::Rate),
            show(get(&format!("codec.{label}.w3")), Unit::Rate),
            show(size, Unit::Megabytes),
            ratio(size.zip(plain).map(|(a, b)| a / b)),
        );
    }
    let lz4_own = get("lz4_flex.records_per_s");
    let lz4_ratio = get("lz4_flex.ratio");
    let lz4_w1 = get("codec.lz4.w1");
    let speed = lz4_w1.zip(lz4_own).map(|(a, b)| a / b);
    let size = get("codec.lz4.segment_mb").zip(plain).map(|(a, b)| a / b);
    println!(
        "\nlz4_flex `compress_prepend_size` alone on the same records, 100 per block: {} records/s, ratio {}.\n",
        show(lz4_own, Unit::Rate),
        lz4_ratio.map_or("–".into(), |r| format!("{r:.2}×")),
    );
    println!(
        "- Lz4 W1 speed / lz4_flex's own: {} (target ≥ 0.70: {})",
        ratio(speed),
        verdict(speed.map(|s| s >= 0.7))
    );
    println!(
        "- Lz4 segment bytes / uncompressed: {} (target ≤ 0.40: {})\n",
        ratio(size),
        verdict(size.map(|s| s <= 0.4))
    );

    println!("### Peak memory (durable-log, one child process each)\n");
    println!(
        "| process | log | peak anonymous memory (`RssAnon`) | peak resident set (`VmHWM`, mapped log pages included) |"
    );
    println!("|---|---:|---:|---:|");
    let mib = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.1} MiB"));
    for (role, label) in [("write", "writer"), ("read", "reader")] {
        for mb in [100, 1_000] {
            println!(
                "| {label} | {mb} MB | {} | {} |",
                mib(get(&format!("memory.{role}.{mb}.anon_mib"))),
                mib(get(&format!("memory.{role}.{mb}.hwm_mib"))),
            );
        }
    }
    let flat = |role: &str| {
        get(&format!("memory.{role}.1000.anon_mib"))
            .zip(get(&format!("memory.{role}.100.anon_mib")))
            .map(|(big, small)| big / small)
    };
    println!(
        "\n- anonymous memory at 1 GB / at 100 MB: writer {}, reader {}\n",
        ratio(flat("write")),
        ratio(flat("read")),
    );
}

fn micros(value: Option<f64>) -> String {
    value.map_or_else(|| "–".to_owned(), |v| format!("{v:.1} µs"))
}

fn print_machine(figures: &Figures) {
    let get = |figure: &str| figures.median(figure, MACHINE);
    let gbps = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.2} GB/s"));
    println!("## The machine, measured in the same run\n");
    println!("| what | figure |");
    println!("|---|---|");
    println!(
        "| buffered sequential write, 1 MiB writes | {} |",
        gbps(get("machine.write_gbps"))
    );
    println!(
        "| the same with one final fdatasync | {} |",
        gbps(get("machine.write_sync_gbps"))
    );
    println!(
        "| 4 KiB append + fdatasync | p50 {}, p99 {}, {}/s |",
        micros(get("machine.fsync_p50_us")),
        micros(get("machine.fsync_p99_us")),
        show(get("machine.fsync_per_s"), Unit::Rate),
    );
    println!(
        "| 4 KiB overwrite of preallocated space + fdatasync | p50 {}, p99 {}, {}/s |",
        micros(get("machine.fsync_overwrite_p50_us")),
        micros(get("machine.fsync_overwrite_p99_us")),
        show(get("machine.fsync_overwrite_per_s"), Unit::Rate),
    );
    println!(
        "| memcpy, 256 MiB buffers, one core | {} |\n",
        gbps(get("machine.memcpy_gbps"))
    );
}

fn print_failures(figures: &Figures) {
    let systems = [BASELINE, PEERS[0], PEERS[1], PEERS[2], DURABLE];
    let failures: Vec<String> = systems
        .iter()
        .flat_map(|system| {
            figures
                .notes("failed", system)
                .iter()
                .map(move |note| format!("- {system}: {note}"))
        })
        .collect();
    if !failures.is_empty() {
        println!("## Failures\n\n{}\n", failures.join("\n"));
    }
}

/// Every run's value, to see the spread behind each median.
fn print_runs(figures: &Figures) {
    println!("## Every run\n");
    println!("| figure | system | values |");
    println!("|---|---|---|");
    let systems = [BASELINE, PEERS[0], PEERS[1], PEERS[2], DURABLE, MACHINE];
    for figure in figures.names() {
        for system in systems {
            let values = figures.all(&figure, system);
            if !values.is_empty() {
                let shown: Vec<String> = values
                    .iter()
                    .map(|v| {
                        if v.abs() >= 1e4 {
                            format!("{v:.0}")
                        } else {
                            format!("{v:.4}")
                        }
                    })
                    .collect();
                println!("| {figure} | {system} | {} |", shown.join(", "));
            }
        }
    }
}
