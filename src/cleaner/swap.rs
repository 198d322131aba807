//! The swap of cleaned segments for the old ones, and how an open finishes
//! or undoes one that a crash interrupted: rows 12 and 13 of the recovery
//! table in `src/recovery.rs`.
//!
//! A clean writes each new segment as `<base>.log.cleaned`,
//! `<base>.index.cleaned` and `<base>.timeindex.cleaned`, fdatasyncs them
//! and fsyncs the directory. It commits by renaming a `cleaner-state` that
//! lists the swap's groups over the old one (fsync of the directory). Then
//! it removes the replaced segments' files, renames the cleaned files to
//! their final names (the `.log` last), fsyncs the directory, and stores a
//! `cleaner-state` without the groups. An open that finds groups in
//! `cleaner-state` runs the same steps again; they are idempotent.

use std::path::Path;

use super::state::SwapGroup;
use crate::error::{CorruptKind, Error, Result};
use crate::recovery::{self, Entry};
use crate::segment::{INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX, file_name};
use crate::storage::Storage;

/// Suffix of the files of a segment written by a clean, before the swap.
pub(crate) const CLEANED_SUFFIX: &str = ".cleaned";

/// One step of finishing or undoing a swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Row 12: the group's `.log.cleaned` is gone, so it was renamed into
    /// place: check that `<base>.log` is the new file (its length).
    CheckInstalled { log: String, log_bytes: u64 },
    /// Row 12: a file of a segment that a committed group replaces.
    RemoveReplaced(String),
    /// Row 12: a cleaned file of a committed group, renamed to its final name.
    Install { from: String, to: String },
    /// Row 13: a cleaned file that no committed group names, or the state's
    /// temporary file: the clean that wrote it did not commit.
    RemoveUncommitted(String),
}

/// The segment file name `name` stands for when it carries the cleaned
/// suffix, with its base offset.
fn cleaned(name: &str) -> Option<(&str, u64)> {
    let stem = name.strip_suffix(CLEANED_SUFFIX)?;
    match recovery::classify(stem) {
        Entry::Log(base) | Entry::Index(base) => Some((stem, base)),
        _ => None,
    }
}

/// Rows 12 and 13: the steps for a partition directory holding `names`,
/// when `cleaner-state` lists the committed groups `swap` (none if there is
/// no swap to finish). Checks come first, so nothing is changed before they
/// pass; then removals of replaced files, then renames (each group's `.log`
/// after its indexes), then removals of uncommitted files.
pub(crate) fn plan(names: &[String], swap: &[SwapGroup]) -> Vec<Step> {
    let mut checks = Vec::new();
    let mut removals = Vec::new();
    let mut installs = Vec::new();
    let mut uncommitted = Vec::new();
    let group_of = |base: u64| swap.iter().find(|g| g.base_offset == base);
    for group in swap {
        let log = file_name(group.base_offset, LOG_SUFFIX);
        if !names.contains(&format!("{log}{CLEANED_SUFFIX}")) {
            checks.push(Step::CheckInstalled {
                log,
                log_bytes: group.log_bytes,
            });
        }
        for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX, LOG_SUFFIX] {
            let to = file_name(group.base_offset, suffix);
            let from = format!("{to}{CLEANED_SUFFIX}");
            if names.contains(&from) {
                installs.push(Step::Install { from, to });
            }
        }
    }
    let mut names: Vec<&String> = names.iter().collect();
    names.sort();
    for name in names {
        if name == super::state::TEMP_FILE_NAME {
            uncommitted.push(Step::RemoveUncommitted(name.clone()));
            continue;
        }
        if let Some((_, base)) = cleaned(name) {
            if group_of(base).is_none() {
                uncommitted.push(Step::RemoveUncommitted(name.clone()));
            }
            continue;
        }
        if let Entry::Log(base) | Entry::Index(base) = recovery::classify(name)
            && swap
                .iter()
                .any(|g| g.base_offset < base && base < g.end_offset)
        {
            removals.push(Step::RemoveReplaced(name.clone()));
        }
    }
    checks
        .into_iter()
        .chain(removals)
        .chain(installs)
        .chain(uncommitted)
        .collect()
}

/// Carries out `steps` in `dir`, then fsyncs it if anything changed.
/// Returns whether anything changed.
///
/// # Errors
///
/// [`Error::Corrupt`] when a committed group's log is neither among the
/// cleaned files nor in place with its length (nothing is changed then);
/// [`Error::Io`].
pub(crate) fn execute(storage: &dyn Storage, dir: &Path, steps: &[Step]) -> Result<bool> {
    let mut changed = false;
    for step in steps {
        match step {
            Step::CheckInstalled { log, log_bytes } => {
                let path = dir.join(log);
                let available = if storage.exists(&path).map_err(|e| Error::io(&path, e))? {
                    storage
                        .open(&path, false)
                        .and_then(|f| f.len())
                        .map_err(|e| Error::io(&path, e))?
                } else {
                    0
                };
                if available != *log_bytes {
                    return Err(Error::corrupt(
                        &path,
                        0,
                        CorruptKind::Truncated {
                            needed: *log_bytes,
                            available,
                        },
                    ));
                }
            }
            Step::RemoveReplaced(name) | Step::RemoveUncommitted(name) => {
                let path = dir.join(name);
                match storage.remove_file(&path) {
                    Ok(()) => changed = true,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(&path, e)),
                }
            }
            Step::Install { from, to } => {
                let to = dir.join(to);
                storage
                    .rename(&dir.join(from), &to)
                    .map_err(|e| Error::io(&to, e))?;
                changed = true;
            }
        }
    }
    if changed {
        storage.sync_dir(dir).map_err(|e| Error::io(dir, e))?;
    }
    Ok(changed)
}

/// Paths of the cleaned files of the segment at `base`.
pub(crate) fn cleaned_paths(dir: &Path, base: u64) -> [std::path::PathBuf; 3] {
    [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX]
        .map(|suffix| dir.join(format!("{}{CLEANED_SUFFIX}", file_name(base, suffix))))
}

#[cfg(test)]
mod tests {
    //! Rows 12 and 13 as decisions; `cleaner::tests` crashes a real swap at
    //! every step and reopens.
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn seg(base: u64, suffix: &str) -> String {
        file_name(base, suffix)
    }

    fn cleaned_name(base: u64, suffix: &str) -> String {
        format!("{}{CLEANED_SUFFIX}", file_name(base, suffix))
    }

    const GROUP: SwapGroup = SwapGroup {
        base_offset: 0,
        end_offset: 200,
        log_bytes: 77,
    };

    /// Row 12, before any file was touched: the replaced segments go, the
    /// cleaned files take their names, the `.log` last; the segment past the
    /// group stays.
    #[test]
    fn row12_committed_swap_is_finished() {
        let dir = names(&[
            &seg(0, LOG_SUFFIX),
            &seg(0, INDEX_SUFFIX),
            &seg(0, TIME_INDEX_SUFFIX),
            &seg(100, LOG_SUFFIX),
            &seg(100, INDEX_SUFFIX),
            &seg(100, TIME_INDEX_SUFFIX),
            &seg(200, LOG_SUFFIX),
            &seg(200, INDEX_SUFFIX),
            &cleaned_name(0, LOG_SUFFIX),
            &cleaned_name(0, INDEX_SUFFIX),
            &cleaned_name(0, TIME_INDEX_SUFFIX),
            "checkpoint",
        ]);
        let install = |suffix| Step::Install {
            from: cleaned_name(0, suffix),
            to: seg(0, suffix),
        };
        assert_eq!(
            plan(&dir, &[GROUP]),
            vec![
                Step::RemoveReplaced(seg(100, INDEX_SUFFIX)),
                Step::RemoveReplaced(seg(100, LOG_SUFFIX)),
                Step::RemoveReplaced(seg(100, TIME_INDEX_SUFFIX)),
                install(INDEX_SUFFIX),
                install(TIME_INDEX_SUFFIX),
                install(LOG_SUFFIX),
            ]
        );
    }

    /// Row 12, after the `.log` was renamed into place: only its length is
    /// checked, and what is left of the replaced segments goes.
    #[test]
    fn row12_a_finished_rename_is_checked_not_redone() {
        let dir = names(&[
            &seg(0, LOG_SUFFIX),
            &seg(0, INDEX_SUFFIX),
            &seg(100, TIME_INDEX_SUFFIX),
            &seg(200, LOG_SUFFIX),
        ]);
        assert_eq!(
            plan(&dir, &[GROUP]),
            vec![
                Step::CheckInstalled {
                    log: seg(0, LOG_SUFFIX),
                    log_bytes: 77
                },
                Step::RemoveReplaced(seg(100, TIME_INDEX_SUFFIX)),
            ]
        );
    }

    /// Row 13: without a committed swap, cleaned files and the state's
    /// temporary file are an unfinished clean's: they go, nothing else does.
    #[test]
    fn row13_uncommitted_clean_is_undone() {
        let dir = names(&[
            &seg(0, LOG_SUFFIX),
            &seg(100, LOG_SUFFIX),
            &cleaned_name(0, LOG_SUFFIX),
            &cleaned_name(0, TIME_INDEX_SUFFIX),
            &cleaned_name(100, INDEX_SUFFIX),
            super::super::state::TEMP_FILE_NAME,
        ]);
        let mut expected = vec![
            Step::RemoveUncommitted(cleaned_name(0, LOG_SUFFIX)),
            Step::RemoveUncommitted(cleaned_name(0, TIME_INDEX_SUFFIX)),
            Step::RemoveUncommitted(cleaned_name(100, INDEX_SUFFIX)),
            Step::RemoveUncommitted(super::super::state::TEMP_FILE_NAME.into()),
        ];
        expected.sort_by_key(|s| format!("{s:?}"));
        let mut got = plan(&dir, &[]);
        got.sort_by_key(|s| format!("{s:?}"));
        assert_eq!(got, expected);
        // With a committed group, only the cleaned files of other bases go.
        let got = plan(&dir, &[GROUP]);
        assert!(got.contains(&Step::RemoveUncommitted(cleaned_name(100, INDEX_SUFFIX))));
        assert!(got.contains(&Step::RemoveReplaced(seg(100, LOG_SUFFIX))));
        assert!(!got.contains(&Step::RemoveUncommitted(cleaned_name(0, LOG_SUFFIX))));
    }

    /// Names that only look like cleaned files are not the log's (row 10).
    #[test]
    fn foreign_names_are_left_alone() {
        let dir = names(&["notes.cleaned", "0100.log.cleaned", "x.log.cleaned.bak"]);
        assert!(plan(&dir, &[]).is_empty());
        assert!(
            plan(&dir, &[GROUP])
                .iter()
                .all(|s| matches!(s, Step::CheckInstalled { .. }))
        );
    }
}
