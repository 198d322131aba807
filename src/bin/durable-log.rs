//! `durable-log`: dump, verify, repair and measure a durable-log directory
//! offline. Run `durable-log --help` for the commands.

use std::ffi::OsString;
use std::fmt::{self, Display, Write as _};
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use durable_log::inspect::{
    self, BatchInfo, Cut, InvalidBatch, LogStats, OfflineLog, PartitionRepair, Printable, Problem,
    ProblemKind, Progress, RecordInfo, RepairMode, RepairReport, SegmentBatches, VerifyReport,
};
use durable_log::{CorruptKind, Error};

const HELP: &str = "\
durable-log: dump, verify, repair and measure a durable-log directory offline

Usage:
  durable-log dump   [--records] [--json] <segment file | log dir | partition dir>
  durable-log verify [--json] <log dir>
  durable-log repair [--dry-run] [--truncate-at-first-invalid] [--json] <log dir>
  durable-log stats  [--json] <log dir>

Commands:
  dump     print the batches of a segment file, or of every segment of a log
           (or of one of its partitions); stops at the first invalid batch of
           each segment
  verify   check every batch (checksum, bounds, records, offsets), every index
           entry and the checkpoints; report each problem with its file and
           byte position
  repair   cut each partition's last segment at its first invalid batch (a
           torn tail), delete index files that do not check out so the next
           open rebuilds them, and report exactly what was removed
  stats    segments, offsets, sizes, record counts and compression per
           partition

Options:
  --json                       machine-readable output (one JSON document)
  --records                    dump: print every record too
  --dry-run                    repair: report what would be done, change nothing
  --truncate-at-first-invalid  repair: cut each partition at its first invalid
                               batch in any segment, DELETING every later
                               segment, valid records included
  -h, --help                   print this help

A log directory must not be open in another process: these commands take its
lock, as opening the log does, and fail if it is held. Dumping a single
segment file takes no lock.

Exit status:
  0  no damage found (repair: none left in place)
  1  damage found (repair: damage left in place)
  2  usage error
  3  the command could not run (log locked, I/O error, not a log)
";

const EXIT_DAMAGE: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_FAILED: u8 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    Dump,
    Verify,
    Repair,
    Stats,
}

#[derive(Debug, PartialEq, Eq)]
struct Args {
    command: Command,
    path: PathBuf,
    json: bool,
    records: bool,
    dry_run: bool,
    truncate_at_first_invalid: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    Help,
    Run(Args),
}

fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Parsed, String> {
    let mut command = None;
    let mut path: Option<PathBuf> = None;
    let (mut json, mut records, mut dry_run, mut truncate) = (false, false, false, false);
    let mut options_done = false;
    for arg in args {
        let text = arg.to_str();
        if !options_done && let Some(option) = text.filter(|t| t.starts_with('-') && *t != "-") {
            match option {
                "-h" | "--help" => return Ok(Parsed::Help),
                "--json" => json = true,
                "--records" => records = true,
                "--dry-run" => dry_run = true,
                "--truncate-at-first-invalid" => truncate = true,
                "--" => options_done = true,
                other => return Err(format!("unknown option `{other}`")),
            }
            continue;
        }
        if command.is_none() {
            command = Some(match text {
                Some("dump") => Command::Dump,
                Some("verify") => Command::Verify,
                Some("repair") => Command::Repair,
                Some("stats") => Command::Stats,
                _ => {
                    return Err(format!("unknown command `{}`", arg.to_string_lossy()));
                }
            });
        } else if path.is_none() {
            path = Some(PathBuf::from(arg));
        } else {
            return Err(format!(
                "unexpected argument `{}`: give one path",
                arg.to_string_lossy()
            ));
        }
    }
    let command = command.ok_or("no command given")?;
    let path = path.ok_or("no path given")?;
    if records && command != Command::Dump {
        return Err("`--records` goes with `dump` only".into());
    }
    if (dry_run || truncate) && command != Command::Repair {
        return Err("`--dry-run` and `--truncate-at-first-invalid` go with `repair` only".into());
    }
    Ok(Parsed::Run(Args {
        command,
        path,
        json,
        records,
        dry_run,
        truncate_at_first_invalid: truncate,
    }))
}

/// Why a command stopped.
enum Failure {
    Log(Error),
    Output(io::Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::Log(e)
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        Failure::Output(e)
    }
}

/// Whether the command found damage (or left it in place).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Clean,
    Damaged,
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args_os().skip(1)) {
        Ok(Parsed::Run(args)) => args,
        Ok(Parsed::Help) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("durable-log: {message}");
            eprintln!("Run `durable-log --help` for usage.");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let mut out = BufWriter::new(io::stdout().lock());
    let result = run(&args, &mut out).and_then(|outcome| {
        out.flush()?;
        Ok(outcome)
    });
    match result {
        Ok(Outcome::Clean) => ExitCode::SUCCESS,
        Ok(Outcome::Damaged) => ExitCode::from(EXIT_DAMAGE),
        Err(Failure::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => {
            ExitCode::from(EXIT_FAILED)
        }
        Err(Failure::Output(e)) => {
            eprintln!("durable-log: cannot write the output: {e}");
            ExitCode::from(EXIT_FAILED)
        }
        Err(Failure::Log(e)) => {
            let _ = out.flush();
            eprintln!("durable-log: {e}");
            if e.is_corruption() {
                ExitCode::from(EXIT_DAMAGE)
            } else {
                ExitCode::from(EXIT_FAILED)
            }
        }
    }
}

fn run(args: &Args, out: &mut dyn Write) -> Result<Outcome, Failure> {
    match args.command {
        Command::Dump => dump(args, out),
        Command::Verify => {
            let mut bar = ProgressBar::new(io::stderr().is_terminal());
            let report = inspect::verify(&args.path, |p| bar.update(p));
            bar.clear();
            let report = report?;
            if args.json {
                writeln!(out, "{}", verify_json(&report))?;
            } else {
                print_verify(&report, out)?;
            }
            Ok(if report.is_ok() {
                Outcome::Clean
            } else {
                Outcome::Damaged
            })
        }
        Command::Repair => {
            let mode = if args.truncate_at_first_invalid {
                RepairMode::TruncateAtFirstInvalid
            } else {
                RepairMode::LastSegmentTail
            };
            let report = inspect::repair_with_mode(&args.path, mode, args.dry_run)?;
            if args.json {
                writeln!(out, "{}", repair_json(&report))?;
            } else {
                print_repair(&report, out)?;
            }
            Ok(if report.is_complete() {
                Outcome::Clean
            } else {
                Outcome::Damaged
            })
        }
        Command::Stats => {
            let stats = inspect::stats(&args.path)?;
            if args.json {
                writeln!(out, "{}", stats_json(&stats))?;
            } else {
                print_stats(&stats, out)?;
            }
            Ok(Outcome::Clean)
        }
    }
}

// ---------------------------------------------------------------------------
// dump
// ---------------------------------------------------------------------------

fn dump(args: &Args, out: &mut dyn Write) -> Result<Outcome, Failure> {
    let path = &args.path;
    let is_file = std::fs::metadata(path)
        .map_err(|e| Error::Io(path.clone(), e.into()))?
        .is_file();
    // Held while the segments are read.
    let mut _lock = None;
    let mut segments: Vec<(Option<u32>, PathBuf)> = Vec::new();
    if is_file {
        segments.push((None, path.clone()));
    } else {
        let (log, only) = open_for_dump(path)?;
        for partition in log.partitions() {
            if only.is_some_and(|id| id != partition.partition) {
                continue;
            }
            for segment in &partition.segments {
                segments.push((Some(partition.partition), segment.log.clone()));
            }
        }
        _lock = Some(log);
    }
    if args.json {
        write!(out, "{{\"segments\":[")?;
    }
    let mut outcome = Outcome::Clean;
    for (i, (partition, path)) in segments.iter().enumerate() {
        let mut batches = SegmentBatches::open(path)?.with_records(args.records);
        if args.json {
            if i > 0 {
                write!(out, ",")?;
            }
            dump_segment_json(*partition, &mut batches, out)?;
        } else {
            if i > 0 {
                writeln!(out)?;
            }
            dump_segment_text(&mut batches, out)?;
        }
        if batches.invalid().is_some() {
            outcome = Outcome::Damaged;
        }
    }
    if args.json {
        writeln!(out, "]}}")?;
    }
    Ok(outcome)
}

/// A log directory, or a partition directory inside one (then only that
/// partition is dumped).
fn open_for_dump(path: &Path) -> Result<(OfflineLog, Option<u32>), Error> {
    if !path.join("meta").exists()
        && let Some(id) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u32>().ok())
        && let Some(parent) = path.parent()
        && parent.join("meta").exists()
    {
        let log = OfflineLog::open(parent)?;
        if id as usize >= log.partitions().len() {
            return Err(Error::NotALog {
                path: path.to_path_buf(),
                reason: format!("the log has {} partitions", log.partitions().len()),
            });
        }
        return Ok((log, Some(id)));
    }
    Ok((OfflineLog::open(path)?, None))
}

fn dump_segment_text(batches: &mut SegmentBatches, out: &mut dyn Write) -> Result<(), Failure> {
    let base = batches
        .base_offset()
        .map_or_else(|| "unknown".to_string(), |b| b.to_string());
    writeln!(
        out,
        "{}: base offset {base}, {} bytes",
        batches.path().display(),
        batches.file_bytes()
    )?;
    writeln!(
        out,
        "  {:>10}  {:>12}  {:>12}  {:>7}  {:>9}  {:<5}  {:<10}  max timestamp",
        "position", "base offset", "last offset", "records", "bytes", "codec", "crc"
    )?;
    let (mut count, mut records) = (0u64, 0u64);
    for batch in batches.by_ref() {
        let batch = batch?;
        count += 1;
        records += u64::from(batch.record_count);
        write_batch_line(&batch, out)?;
        for record in batch.records.iter().flatten() {
            write_record_line(record, out)?;
        }
    }
    if let Some(invalid) = batches.invalid() {
        writeln!(
            out,
            "  INVALID batch at byte {}: {}; the {} bytes from there were not read",
            invalid.position,
            invalid.kind,
            batches.file_bytes() - invalid.position
        )?;
        if let Some(header) = &invalid.header {
            writeln!(out, "  its header (from damaged bytes) says:")?;
            write_batch_line(header, out)?;
        }
    }
    writeln!(
        out,
        "  {}, {}, {} of {} bytes valid",
        Count(count, "valid batch", "valid batches"),
        Count(records, "record", "records"),
        batches.valid_bytes(),
        batches.file_bytes()
    )?;
    Ok(())
}

fn write_batch_line(batch: &BatchInfo, out: &mut dyn Write) -> io::Result<()> {
    let crc = format!("{:#010x}", batch.crc);
    writeln!(
        out,
        "  {:>10}  {:>12}  {:>12}  {:>7}  {:>9}  {:<5}  {:<10}  {}{}",
        batch.position,
        batch.base_offset,
        batch.last_offset,
        batch.record_count,
        batch.batch_length,
        batch.codec.name(),
        crc,
        Timestamp(batch.max_timestamp),
        if batch.crc_valid {
            ""
        } else {
            "  (crc mismatch)"
        }
    )
}

/// Longest text of a key or value shown in a record line.
const SHOWN_BYTES_MAX: usize = 120;

fn write_record_line(record: &RecordInfo, out: &mut dyn Write) -> io::Result<()> {
    let mut line = format!(
        "      offset {}  {}  key {}  value {}",
        record.offset,
        Timestamp(record.timestamp),
        Shown(record.key.as_deref()),
        Shown(record.value.as_deref())
    );
    for header in &record.headers {
        let _ = write!(
            line,
            "  header {:?}={}",
            header.key,
            Shown(header.value.as_deref())
        );
    }
    writeln!(out, "{line}")
}

/// Nullable bytes for people, shortened when long.
struct Shown<'a>(Option<&'a [u8]>);

impl Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(bytes) = self.0 else {
            return f.write_str("null");
        };
        let shown = Printable::of(&bytes[..bytes.len().min(SHOWN_BYTES_MAX)]).to_string();
        // A cut inside a UTF-8 sequence shows as hex; the whole may be text.
        let shown = match (Printable::of(bytes), bytes.len() > SHOWN_BYTES_MAX) {
            (Printable::Text(text), true) => {
                let mut end = SHOWN_BYTES_MAX;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                Printable::Text(&text[..end]).to_string()
            }
            _ => shown,
        };
        if bytes.len() > SHOWN_BYTES_MAX {
            write!(f, "{shown}... ({} bytes)", bytes.len())
        } else {
            f.write_str(&shown)
        }
    }
}

fn dump_segment_json(
    partition: Option<u32>,
    batches: &mut SegmentBatches,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    write!(
        out,
        "{{\"path\":{},\"partition\":{},\"base_offset\":{},\"file_bytes\":{},\"batches\":[",
        json_path(batches.path()),
        json_opt(partition),
        json_opt(batches.base_offset()),
        batches.file_bytes()
    )?;
    let mut first = true;
    for batch in batches.by_ref() {
        let batch = batch?;
        if !first {
            write!(out, ",")?;
        }
        first = false;
        write!(out, "{}", batch_json(&batch))?;
    }
    write!(
        out,
        "],\"valid_bytes\":{},\"invalid\":{}}}",
        batches.valid_bytes(),
        batches.invalid().map_or("null".into(), invalid_json)
    )?;
    Ok(())
}

fn batch_json(b: &BatchInfo) -> String {
    let mut o = Obj::new();
    o.num("position", b.position)
        .num("base_offset", b.base_offset)
        .num("last_offset", b.last_offset)
        .num("record_count", b.record_count)
        .num("batch_length", b.batch_length)
        .num("crc", b.crc)
        .num("crc_valid", b.crc_valid)
        .num("first_timestamp", b.first_timestamp)
        .num("max_timestamp", b.max_timestamp)
        .num("log_append_time", b.log_append_time)
        .num("producer_id", b.producer_id)
        .num("producer_epoch", b.producer_epoch)
        .num("base_sequence", b.base_sequence)
        .num("leader_epoch", b.leader_epoch)
        .str("codec", &b.codec.name());
    if let Some(records) = &b.records {
        o.raw("records", arr(records.iter().map(record_json)));
    }
    o.finish()
}

fn record_json(r: &RecordInfo) -> String {
    let headers = r.headers.iter().map(|h| {
        let mut o = Obj::new();
        o.str("key", &h.key)
            .raw("value", json_bytes(h.value.as_deref()));
        o.finish()
    });
    let mut o = Obj::new();
    o.num("offset", r.offset)
        .num("timestamp", r.timestamp)
        .raw("key", json_bytes(r.key.as_deref()))
        .raw("value", json_bytes(r.value.as_deref()))
        .raw("headers", arr(headers));
    o.finish()
}

fn invalid_json(invalid: &InvalidBatch) -> String {
    let mut o = Obj::new();
    o.num("position", invalid.position)
        .str("kind", corrupt_code(&invalid.kind))
        .str("description", &invalid.kind.to_string())
        .raw(
            "header",
            invalid.header.as_ref().map_or("null".into(), batch_json),
        );
    o.finish()
}

// ---------------------------------------------------------------------------
// verify
// ---------------------------------------------------------------------------

fn print_verify(report: &VerifyReport, out: &mut dyn Write) -> io::Result<()> {
    writeln!(
        out,
        "{}: {} partitions, {} segments, {} batches, {} records, {} of valid batches",
        report.dir.display(),
        report.partitions.len(),
        report.segments,
        report.batches,
        report.records,
        HumanBytes(report.bytes)
    )?;
    writeln!(
        out,
        "  {:>9}  {:>8}  {:>10}  {:>12}  {:>14}  {:>12}  {:>12}",
        "partition", "segments", "batches", "records", "bytes", "start offset", "end offset"
    )?;
    for p in &report.partitions {
        writeln!(
            out,
            "  {:>9}  {:>8}  {:>10}  {:>12}  {:>14}  {:>12}  {:>12}",
            p.partition, p.segments, p.batches, p.records, p.bytes, p.start_offset, p.end_offset
        )?;
    }
    if report.is_ok() {
        writeln!(out, "OK: no problems found")?;
        return Ok(());
    }
    writeln!(
        out,
        "{}:",
        Count(report.problems.len() as u64, "problem", "problems")
    )?;
    for problem in &report.problems {
        write_problem(problem, out)?;
    }
    let total = report.problems.len() as u64;
    let derived = report.problems.iter().filter(|p| p.is_derived()).count() as u64;
    if derived == total {
        writeln!(
            out,
            "FAILED: {}, all in indexes or leftover files: no record is at stake, and the next open rebuilds or removes them",
            Count(total, "problem", "problems")
        )
    } else {
        writeln!(
            out,
            "FAILED: {} ({} in data, {} in indexes or leftover files)",
            Count(total, "problem", "problems"),
            total - derived,
            derived
        )
    }
}

fn write_problem(problem: &Problem, out: &mut dyn Write) -> io::Result<()> {
    writeln!(
        out,
        "  {} at byte {}:\n      {}",
        problem.path.display(),
        problem.position,
        problem.kind
    )
}

fn problem_json(p: &Problem) -> String {
    let mut o = Obj::new();
    o.str("path", &p.path.to_string_lossy())
        .num("position", p.position)
        .str("kind", p.kind.code())
        .str("description", &p.kind.to_string())
        .num("derived", p.is_derived());
    if let ProblemKind::InvalidBatch {
        kind,
        unchecked_bytes,
        last_segment,
        torn_tail,
    } = &p.kind
    {
        o.str("corruption", corrupt_code(kind))
            .num("unchecked_bytes", unchecked_bytes)
            .num("last_segment", last_segment)
            .num("torn_tail", torn_tail);
    }
    o.finish()
}

fn verify_json(report: &VerifyReport) -> String {
    let partitions = report.partitions.iter().map(|p| {
        let mut o = Obj::new();
        o.num("partition", p.partition)
            .num("segments", p.segments)
            .num("batches", p.batches)
            .num("records", p.records)
            .num("bytes", p.bytes)
            .num("start_offset", p.start_offset)
            .num("end_offset", p.end_offset);
        o.finish()
    });
    let mut o = Obj::new();
    o.str("dir", &report.dir.to_string_lossy())
        .num("ok", report.is_ok())
        .num("segments", report.segments)
        .num("batches", report.batches)
        .num("records", report.records)
        .num("bytes", report.bytes)
        .raw("partitions", arr(partitions))
        .raw("problems", arr(report.problems.iter().map(problem_json)));
    o.finish()
}

/// A progress bar on stderr, redrawn at most ten times a second, and only
/// once a run has lasted long enough to need one.
struct ProgressBar {
    enabled: bool,
    started: Instant,
    last_draw: Option<Instant>,
}

impl ProgressBar {
    const DELAY: Duration = Duration::from_millis(300);
    const INTERVAL: Duration = Duration::from_millis(100);
    const WIDTH: u64 = 30;

    fn new(enabled: bool) -> ProgressBar {
        ProgressBar {
            enabled,
            started: Instant::now(),
            last_draw: None,
        }
    }

    fn update(&mut self, p: Progress) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        if now.duration_since(self.started) < Self::DELAY
            || self
                .last_draw
                .is_some_and(|last| now.duration_since(last) < Self::INTERVAL)
        {
            return;
        }
        self.last_draw = Some(now);
        let filled = (p.bytes_done * Self::WIDTH)
            .checked_div(p.bytes_total)
            .unwrap_or(Self::WIDTH)
            .min(Self::WIDTH);
        let percent = (p.bytes_done * 100)
            .checked_div(p.bytes_total)
            .unwrap_or(100);
        let bar: String = (0..Self::WIDTH)
            .map(|i| if i < filled { '#' } else { '.' })
            .collect();
        let mut err = io::stderr().lock();
        let _ = write!(
            err,
            "\r[{bar}] {percent:>3}%  {} / {}  partition {}/{}",
            HumanBytes(p.bytes_done),
            HumanBytes(p.bytes_total),
            p.partition + 1,
            p.partitions
        );
        let _ = err.flush();
    }

    fn clear(&mut self) {
        if self.last_draw.is_some() {
            let mut err = io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
    }
}

// ---------------------------------------------------------------------------
// repair
// ---------------------------------------------------------------------------

fn print_repair(report: &RepairReport, out: &mut dyn Write) -> io::Result<()> {
    let mode = match report.mode {
        RepairMode::TruncateAtFirstInvalid => "truncate at first invalid batch",
        _ => "last segment tail",
    };
    let would = if report.dry_run { "would be " } else { "" };
    writeln!(
        out,
        "Repair of {} (mode: {mode}){}",
        report.dir.display(),
        if report.dry_run {
            "; dry run: nothing was changed"
        } else {
            ""
        }
    )?;
    if !report.changed() {
        writeln!(out, "Nothing to repair.")?;
    }
    for p in &report.partitions {
        write_partition_repair(p, would, out)?;
    }
    if report.is_complete() {
        if report.changed() {
            let done = if report.dry_run {
                "Without --dry-run, the next open would then rebuild the deleted indexes and recover cleanly."
            } else {
                "Done: the next open rebuilds the deleted indexes and recovers cleanly."
            };
            writeln!(out, "{done}")?;
        }
        return Ok(());
    }
    let hint = match report.mode {
        RepairMode::LastSegmentTail => {
            "; `--truncate-at-first-invalid` removes the data from the first one on"
        }
        _ => "",
    };
    writeln!(
        out,
        "Left in place ({}{hint}):",
        Count(report.unrepaired.len() as u64, "problem", "problems")
    )?;
    for problem in &report.unrepaired {
        write_problem(problem, out)?;
    }
    Ok(())
}

fn write_partition_repair(p: &PartitionRepair, would: &str, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "partition {}:", p.partition)?;
    if let Some(cut) = &p.cut {
        writeln!(
            out,
            "  {would}cut at byte {} of {}\n    because: {}",
            cut.position,
            cut.path.display(),
            cut.reason
        )?;
        let offsets = cut.offsets_removed.map_or(String::new(), |(first, last)| {
            format!(", offsets {first}..={last} as their headers say")
        });
        writeln!(
            out,
            "    {} bytes {would}removed: {}, {}{offsets}; {} bytes unreadable",
            cut.bytes_removed,
            Count(cut.batches_removed, "batch", "batches"),
            Count(cut.records_removed, "record", "records"),
            cut.unreadable_bytes
        )?;
        if !cut.segments_deleted.is_empty() {
            let bases: Vec<String> = cut.segments_deleted.iter().map(u64::to_string).collect();
            writeln!(
                out,
                "    segments {would}deleted whole (base offsets): {}",
                bases.join(", ")
            )?;
        }
    }
    for path in &p.deleted_files {
        writeln!(out, "  {would}deleted {}", path.display())?;
    }
    if p.checkpoint_rewritten {
        writeln!(
            out,
            "  checkpoint {would}rewritten: the next open scans the end of the partition"
        )?;
    }
    Ok(())
}

fn cut_json(cut: &Cut) -> String {
    let mut o = Obj::new();
    o.str("path", &cut.path.to_string_lossy())
        .num("position", cut.position)
        .str("reason", corrupt_code(&cut.reason))
        .str("description", &cut.reason.to_string())
        .num("bytes_removed", cut.bytes_removed)
        .num("batches_removed", cut.batches_removed)
        .num("records_removed", cut.records_removed)
        .raw(
            "offsets_removed",
            cut.offsets_removed
                .map_or("null".into(), |(a, b)| format!("[{a},{b}]")),
        )
        .num("unreadable_bytes", cut.unreadable_bytes)
        .raw(
            "segments_deleted",
            arr(cut.segments_deleted.iter().map(u64::to_string)),
        );
    o.finish()
}

fn repair_json(report: &RepairReport) -> String {
    let partitions = report.partitions.iter().map(|p| {
        let mut o = Obj::new();
        o.num("partition", p.partition)
            .raw("cut", p.cut.as_ref().map_or("null".into(), cut_json))
            .raw(
                "deleted_files",
                arr(p.deleted_files.iter().map(|f| json_path(f))),
            )
            .num("checkpoint_rewritten", p.checkpoint_rewritten);
        o.finish()
    });
    let mode = match report.mode {
        RepairMode::TruncateAtFirstInvalid => "truncate_at_first_invalid",
        _ => "last_segment_tail",
    };
    let mut o = Obj::new();
    o.str("dir", &report.dir.to_string_lossy())
        .str("mode", mode)
        .num("dry_run", report.dry_run)
        .num("changed", report.changed())
        .num("complete", report.is_complete())
        .raw("partitions", arr(partitions))
        .raw(
            "unrepaired",
            arr(report.unrepaired.iter().map(problem_json)),
        );
    o.finish()
}

// ---------------------------------------------------------------------------
// stats
// ---------------------------------------------------------------------------

fn print_stats(stats: &LogStats, out: &mut dyn Write) -> io::Result<()> {
    writeln!(
        out,
        "{}: {} partitions, {}, {} records, compression ratio {:.2}",
        stats.dir.display(),
        stats.partitions.len(),
        HumanBytes(stats.bytes()),
        stats.records(),
        stats.compression_ratio()
    )?;
    for p in &stats.partitions {
        writeln!(
            out,
            "\npartition {}: offsets {}..{}, {} segments, {}, {} batches, {} records, compression ratio {:.2}",
            p.partition,
            p.start_offset,
            p.end_offset,
            p.segments.len(),
            HumanBytes(p.bytes),
            p.batches,
            p.records,
            p.compression_ratio()
        )?;
        if p.segments.is_empty() {
            continue;
        }
        writeln!(
            out,
            "  {:>20}  {:>12}  {:>9}  {:>10}  {:>12}  {:>12}  max timestamp",
            "base offset", "bytes", "batches", "records", "first offset", "last offset"
        )?;
        for s in &p.segments {
            let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
            let damaged = if s.valid_bytes < s.bytes {
                format!(
                    "  ({} bytes past an invalid batch)",
                    s.bytes - s.valid_bytes
                )
            } else {
                String::new()
            };
            writeln!(
                out,
                "  {:>20}  {:>12}  {:>9}  {:>10}  {:>12}  {:>12}  {}{damaged}",
                s.base_offset,
                s.bytes,
                s.batches,
                s.records,
                opt(s.first_offset),
                opt(s.last_offset),
                s.max_timestamp
                    .map_or("-".to_string(), |t| Timestamp(t).to_string()),
            )?;
        }
    }
    Ok(())
}

fn stats_json(stats: &LogStats) -> String {
    let partitions = stats.partitions.iter().map(|p| {
        let segments = p.segments.iter().map(|s| {
            let mut o = Obj::new();
            o.num("base_offset", s.base_offset)
                .str("path", &s.path.to_string_lossy())
                .num("bytes", s.bytes)
                .num("valid_bytes", s.valid_bytes)
                .num("batches", s.batches)
                .num("records", s.records)
                .raw("first_offset", json_opt(s.first_offset))
                .raw("last_offset", json_opt(s.last_offset))
                .raw("max_timestamp", json_opt(s.max_timestamp))
                .num("stored_record_bytes", s.stored_record_bytes)
                .num("uncompressed_record_bytes", s.uncompressed_record_bytes);
            o.finish()
        });
        let mut o = Obj::new();
        o.num("partition", p.partition)
            .num("start_offset", p.start_offset)
            .num("end_offset", p.end_offset)
            .num("bytes", p.bytes)
            .num("batches", p.batches)
            .num("records", p.records)
            .num("stored_record_bytes", p.stored_record_bytes)
            .num("uncompressed_record_bytes", p.uncompressed_record_bytes)
            .raw("compression_ratio", json_f64(p.compression_ratio()))
            .raw("segments", arr(segments));
        o.finish()
    });
    let mut o = Obj::new();
    o.str("dir", &stats.dir.to_string_lossy())
        .num("bytes", stats.bytes())
        .num("records", stats.records())
        .raw("compression_ratio", json_f64(stats.compression_ratio()))
        .raw("partitions", arr(partitions));
    o.finish()
}

// ---------------------------------------------------------------------------
// Formatting
// ---------------------------------------------------------------------------

/// A short stable name for a kind of corruption, for scripts.
fn corrupt_code(kind: &CorruptKind) -> &'static str {
    match kind {
        CorruptKind::Checksum { .. } => "checksum",
        CorruptKind::Length { .. } => "length",
        CorruptKind::Version(_) => "version",
        CorruptKind::OffsetOrder { .. } => "offset_order",
        CorruptKind::Record(_) => "record",
        CorruptKind::Index { .. } => "index",
        CorruptKind::Metadata(_) => "metadata",
        CorruptKind::Truncated { .. } => "truncated",
        _ => "other",
    }
}

/// A count with its noun, singular or plural.
struct Count(u64, &'static str, &'static str);

impl Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let noun = if self.0 == 1 { self.1 } else { self.2 };
        write!(f, "{} {noun}", self.0)
    }
}

/// A byte count for people: exact below a KiB, else with one decimal.
struct HumanBytes(u64);

impl Display for HumanBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
        if self.0 < 1024 {
            return write!(f, "{} B", self.0);
        }
        let mut value = self.0 as f64 / 1024.0;
        let mut unit = 0;
        while value >= 1024.0 && unit + 1 < UNITS.len() {
            value /= 1024.0;
            unit += 1;
        }
        write!(f, "{value:.1} {}", UNITS[unit])
    }
}

/// Milliseconds since the Unix epoch, shown as a UTC date and time.
struct Timestamp(i64);

impl Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.0.div_euclid(86_400_000);
        let ms_of_day = self.0.rem_euclid(86_400_000);
        let (year, month, day) = civil_from_days(days);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            ms_of_day / 3_600_000,
            ms_of_day / 60_000 % 60,
            ms_of_day / 1000 % 60,
            ms_of_day % 1000
        )
    }
}

/// The proleptic Gregorian date of a day counted from 1970-01-01, by the
/// usual era arithmetic (eras of 400 years, years starting in March).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

// ---------------------------------------------------------------------------
// JSON, written by hand
// ---------------------------------------------------------------------------

/// A JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_path(path: &Path) -> String {
    json_str(&path.to_string_lossy())
}

fn json_opt<T: Display>(value: Option<T>) -> String {
    value.map_or("null".into(), |v| v.to_string())
}

fn json_f64(value: f64) -> String {
    if value.is_finite() {
        format!("{value}")
    } else {
        "null".into()
    }
}

/// Nullable bytes: `null`, `{"text": "..."}` when UTF-8, else
/// `{"hex": "..."}`.
fn json_bytes(bytes: Option<&[u8]>) -> String {
    match bytes.map(Printable::of) {
        None => "null".into(),
        Some(Printable::Text(text)) => format!("{{\"text\":{}}}", json_str(text)),
        Some(Printable::Hex(digits)) => format!("{{\"hex\":\"{digits}\"}}"),
    }
}

fn arr(items: impl IntoIterator<Item = String>) -> String {
    let mut out = String::from("[");
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&item);
    }
    out.push(']');
    out
}

/// A JSON object built field by field.
struct Obj(String);

impl Obj {
    fn new() -> Obj {
        Obj(String::from("{"))
    }

    /// A field whose value is already JSON.
    fn raw(&mut self, key: &str, value: impl Display) -> &mut Obj {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        let _ = write!(self.0, "{}:{value}", json_str(key));
        self
    }

    /// A number or boolean field.
    fn num(&mut self, key: &str, value: impl Display) -> &mut Obj {
        self.raw(key, value)
    }

    fn str(&mut self, key: &str, value: &str) -> &mut Obj {
        self.raw(key, json_str(value))
    }

    fn finish(&mut self) -> String {
        let mut out = std::mem::take(&mut self.0);
        out.push('}');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Parsed, String> {
        parse_args(args.iter().map(OsString::from))
    }

    #[test]
    fn arguments_parse_in_any_order_and_refuse_misuse() {
        let Ok(Parsed::Run(args)) = parse(&["repair", "--dry-run", "/x", "--json"]) else {
            panic!("did not parse");
        };
        assert_eq!(args.command, Command::Repair);
        assert_eq!(args.path, PathBuf::from("/x"));
        assert!(args.dry_run && args.json && !args.truncate_at_first_invalid);
        assert_eq!(parse(&["verify", "--help"]), Ok(Parsed::Help));
        assert!(parse(&["verify"]).is_err());
        assert!(parse(&["frobnicate", "/x"]).is_err());
        assert!(parse(&["verify", "--records", "/x"]).is_err());
        assert!(parse(&["stats", "--dry-run", "/x"]).is_err());
        assert!(parse(&["dump", "/x", "/y"]).is_err());
        assert!(parse(&["dump", "--bogus", "/x"]).is_err());
        let Ok(Parsed::Run(args)) = parse(&["dump", "--", "--odd-name"]) else {
            panic!("did not parse");
        };
        assert_eq!(args.path, PathBuf::from("--odd-name"));
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_str("a\"b\\c\nd\u{1}é"), "\"a\\\"b\\\\c\\nd\\u0001é\"");
        assert_eq!(json_bytes(None), "null");
        assert_eq!(json_bytes(Some(b"hi")), "{\"text\":\"hi\"}");
        assert_eq!(json_bytes(Some(&[0xff, 0x01])), "{\"hex\":\"ff01\"}");
        let mut o = Obj::new();
        o.num("n", 1)
            .str("s", "x")
            .raw("a", arr(["1".into(), "2".into()]));
        assert_eq!(o.finish(), "{\"n\":1,\"s\":\"x\",\"a\":[1,2]}");
    }

    #[test]
    fn timestamps_show_as_utc() {
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Timestamp(1_700_000_000_123).to_string(),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(
            Timestamp(951_782_400_000).to_string(),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(Timestamp(-1).to_string(), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn sizes_and_long_values_are_shortened_for_people() {
        assert_eq!(HumanBytes(1023).to_string(), "1023 B");
        assert_eq!(HumanBytes(1536).to_string(), "1.5 KiB");
        assert_eq!(HumanBytes(3 << 20).to_string(), "3.0 MiB");
        let long = "é".repeat(100);
        let shown = Shown(Some(long.as_bytes())).to_string();
        assert!(shown.starts_with("\"éé"), "{shown}");
        assert!(shown.ends_with("... (200 bytes)"), "{shown}");
        assert_eq!(Shown(None).to_string(), "null");
    }
}
