//! Content hashing of files and folders with blake3: many files hashed in parallel, large
//! files memory-mapped and hashed multi-threaded. Order of combination is fixed (sorted
//! relative paths), so the result never depends on thread timing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use anyhow::{Context, Result};
use rayon::prelude::*;

/// Files at least this large are memory-mapped and hashed with rayon.
pub const MMAP_THRESHOLD: u64 = 1 << 20;

/// blake3 of one file's content.
pub fn hash_file(path: &Path) -> Result<blake3::Hash> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    let mut h = blake3::Hasher::new();
    if len >= MMAP_THRESHOLD {
        h.update_mmap_rayon(path)
            .with_context(|| format!("cannot hash {}", path.display()))?;
    } else {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        h.update(&bytes);
    }
    Ok(h.finalize())
}

/// Every regular file under `dir`, as (relative path with `/`, absolute path), sorted.
pub fn list_files(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let mut stack = vec![(String::new(), dir.to_path_buf())];
    while let Some((rel, d)) = stack.pop() {
        let rd = std::fs::read_dir(&d).with_context(|| format!("cannot list {}", d.display()))?;
        for e in rd {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let r = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let p = e.path();
            let md =
                std::fs::metadata(&p).with_context(|| format!("cannot read {}", p.display()))?;
            if md.is_dir() {
                stack.push((r, p));
            } else {
                out.push((r, p));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// (relative path, blake3 hex, size) of every file under `dir`, hashed in parallel.
pub fn hash_tree(dir: &Path) -> Result<Vec<(String, String, u64)>> {
    let files = list_files(dir)?;
    files
        .par_iter()
        .map(|(rel, p)| {
            let size = std::fs::metadata(p)?.len();
            Ok((rel.clone(), hash_file(p)?.to_hex().to_string(), size))
        })
        .collect()
}

type Memo = HashMap<(PathBuf, SystemTime, u64), [u8; 32]>;
static MEMO: Mutex<Option<Memo>> = Mutex::new(None);

/// Forget remembered file hashes (benchmarks; long-lived processes).
pub fn clear_memo() {
    *MEMO.lock().unwrap() = None;
}

/// blake3 over the content of the given files or folders (relative to `base`), in order;
/// folders contribute their sorted relative paths and file hashes. Hashes are remembered per
/// (path, mtime, size) within the process, so swept nodes sharing deps hash them once.
pub fn hash_paths(base: &Path, paths: &[String]) -> Result<blake3::Hash> {
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for p in paths {
        let abs = base.join(p);
        let md = std::fs::metadata(&abs)
            .with_context(|| format!("dependency `{p}` ({})", abs.display()))?;
        if md.is_dir() {
            for (rel, f) in list_files(&abs)? {
                files.push((format!("{p}/{rel}"), f));
            }
        } else {
            files.push((p.clone(), abs));
        }
    }
    let hashes: Vec<[u8; 32]> = files
        .par_iter()
        .map(|(_, f)| {
            let md = std::fs::metadata(f)?;
            let id = (
                f.clone(),
                md.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                md.len(),
            );
            if let Some(h) = MEMO.lock().unwrap().as_ref().and_then(|m| m.get(&id)) {
                return Ok(*h);
            }
            let h = *hash_file(f)?.as_bytes();
            MEMO.lock()
                .unwrap()
                .get_or_insert_with(HashMap::new)
                .insert(id, h);
            Ok(h)
        })
        .collect::<Result<_>>()?;
    let mut h = blake3::Hasher::new();
    for ((rel, _), fh) in files.iter().zip(&hashes) {
        h.update(&(rel.len() as u64).to_le_bytes());
        h.update(rel.as_bytes());
        h.update(fh);
    }
    Ok(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_file_hash_equals_plain_blake3() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big");
        let data: Vec<u8> = (0..(3u32 << 20))
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        std::fs::write(&p, &data).unwrap();
        assert_eq!(hash_file(&p).unwrap(), blake3::hash(&data));
        std::fs::write(dir.path().join("small"), b"abc").unwrap();
        assert_eq!(
            hash_file(&dir.path().join("small")).unwrap(),
            blake3::hash(b"abc")
        );
    }

    #[test]
    fn folder_hash_depends_on_content_and_names() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("d/sub")).unwrap();
        std::fs::write(dir.path().join("d/a"), b"1").unwrap();
        std::fs::write(dir.path().join("d/sub/b"), b"2").unwrap();
        let h1 = hash_paths(dir.path(), &["d".into()]).unwrap();
        std::fs::write(dir.path().join("d/sub/b"), b"3").unwrap();
        let h2 = hash_paths(dir.path(), &["d".into()]).unwrap();
        assert_ne!(h1, h2);
        std::fs::rename(dir.path().join("d/sub/b"), dir.path().join("d/sub/c")).unwrap();
        let h3 = hash_paths(dir.path(), &["d".into()]).unwrap();
        assert_ne!(h2, h3);
        assert!(hash_paths(dir.path(), &["missing".into()]).is_err());
    }
}
