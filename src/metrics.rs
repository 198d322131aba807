//! Publishing partition counters through the `metrics` facade.
//!
//! Counters are published as absolute values from the [`PartitionStats`]
//! snapshot, labelled with the partition number, so the hot paths never call
//! into a recorder.

use metrics::{counter, gauge};

use crate::partition::Partition;
use crate::stats::PartitionStats;

/// Publishes the counters and gauges of every partition.
pub(crate) fn publish(partitions: &[Partition]) {
    for partition in partitions {
        publish_one(partition.id(), &partition.stats());
    }
}

fn publish_one(id: u32, s: &PartitionStats) {
    let p = id.to_string();
    let counters = [
        ("durable_log_batches_appended_total", s.batches_appended),
        ("durable_log_records_appended_total", s.records_appended),
        ("durable_log_bytes_appended_total", s.bytes_appended),
        (
            "durable_log_bytes_appended_uncompressed_total",
            s.bytes_appended_uncompressed,
        ),
        ("durable_log_fsyncs_total", s.fsyncs),
        (
            "durable_log_fsync_nanoseconds_total",
            u64::try_from(s.fsync_time.as_nanos()).unwrap_or(u64::MAX),
        ),
        ("durable_log_group_commits_total", s.group_commits),
        (
            "durable_log_group_commit_batches_total",
            s.group_commit_batches,
        ),
        ("durable_log_rolls_total", s.rolls),
        ("durable_log_batches_read_total", s.batches_read),
        ("durable_log_bytes_read_total", s.bytes_read),
    ];
    for (name, value) in counters {
        counter!(name, "partition" => p.clone()).absolute(value);
    }
    let gauges = [
        ("durable_log_start_offset", s.start_offset as f64),
        ("durable_log_end_offset", s.end_offset as f64),
        ("durable_log_durable_offset", s.durable_offset as f64),
        ("durable_log_segments", s.segments as f64),
        ("durable_log_size_bytes", s.size_bytes as f64),
        (
            "durable_log_largest_batch_bytes",
            s.largest_batch_bytes as f64,
        ),
        ("durable_log_compression_ratio", s.compression_ratio()),
        (
            "durable_log_recovery_seconds",
            s.recovery_time.as_secs_f64(),
        ),
        (
            "durable_log_recovery_truncated_bytes",
            s.recovery.truncated_bytes as f64,
        ),
    ];
    for (name, value) in gauges {
        gauge!(name, "partition" => p.clone()).set(value);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    use metrics::{
        Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder,
        SharedString, Unit,
    };

    use crate::{Config, Log, Record};

    /// Keeps the last value of every counter and gauge, by name and labels.
    #[derive(Default, Clone)]
    struct Capture(Arc<Mutex<HashMap<String, Arc<AtomicU64>>>>);

    struct Cell(Arc<AtomicU64>);

    impl CounterFn for Cell {
        fn increment(&self, value: u64) {
            self.0.fetch_add(value, Ordering::Relaxed);
        }
        fn absolute(&self, value: u64) {
            self.0.store(value, Ordering::Relaxed);
        }
    }

    impl GaugeFn for Cell {
        fn increment(&self, _: f64) {}
        fn decrement(&self, _: f64) {}
        fn set(&self, value: f64) {
            self.0.store(value.to_bits(), Ordering::Relaxed);
        }
    }

    impl Capture {
        fn cell(&self, key: &Key) -> Arc<Cell> {
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            Arc::new(Cell(
                self.0.lock().unwrap().entry(name).or_default().clone(),
            ))
        }

        fn get(&self, name: &str) -> u64 {
            self.0
                .lock()
                .unwrap()
                .get(name)
                .map_or(u64::MAX, |v| v.load(Ordering::Relaxed))
        }
    }

    impl Recorder for Capture {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            Counter::from_arc(self.cell(key))
        }
        fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::from_arc(self.cell(key))
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    #[test]
    fn counters_reach_the_recorder() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), Config::default().partitions(2)).unwrap();
        for p in 0..2 {
            let partition = log.partition(p).unwrap();
            for _ in 0..=p {
                partition
                    .append(&[Record::new("a"), Record::new("b")])
                    .unwrap();
            }
        }
        let capture = Capture::default();
        metrics::with_local_recorder(&capture, || log.publish_metrics());
        assert_eq!(
            capture.get("durable_log_records_appended_total{partition=0}"),
            2
        );
        assert_eq!(
            capture.get("durable_log_records_appended_total{partition=1}"),
            4
        );
        assert_eq!(
            capture.get("durable_log_batches_appended_total{partition=1}"),
            2
        );
        assert_eq!(
            f64::from_bits(capture.get("durable_log_end_offset{partition=1}")),
            4.0
        );
        assert!(capture.get("durable_log_fsyncs_total{partition=0}") >= 1);
    }
}
