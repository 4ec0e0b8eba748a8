//! Workspace keys and paths: keys sanitised to `[A-Za-z0-9._-]`, and every path checked to
//! stay inside the root before a process is started there.

use std::path::{Component, Path, PathBuf};

/// `raw` as a file and branch name: every character outside `[A-Za-z0-9._-]` becomes `_`, a
/// leading `.` or `-` becomes `_` (no hidden directory, no option, no `..`). When that changed
/// anything, a hash of `raw` is appended, so two different keys never share a workspace.
pub(crate) fn sanitize_key(raw: &str) -> String {
    let mut out: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() {
        out.push('_');
    }
    if out.starts_with(['.', '-']) {
        out.replace_range(0..1, "_");
    }
    // Git refuses ref names with ".." or ending in ".lock".
    let out_refsafe = out.replace("..", "__");
    let changed = out_refsafe != raw || raw.is_empty() || out_refsafe.ends_with(".lock");
    out = out_refsafe;
    if changed {
        out.truncate(64);
        out.push_str(&format!("-{:08x}", fnv1a(raw.as_bytes()) as u32));
    }
    out
}

/// A stable hash (the same in every run, unlike `std`'s), for key suffixes.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `root/name`, after checking lexically that it stays inside `root` (a single normal path
/// component), and, where both exist, that symlinks do not lead it out.
pub(crate) fn contained(root: &Path, name: &str) -> Result<PathBuf, String> {
    let mut parts = Path::new(name).components();
    match (parts.next(), parts.next()) {
        (Some(Component::Normal(_)), None) => {}
        _ => return Err(format!("{name:?} is not a single directory name")),
    }
    let path = root.join(name);
    if let (Ok(real_root), Ok(real)) = (root.canonicalize(), path.canonicalize()) {
        if !real.starts_with(&real_root) || real == real_root {
            return Err(format!(
                "{} resolves to {}, outside the workspace root {}",
                path.display(),
                real.display(),
                real_root.display()
            ));
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_safe_characters_and_hash_the_rest() {
        assert_eq!(sanitize_key("0"), "0");
        assert_eq!(sanitize_key("claude-1.a_b"), "claude-1.a_b");
        let slash = sanitize_key("a/b");
        let under = sanitize_key("a_b");
        assert!(slash.starts_with("a_b-"), "{slash}");
        assert_eq!(under, "a_b");
        assert_ne!(slash, under, "different keys never share a workspace");
        for raw in [
            "..", "../etc", "-rf", ".hidden", "", "x.lock", "a b\n", "ünï",
        ] {
            let key = sanitize_key(raw);
            assert!(
                key.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')),
                "{raw:?} -> {key:?}"
            );
            assert!(!key.starts_with(['.', '-']) && !key.contains(".."), "{key}");
            assert!(!key.ends_with(".lock"), "{key}");
        }
        assert_eq!(sanitize_key("a/b"), slash, "stable across calls");
    }

    #[test]
    fn paths_must_stay_inside_the_root() {
        let root = std::env::temp_dir().join(format!("aim-key-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        assert_eq!(contained(&root, "demo-0").unwrap(), root.join("demo-0"));
        for bad in ["..", "../x", "a/b", "/etc", ".", ""] {
            assert!(contained(&root, bad).is_err(), "{bad:?}");
        }
        std::os::unix::fs::symlink("/tmp", root.join("escape")).unwrap();
        let err = contained(&root, "escape").unwrap_err();
        assert!(err.contains("outside the workspace root"), "{err}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
