//! What a turn changed in a git workspace: a [`Snapshot`] (HEAD, and the content of every file
//! that differs from it, from `git status`) before and after the turn; a file changed when its
//! content differs between the two, whether the turn committed it or not.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::git::git;
use super::{ChangedFile, FileChange};

/// The most paths hashed or listed per git command (keeps argument lists short).
const CHUNK: usize = 512;

/// The state of a worktree at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Snapshot {
    /// The commit checked out (`None` in a repository without commits).
    head: Option<String>,
    /// Every path that differs from `head`: its content's blob id, or `None` if it is gone.
    dirty: BTreeMap<String, Option<String>>,
}

/// Takes a snapshot of the worktree at `dir`, without taking git's index lock (so it never
/// trips up a tool's own git commands).
///
/// # Errors
/// Git's error in words.
pub(crate) fn snapshot(dir: &Path) -> Result<Snapshot, String> {
    // One command for both: the branch header carries HEAD.
    let status = git(
        dir,
        &[
            "--no-optional-locks",
            "status",
            "--porcelain=v2",
            "--branch",
            "-z",
            "--untracked-files=all",
            "--no-renames",
        ],
    )?;
    let mut head = None;
    let mut paths = Vec::new();
    for entry in status.split('\0').filter(|e| !e.is_empty()) {
        let path = match entry.as_bytes()[0] {
            b'#' => {
                if let Some(oid) = entry.strip_prefix("# branch.oid ") {
                    head = (oid != "(initial)").then(|| oid.to_string());
                }
                None
            }
            // "1 XY sub mH mI mW hH hI path"
            b'1' => entry.splitn(9, ' ').nth(8),
            // "u XY sub m1 m2 m3 mW h1 h2 h3 path"
            b'u' => entry.splitn(11, ' ').nth(10),
            b'?' => entry.get(2..),
            _ => None,
        };
        paths.extend(path.map(String::from));
    }
    let (present, gone): (Vec<String>, Vec<String>) = paths
        .into_iter()
        .partition(|p| dir.join(p).symlink_metadata().is_ok_and(|m| m.is_file()));
    let mut dirty: BTreeMap<String, Option<String>> = gone.into_iter().map(|p| (p, None)).collect();
    for chunk in present.chunks(CHUNK) {
        let mut args = vec!["hash-object", "--"];
        args.extend(chunk.iter().map(String::as_str));
        let hashes = git(dir, &args)?;
        for (path, hash) in chunk.iter().zip(hashes.lines()) {
            dirty.insert(path.clone(), Some(hash.trim().to_string()));
        }
    }
    Ok(Snapshot { head, dirty })
}

/// The blob ids of `paths` in commit `head` (paths missing there are left out).
fn tree_blobs(
    dir: &Path,
    head: Option<&str>,
    paths: &[&String],
) -> Result<BTreeMap<String, String>, String> {
    let mut blobs = BTreeMap::new();
    let Some(head) = head else { return Ok(blobs) };
    for chunk in paths.chunks(CHUNK) {
        let mut args = vec!["--literal-pathspecs", "ls-tree", "-r", "-z", head, "--"];
        args.extend(chunk.iter().map(|p| p.as_str()));
        for entry in git(dir, &args)?.split('\0').filter(|e| !e.is_empty()) {
            // "<mode> <type> <object>\t<path>"
            if let Some((meta, path)) = entry.split_once('\t') {
                if let Some(object) = meta.split(' ').nth(2) {
                    blobs.insert(path.to_string(), object.to_string());
                }
            }
        }
    }
    Ok(blobs)
}

/// The files whose content differs between `before` and `after` (both of the worktree at
/// `dir`), sorted by path.
///
/// # Errors
/// Git's error in words.
pub(crate) fn changes(
    dir: &Path,
    before: &Snapshot,
    after: &Snapshot,
) -> Result<Vec<ChangedFile>, String> {
    let mut paths: BTreeSet<String> = before.dirty.keys().cloned().collect();
    paths.extend(after.dirty.keys().cloned());
    if before.head != after.head {
        let committed = match (&before.head, &after.head) {
            (Some(a), Some(b)) => git(
                dir,
                &[
                    "diff",
                    "--name-only",
                    "-z",
                    "--no-renames",
                    a.as_str(),
                    b.as_str(),
                ],
            )?,
            (None, Some(b)) => git(dir, &["ls-tree", "-r", "-z", "--name-only", b.as_str()])?,
            (_, None) => String::new(),
        };
        paths.extend(
            committed
                .split('\0')
                .filter(|p| !p.is_empty())
                .map(String::from),
        );
    }
    let state = |snap: &Snapshot| -> Result<BTreeMap<String, Option<String>>, String> {
        let clean: Vec<&String> = paths
            .iter()
            .filter(|p| !snap.dirty.contains_key(*p))
            .collect();
        let blobs = tree_blobs(dir, snap.head.as_deref(), &clean)?;
        Ok(paths
            .iter()
            .map(|p| {
                let content = match snap.dirty.get(p) {
                    Some(content) => content.clone(),
                    None => blobs.get(p).cloned(),
                };
                (p.clone(), content)
            })
            .collect())
    };
    let (was, is) = (state(before)?, state(after)?);
    Ok(paths
        .iter()
        .filter_map(|p| {
            let change = match (&was[p], &is[p]) {
                (None, Some(_)) => FileChange::Created,
                (Some(_), None) => FileChange::Deleted,
                (Some(a), Some(b)) if a != b => FileChange::Modified,
                _ => return None,
            };
            Some(ChangedFile {
                path: p.clone(),
                change,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn repo(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("aim-changes-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        git(&dir, &["init", "-q", "-b", "main"]).unwrap();
        git(&dir, &["config", "user.email", "t@example.com"]).unwrap();
        git(&dir, &["config", "user.name", "t"]).unwrap();
        fs::write(dir.join("kept.txt"), "kept\n").unwrap();
        fs::write(dir.join("edit.txt"), "one\n").unwrap();
        fs::write(dir.join("gone.txt"), "bye\n").unwrap();
        fs::write(dir.join("pre-dirty.txt"), "x\n").unwrap();
        git(&dir, &["add", "."]).unwrap();
        git(&dir, &["commit", "-qm", "base"]).unwrap();
        dir
    }

    fn change(path: &str, change: FileChange) -> ChangedFile {
        ChangedFile {
            path: path.into(),
            change,
        }
    }

    #[test]
    fn finds_created_modified_and_deleted_files_committed_or_not() {
        let dir = repo("mixed");
        // Dirty before the turn and left alone: not the turn's change.
        fs::write(dir.join("pre-dirty.txt"), "y\n").unwrap();
        let before = snapshot(&dir).unwrap();
        fs::write(dir.join("edit.txt"), "two\n").unwrap();
        fs::create_dir_all(dir.join("sub dir")).unwrap();
        fs::write(dir.join("sub dir/new[1].txt"), "new\n").unwrap();
        fs::remove_file(dir.join("gone.txt")).unwrap();
        fs::write(dir.join("committed.txt"), "c\n").unwrap();
        git(&dir, &["add", "committed.txt", "gone.txt"]).unwrap();
        git(&dir, &["commit", "-qm", "turn"]).unwrap();
        fs::write(dir.join("untracked.txt"), "u\n").unwrap();
        let after = snapshot(&dir).unwrap();
        let found = changes(&dir, &before, &after).unwrap();
        assert_eq!(
            found,
            vec![
                change("committed.txt", FileChange::Created),
                change("edit.txt", FileChange::Modified),
                change("gone.txt", FileChange::Deleted),
                change("sub dir/new[1].txt", FileChange::Created),
                change("untracked.txt", FileChange::Created),
            ]
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_turn_that_changes_nothing_reports_nothing() {
        let dir = repo("none");
        fs::write(dir.join("edit.txt"), "dirty\n").unwrap();
        let before = snapshot(&dir).unwrap();
        let after = snapshot(&dir).unwrap();
        assert_eq!(changes(&dir, &before, &after).unwrap(), vec![]);
        // Committing an already-dirty file unchanged is no change of content either.
        git(&dir, &["commit", "-qam", "same"]).unwrap();
        let committed = snapshot(&dir).unwrap();
        assert_eq!(changes(&dir, &before, &committed).unwrap(), vec![]);
        // A file modified then restored within the turn: no change.
        fs::write(dir.join("kept.txt"), "tmp\n").unwrap();
        fs::write(dir.join("kept.txt"), "kept\n").unwrap();
        assert_eq!(
            changes(&dir, &committed, &snapshot(&dir).unwrap()).unwrap(),
            vec![]
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
