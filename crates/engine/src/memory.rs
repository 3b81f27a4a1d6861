//! The memory budget of a run: how many bytes the nodes running at once may need together
//! (their kinds' [`crate::StageKind::memory`] estimates). Read once when a run starts:
//! `WHITTLE_MEMORY_LIMIT` (bytes, or with a suffix `K`, `M`, `G`, `T` — powers of 1024 — e.g.
//! `512M`, `1.5G`; `off` disables the guard) if set, else the smaller of `MemAvailable` in
//! `/proc/meminfo` and what the process's cgroup still allows (v2 `memory.max` −
//! `memory.current`, v1 `memory.limit_in_bytes` − `memory.usage_in_bytes`). Unknown (no
//! `/proc`) means no guard.

use anyhow::{Result, bail};

/// The override variable.
pub const LIMIT_VAR: &str = "WHITTLE_MEMORY_LIMIT";

/// A memory budget and where it came from (for messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Budget {
    pub bytes: u64,
    pub source: String,
}

/// The budget of a run starting now (`None`: no guard).
pub fn budget() -> Result<Option<Budget>> {
    if let Ok(v) = std::env::var(LIMIT_VAR) {
        if matches!(v.trim(), "off" | "none" | "unlimited") {
            return Ok(None);
        }
        let bytes = parse_bytes(&v).map_err(|e| anyhow::anyhow!("{LIMIT_VAR}={v:?}: {e}"))?;
        return Ok(Some(Budget {
            bytes,
            source: format!("{LIMIT_VAR}={}", v.trim()),
        }));
    }
    let avail = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| meminfo_available(&t))
        .map(|b| Budget {
            bytes: b,
            source: "MemAvailable in /proc/meminfo".into(),
        });
    let cgroup = cgroup_room().map(|b| Budget {
        bytes: b,
        source: "the cgroup memory limit".into(),
    });
    Ok(match (avail, cgroup) {
        (Some(a), Some(c)) if c.bytes < a.bytes => Some(c),
        (Some(a), _) => Some(a),
        (None, c) => c,
    })
}

/// `123`, `64K`, `512M`, `1.5G`, `2GiB`, `1T`: bytes (powers of 1024).
pub fn parse_bytes(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("expected a number of bytes, e.g. 8G or 512M"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        u => bail!("unknown unit `{u}` (use K, M, G or T)"),
    };
    if !n.is_finite() || n < 0.0 {
        bail!("expected a non-negative number of bytes");
    }
    Ok((n * mult as f64) as u64)
}

/// `MemAvailable` of a `/proc/meminfo` text, in bytes.
pub fn meminfo_available(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Bytes the process's cgroup still allows, if it has a limit.
fn cgroup_room() -> Option<u64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let read = |p: &str| -> Option<u64> { std::fs::read_to_string(p).ok()?.trim().parse().ok() };
    // v2: the `0::/path` line
    let v2 = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("/");
    for dir in [
        format!("/sys/fs/cgroup{}", v2.trim_end_matches('/')),
        "/sys/fs/cgroup".into(),
    ] {
        if let Some(max) = read(&format!("{dir}/memory.max")) {
            let cur = read(&format!("{dir}/memory.current")).unwrap_or(0);
            return Some(max.saturating_sub(cur));
        }
    }
    // v1: limits near u64::MAX mean none
    let v1 = own
        .lines()
        .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string()));
    let mut dirs = vec!["/sys/fs/cgroup/memory".to_string()];
    if let Some(p) = v1 {
        dirs.insert(
            0,
            format!("/sys/fs/cgroup/memory{}", p.trim_end_matches('/')),
        );
    }
    for dir in dirs {
        if let Some(max) = read(&format!("{dir}/memory.limit_in_bytes")) {
            if max >= 1 << 60 {
                return None;
            }
            let cur = read(&format!("{dir}/memory.usage_in_bytes")).unwrap_or(0);
            return Some(max.saturating_sub(cur));
        }
    }
    None
}

/// `12.3 GiB`, `456.0 MiB`, `789 B`: a byte count for messages.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(parse_bytes("123").unwrap(), 123);
        assert_eq!(parse_bytes("64K").unwrap(), 65_536);
        assert_eq!(parse_bytes(" 512M ").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_bytes("2GiB").unwrap(), 2 << 30);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("5X").is_err());
        assert_eq!(human(789), "789 B");
        assert_eq!(human(3 << 29), "1.5 GiB");
        let mi = "MemTotal:       24684084 kB\nMemAvailable:   23183604 kB\n";
        assert_eq!(meminfo_available(mi), Some(23_183_604 * 1024));
    }
}
