//! Checkpoints of a node kept in its pending folder: `checkpoints/<step>/` folders made
//! visible by rename once complete, plus a free-form `scratch/` folder.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::stage::Checkpoints;

/// How many complete checkpoints are kept (older ones are pruned).
pub const KEEP: usize = 2;

/// [`Checkpoints`] over `<pending>/checkpoints` and `<pending>/scratch`.
#[derive(Debug, Clone)]
pub struct DirCheckpoints {
    dir: PathBuf,
    scratch: PathBuf,
}

impl DirCheckpoints {
    /// Checkpoints of the pending entry at `pending`.
    pub fn new(pending: &Path) -> Self {
        Self {
            dir: pending.join("checkpoints"),
            scratch: pending.join("scratch"),
        }
    }

    /// Complete checkpoints, oldest first.
    pub fn steps(&self) -> Vec<(u64, PathBuf)> {
        let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.parse::<u64>().ok().map(|s| (s, e.path()))
            })
            .collect();
        v.sort();
        v
    }

    /// True if a resumed run would find saved state (a checkpoint or scratch files).
    pub fn has_state(&self) -> bool {
        !self.steps().is_empty()
            || std::fs::read_dir(&self.scratch)
                .map(|mut d| d.next().is_some())
                .unwrap_or(false)
    }
}

impl Checkpoints for DirCheckpoints {
    fn save(&self, step: u64, write: &mut dyn FnMut(&Path) -> Result<()>) -> Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let tmp = self.dir.join(format!(".tmp-{step}"));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        write(&tmp).with_context(|| format!("writing checkpoint {step}"))?;
        let dst = self.dir.join(format!("{step:020}"));
        if dst.exists() {
            std::fs::remove_dir_all(&dst)?;
        }
        std::fs::rename(&tmp, &dst)?;
        let steps = self.steps();
        if steps.len() > KEEP {
            for (_, p) in &steps[..steps.len() - KEEP] {
                let _ = std::fs::remove_dir_all(p);
            }
        }
        Ok(())
    }

    fn latest(&self) -> Option<(u64, PathBuf)> {
        self.steps().pop()
    }

    fn scratch_dir(&self) -> Option<PathBuf> {
        Some(self.scratch.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_latest_prune_and_failed_write_invisible() {
        let d = tempfile::tempdir().unwrap();
        let c = DirCheckpoints::new(d.path());
        assert!(c.latest().is_none());
        assert!(!c.has_state());
        for step in [1u64, 5, 12] {
            c.save(step, &mut |p| {
                Ok(std::fs::write(p.join("s"), step.to_string())?)
            })
            .unwrap();
        }
        let (s, p) = c.latest().unwrap();
        assert_eq!(s, 12);
        assert_eq!(std::fs::read_to_string(p.join("s")).unwrap(), "12");
        assert_eq!(c.steps().len(), KEEP);
        assert!(c.save(20, &mut |_| anyhow::bail!("disk full")).is_err());
        assert_eq!(c.latest().unwrap().0, 12);
        assert!(c.has_state());
    }
}
