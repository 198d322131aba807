//! Recovery rules, written as one decision table.
//!
//! Opening a partition looks at each segment and, where it scans, at each
//! batch, and decides from what it observes. The rules, with the test that
//! checks each:
//!
//! | # | observed | decision | test |
//! |---|---|---|---|
//! | 1 | the checkpoint says clean, names the last segment, and the file is exactly as long as recorded | trust it: no scan | `row1_clean_shutdown_is_trusted` |
//! | 2 | a segment before the one holding the recovery point (it was synced when it rolled) whose indexes check out | trust it: no scan | `row2_synced_segment_with_good_indexes_is_trusted` |
//! | 3 | a segment as in row 2 whose index is missing, not whole entries, or inconsistent | scan it, rebuild its indexes | `row3_bad_index_is_rebuilt` |
//! | 4 | the segment holding the recovery point or a later one, when the shutdown was not clean (or the clean mark does not match the files) | scan it, rebuild its indexes | `row4_unclean_tail_is_scanned` |
//! | 5 | while scanning the last segment, an invalid batch (bad header, bounds, checksum, or offsets not increasing) at or after the synced position | truncate the segment there | `row5_torn_tail_is_truncated` |
//! | 6 | an invalid batch below the synced position of the last segment, or anywhere in an earlier segment (below the synced position only headers are read, but for the last batch before it, which is verified in full; a checksum that fails there is found by the first read of the batch) | fail with `Error::Corrupt` naming the file and position | `row6_damage_in_synced_data_fails`, `tests::recovery_files::row6_*` |
//! | 7 | the last segment is shorter than its synced position | fail with `Error::Corrupt` | `row7_synced_bytes_missing_fails` |
//! | 8 | no valid checkpoint | every segment but the last is synced (rows 2, 3, 6); the last is scanned with nothing known synced | `row8_no_checkpoint` |
//! | 9 | an index file without its log file, or a leftover temporary file of an interrupted rewrite | delete it | `row9_leftovers_are_removed` |
//! | 10 | a file whose name is not one of the log's | leave it alone | `row10_foreign_files_are_ignored` |
//! | 11 | a poison marker left by a failed write or fsync | before anything else, cut the named segment at the marked position and remove later segments | `partition::tests::row11_a_failed_fsync_is_cut_at_the_next_open` |
//! | 12 | `cleaner-state` lists the groups of a committed compaction swap | finish it: check a renamed log's length, remove the replaced segments, rename the `.cleaned` files into place, store the state without the groups | `cleaner::swap::tests::row12_committed_swap_is_finished`, `cleaner::tests::open_finishes_a_committed_swap` |
//! | 13 | a `.cleaned` file that no committed group names, or `cleaner-state.tmp` | delete it: the clean did not commit | `cleaner::swap::tests::row13_uncommitted_clean_is_undone`, `cleaner::tests::open_undoes_an_uncommitted_clean` |
//!
//! Rows 12 and 13 are decided in `src/cleaner/swap.rs`.

/// How to open one segment (rows 1 to 4 and 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SegmentPlan {
    /// Row 1: trust the checkpoint's size and offset.
    TrustClean,
    /// Row 2: trust the file's length; check the indexes.
    TrustSynced,
    /// Rows 3 and 4: read every batch. Batches below `synced_position` are
    /// known durable; an invalid one there is corruption.
    Scan {
        /// Bytes of this segment known to be synced.
        synced_position: u64,
        /// Whether the segment is the last one (the only one that may have a
        /// torn tail).
        is_last: bool,
    },
}

/// What the checkpoint says, as far as planning needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecoveryPoint {
    pub clean: bool,
    pub segment: u64,
    pub position: u64,
}

/// Rows 1, 2, 4 and 8: the plan for the segment at `base_offset`.
/// `recovery_point` is `None` when there is no valid checkpoint.
pub(crate) fn plan_segment(
    base_offset: u64,
    is_last: bool,
    file_len: u64,
    recovery_point: Option<RecoveryPoint>,
) -> SegmentPlan {
    match recovery_point {
        Some(point)
            if point.clean
                && is_last
                && point.segment == base_offset
                && point.position == file_len =>
        {
            SegmentPlan::TrustClean
        }
        Some(point) if base_offset < point.segment && !is_last => SegmentPlan::TrustSynced,
        Some(point) if base_offset == point.segment => SegmentPlan::Scan {
            synced_position: point.position,
            is_last,
        },
        // After the recovery point's segment: rolled segments were synced
        // when they rolled; only the last may hold unsynced bytes.
        Some(_) | None if !is_last => SegmentPlan::TrustSynced,
        Some(_) | None => SegmentPlan::Scan {
            synced_position: 0,
            is_last,
        },
    }
}

/// What to do about an invalid batch found by a scan (rows 5 and 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BatchDecision {
    /// Row 5: cut the segment at the batch.
    TruncateTail,
    /// Row 6: the bytes were durable; report corruption.
    Fail,
}

/// Rows 5 and 6.
pub(crate) fn invalid_batch(is_last: bool, position: u64, synced_position: u64) -> BatchDecision {
    if is_last && position >= synced_position {
        BatchDecision::TruncateTail
    } else {
        BatchDecision::Fail
    }
}

/// Row 7: the synced prefix must still be there.
pub(crate) fn synced_bytes_present(file_len: u64, synced_position: u64) -> bool {
    file_len >= synced_position
}

/// Rows 9 and 10: what a directory entry of a partition is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry {
    /// A segment's log file.
    Log(u64),
    /// A segment's index or time index.
    Index(u64),
    /// A temporary file of an interrupted rewrite: delete it.
    Leftover,
    /// The checkpoint.
    Checkpoint,
    /// Not the log's: leave it alone.
    Foreign,
}

/// Suffix of the temporary file a truncation writes before renaming it.
pub(crate) const REWRITE_SUFFIX: &str = ".rewrite";

pub(crate) fn classify(name: &str) -> Entry {
    use crate::segment::{INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX, parse_file_name};
    if name == crate::checkpoint::FILE_NAME {
        return Entry::Checkpoint;
    }
    if let Some(stem) = name.strip_suffix(REWRITE_SUFFIX)
        && [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX]
            .iter()
            .any(|s| parse_file_name(stem, s).is_some())
    {
        return Entry::Leftover;
    }
    if let Some(base) = parse_file_name(name, LOG_SUFFIX) {
        return Entry::Log(base);
    }
    if let Some(base) =
        parse_file_name(name, INDEX_SUFFIX).or_else(|| parse_file_name(name, TIME_INDEX_SUFFIX))
    {
        return Entry::Index(base);
    }
    Entry::Foreign
}

#[cfg(test)]
mod tests {
    //! One test per row of the table. The rows that need files (3, 5, 6, 7,
    //! 9) are also exercised end to end in `partition::tests`.
    use super::*;

    fn point(clean: bool, segment: u64, position: u64) -> Option<RecoveryPoint> {
        Some(RecoveryPoint {
            clean,
            segment,
            position,
        })
    }

    #[test]
    fn row1_clean_shutdown_is_trusted() {
        assert_eq!(
            plan_segment(100, true, 4096, point(true, 100, 4096)),
            SegmentPlan::TrustClean
        );
        // A clean mark that does not match the file is not trusted.
        assert_eq!(
            plan_segment(100, true, 5000, point(true, 100, 4096)),
            SegmentPlan::Scan {
                synced_position: 4096,
                is_last: true
            }
        );
        assert_eq!(
            plan_segment(200, true, 4096, point(true, 100, 4096)),
            SegmentPlan::Scan {
                synced_position: 0,
                is_last: true
            }
        );
    }

    #[test]
    fn row2_synced_segment_with_good_indexes_is_trusted() {
        assert_eq!(
            plan_segment(0, false, 9000, point(false, 100, 10)),
            SegmentPlan::TrustSynced
        );
        assert_eq!(
            plan_segment(0, false, 9000, point(true, 100, 10)),
            SegmentPlan::TrustSynced
        );
    }

    #[test]
    fn row3_bad_index_is_rebuilt() {
        // The plan trusts the segment; the index check then turns it into a
        // scan, which `partition::tests::deleted_or_garbage_index_is_rebuilt`
        // covers with files. Here: such a scan is of synced data.
        assert_eq!(invalid_batch(false, 0, 0), BatchDecision::Fail);
    }

    #[test]
    fn row4_unclean_tail_is_scanned() {
        assert_eq!(
            plan_segment(100, true, 9000, point(false, 100, 4096)),
            SegmentPlan::Scan {
                synced_position: 4096,
                is_last: true
            }
        );
        // The recovery point's segment, not last, was synced when it rolled.
        assert_eq!(
            plan_segment(100, false, 9000, point(false, 100, 4096)),
            SegmentPlan::Scan {
                synced_position: 4096,
                is_last: false
            }
        );
    }

    #[test]
    fn row5_torn_tail_is_truncated() {
        assert_eq!(invalid_batch(true, 4096, 4096), BatchDecision::TruncateTail);
        assert_eq!(invalid_batch(true, 9000, 0), BatchDecision::TruncateTail);
    }

    #[test]
    fn row6_damage_in_synced_data_fails() {
        assert_eq!(invalid_batch(true, 100, 4096), BatchDecision::Fail);
        assert_eq!(invalid_batch(false, 9000, 0), BatchDecision::Fail);
    }

    #[test]
    fn row7_synced_bytes_missing_fails() {
        assert!(!synced_bytes_present(100, 4096));
        assert!(synced_bytes_present(4096, 4096));
    }

    #[test]
    fn row8_no_checkpoint() {
        assert_eq!(plan_segment(0, false, 9000, None), SegmentPlan::TrustSynced);
        assert_eq!(
            plan_segment(100, true, 9000, None),
            SegmentPlan::Scan {
                synced_position: 0,
                is_last: true
            }
        );
    }

    #[test]
    fn row9_leftovers_are_removed() {
        assert_eq!(
            classify("00000000000000000100.log.rewrite"),
            Entry::Leftover
        );
        assert_eq!(classify("00000000000000000100.index"), Entry::Index(100));
        assert_eq!(
            classify("00000000000000000100.timeindex"),
            Entry::Index(100)
        );
    }

    #[test]
    fn row10_foreign_files_are_ignored() {
        for name in [
            "notes.txt",
            "0100.log",
            "0000000000000000010x.log",
            "x.log.rewrite",
            ".DS_Store",
        ] {
            assert_eq!(classify(name), Entry::Foreign, "{name}");
        }
        assert_eq!(classify("00000000000000000100.log"), Entry::Log(100));
        assert_eq!(classify("checkpoint"), Entry::Checkpoint);
    }
}
