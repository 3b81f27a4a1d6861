//! Where real data sets come from: a local folder, a local archive (`.tar.gz`, `.tgz`, `.tar`)
//! or an `http(s)` URL. URLs are downloaded into the downloads folder with progress, hashed
//! while streaming, checked against the `sha256` from the parameters, and only then renamed
//! to their final name (`<sha256>-<file name>`), so a failed or corrupt download never
//! appears there; a file already present under that name is verified and reused, never
//! downloaded again. Archives are unpacked into a temporary folder inside the downloads
//! folder that is removed when the returned [`SourceDir`] is dropped.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use crate::Progress;

/// A folder holding the data set's files (`root`), possibly inside a temporary unpack folder.
#[derive(Debug)]
pub struct SourceDir {
    pub root: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

/// Checks the shape of a `sha256` parameter (64 hex digits).
pub fn check_sha256(field: &str, sha: &Option<String>) -> Result<()> {
    if let Some(s) = sha
        && (s.len() != 64 || !s.chars().all(|c| c.is_ascii_hexdigit()))
    {
        bail!("{field}: sha256 must be 64 hexadecimal digits, got {s:?}");
    }
    Ok(())
}

/// True for `http://` and `https://` sources.
pub fn is_url(source: &str) -> bool {
    source.starts_with("http://") || source.starts_with("https://")
}

/// Resolves `source` to a folder containing `marker`, a file or folder path relative to it
/// (searched at depth ≤ 2).
pub fn open(
    source: &str,
    sha256: Option<&str>,
    downloads: &Path,
    marker: &str,
    progress: Progress,
) -> Result<SourceDir> {
    let archive = if is_url(source) {
        let Some(sha) = sha256 else {
            bail!("dataset.sha256 is required for a URL source ({source})");
        };
        download(source, sha, downloads, progress)?
    } else {
        let path = PathBuf::from(source);
        if !path.exists() {
            bail!(
                "data source {} does not exist (expected a folder or a .tar.gz archive)",
                path.display()
            );
        }
        if path.is_dir() {
            let root = find_marker(&path, marker)?;
            return Ok(SourceDir { root, _tmp: None });
        }
        if let Some(sha) = sha256 {
            verify(&path, sha)?;
        }
        path
    };
    std::fs::create_dir_all(downloads)
        .with_context(|| format!("creating {}", downloads.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".unpack-")
        .tempdir_in(downloads)
        .with_context(|| format!("creating a temporary folder in {}", downloads.display()))?;
    unpack(&archive, tmp.path(), progress)?;
    let root = find_marker(tmp.path(), marker)
        .with_context(|| format!("archive {} does not contain {marker}", archive.display()))?;
    Ok(SourceDir {
        root,
        _tmp: Some(tmp),
    })
}

/// Breadth-first search (depth ≤ 2) for the folder that holds `marker` (a file or a folder).
fn find_marker(dir: &Path, marker: &str) -> Result<PathBuf> {
    let mut level = vec![dir.to_path_buf()];
    for _ in 0..3 {
        let mut next = Vec::new();
        for d in &level {
            if d.join(marker).exists() {
                return Ok(d.clone());
            }
            let mut subs: Vec<PathBuf> = std::fs::read_dir(d)
                .with_context(|| format!("listing {}", d.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_dir())
                .collect();
            subs.sort();
            next.extend(subs);
        }
        level = next;
    }
    bail!(
        "{}: no {marker} found in it or its subfolders",
        dir.display()
    )
}

/// Unpacks a tar (optionally gzip-compressed) archive into `dest`.
fn unpack(archive: &Path, dest: &Path, progress: Progress) -> Result<()> {
    let name = archive
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let file = std::fs::File::open(archive)
        .with_context(|| format!("opening archive {}", archive.display()))?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let counted = CountingReader {
        inner: file,
        done: 0,
        total,
        progress,
        phase: "unpack",
    };
    let reader: Box<dyn Read> = if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        Box::new(flate2::read::GzDecoder::new(counted))
    } else if name.ends_with(".tar") {
        Box::new(counted)
    } else {
        bail!(
            "{}: unsupported archive type (expected .tar.gz, .tgz or .tar)",
            archive.display()
        );
    };
    let mut tar = tar::Archive::new(reader);
    let entries = tar
        .entries()
        .with_context(|| format!("reading archive {}", archive.display()))?;
    let mut n = 0;
    for entry in entries {
        let mut entry = entry
            .with_context(|| format!("archive {} is truncated or corrupt", archive.display()))?;
        let what = entry
            .path()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        entry.unpack_in(dest).with_context(|| {
            format!(
                "archive {} is truncated or corrupt (while unpacking {what})",
                archive.display()
            )
        })?;
        n += 1;
    }
    if n == 0 {
        bail!(
            "archive {} is empty or not a tar archive",
            archive.display()
        );
    }
    Ok(())
}

struct CountingReader<'a, R> {
    inner: R,
    done: u64,
    total: u64,
    progress: Progress<'a>,
    phase: &'static str,
}

impl<R: Read> Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let before = self.done >> 20;
        self.done += n as u64;
        if self.done >> 20 != before || n == 0 {
            (self.progress)(self.phase, self.done, self.total);
        }
        Ok(n)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

fn verify(path: &Path, sha: &str) -> Result<()> {
    let got = sha256_file(path)?;
    if !got.eq_ignore_ascii_case(sha) {
        bail!(
            "checksum mismatch for {}: expected sha256 {sha}, got {got}",
            path.display()
        );
    }
    Ok(())
}

/// The final path of a download of `url` with checksum `sha`.
pub fn download_path(url: &str, sha: &str, downloads: &Path) -> PathBuf {
    let tail = url.split(['?', '#']).next().unwrap_or(url);
    let name = tail
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .unwrap_or("download");
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    downloads.join(format!("{}-{name}", sha.to_ascii_lowercase()))
}

/// Downloads `url` into `downloads` (or reuses the verified file already there).
pub fn download(url: &str, sha: &str, downloads: &Path, progress: Progress) -> Result<PathBuf> {
    let dest = download_path(url, sha, downloads);
    if dest.is_file() {
        verify(&dest, sha)
            .context("the file already downloaded is corrupt; delete it to download again")?;
        return Ok(dest);
    }
    std::fs::create_dir_all(downloads)
        .with_context(|| format!("creating {}", downloads.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".download-")
        .tempfile_in(downloads)
        .with_context(|| format!("creating a temporary file in {}", downloads.display()))?;
    let resp = ureq::get(url)
        .call()
        .with_context(|| format!("downloading {url}"))?;
    let total = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let mut body = resp.into_body().into_reader();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut done = 0u64;
    progress("download", 0, total);
    loop {
        let n = body
            .read(&mut buf)
            .with_context(|| format!("downloading {url} (after {done} bytes)"))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        tmp.write_all(&buf[..n])
            .with_context(|| format!("writing {}", tmp.path().display()))?;
        done += n as u64;
        progress("download", done, total);
    }
    if total > 0 && done != total {
        bail!("downloading {url}: got {done} of {total} bytes");
    }
    let got = hex(&h.finalize());
    if !got.eq_ignore_ascii_case(sha) {
        bail!("checksum mismatch for {url}: expected sha256 {sha}, got {got}; nothing was saved");
    }
    tmp.as_file().sync_all().ok();
    tmp.persist(&dest)
        .with_context(|| format!("saving {}", dest.display()))?;
    Ok(dest)
}
