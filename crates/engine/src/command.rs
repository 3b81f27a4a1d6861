//! The built-in `command` stage kind (like a DVC stage): runs `cmd` in `sh` with the
//! experiment file's folder as working directory.
//!
//! Environment: `WHITTLE_OUT` (output folder), `WHITTLE_IN_<STAGE>` (each input's output
//! folder; stage name upper-cased, other characters as `_`; a gathered input lists all its
//! nodes' folders joined by `:` and also sets `WHITTLE_IN_<STAGE>_<i>`), `WHITTLE_CHECKPOINTS`
//! (a folder that survives interruption, for commands that resume themselves),
//! `WHITTLE_SEED`, `WHITTLE_NODE`, `WHITTLE_THREADS`, and every `env` entry.
//! Optional `deps = ["path", ...]`: files or folders whose content hashes join the key.
//! stdout and stderr are kept in the cache entry under `logs/`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::canon::display_value;
use crate::stage::{ParamError, RunContext, StageKind, from_params};

/// Parameters of a `command` stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandParams {
    /// Shell command.
    pub cmd: String,
    /// Files or folders (relative to the experiment file) whose content joins the key.
    #[serde(default)]
    pub deps: Vec<String>,
    /// Threads the command uses (counted against `--jobs`).
    #[serde(default = "one")]
    pub threads: usize,
    /// Extra environment variables (strings, numbers or booleans); sweepable as `env.NAME`.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, toml::Value>,
}

fn one() -> usize {
    1
}

/// The `command` kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct CommandKind;

/// `WHITTLE_IN_<STAGE>` for a stage name.
pub fn input_var(stage: &str) -> String {
    let s: String = stage
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("WHITTLE_IN_{s}")
}

impl StageKind for CommandKind {
    fn name(&self) -> &'static str {
        "command"
    }

    fn version(&self) -> &'static str {
        "1"
    }

    fn resolve(&self, params: &toml::Table) -> Result<serde_json::Value, ParamError> {
        let p: CommandParams = from_params(params)?;
        if p.cmd.trim().is_empty() {
            return Err(ParamError::new(
                ["cmd"],
                "`cmd` is empty; expected a shell command",
            ));
        }
        if p.threads == 0 {
            return Err(ParamError::new(["threads"], "`threads` must be at least 1"));
        }
        for (k, v) in &p.env {
            if matches!(
                v,
                toml::Value::Table(_) | toml::Value::Array(_) | toml::Value::Datetime(_)
            ) {
                return Err(ParamError::new(
                    ["env", k.as_str()],
                    "expected a string, number or boolean",
                ));
            }
            if k.is_empty()
                || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                || k.starts_with("WHITTLE_")
            {
                return Err(ParamError::new(
                    ["env", k.as_str()],
                    "environment variable names must be letters, digits and `_`, not starting with WHITTLE_",
                ));
            }
        }
        serde_json::to_value(&p).map_err(|e| ParamError::new(Vec::<String>::new(), e.to_string()))
    }

    fn threads(&self, resolved: &serde_json::Value) -> usize {
        resolved
            .get("threads")
            .and_then(|t| t.as_u64())
            .unwrap_or(1) as usize
    }

    fn extra_key(&self, resolved: &serde_json::Value, dir: &Path) -> Result<Vec<u8>> {
        let p: CommandParams = serde_json::from_value(resolved.clone())?;
        if p.deps.is_empty() {
            return Ok(Vec::new());
        }
        Ok(crate::hash::hash_paths(dir, &p.deps)?.as_bytes().to_vec())
    }

    fn run(&self, ctx: &RunContext) -> Result<serde_json::Value> {
        let p: CommandParams = serde_json::from_value(ctx.params.clone())?;
        let entry = ctx
            .out_dir
            .parent()
            .context("output folder has no parent")?;
        let logs = entry.join("logs");
        std::fs::create_dir_all(&logs)?;
        let stdout = std::fs::File::create(logs.join("stdout.txt"))?;
        let stderr_path = logs.join("stderr.txt");
        let stderr = std::fs::File::create(&stderr_path)?;
        let scratch = ctx
            .checkpoints
            .scratch_dir()
            .unwrap_or_else(|| entry.join("scratch"));
        std::fs::create_dir_all(&scratch)?;

        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(&p.cmd)
            .current_dir(ctx.experiment_dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .env("WHITTLE_OUT", ctx.out_dir)
            .env("WHITTLE_CHECKPOINTS", &scratch)
            .env("WHITTLE_SEED", ctx.seed.to_string())
            .env("WHITTLE_NODE", ctx.node)
            .env("WHITTLE_THREADS", ctx.threads.to_string());
        for (k, v) in &p.env {
            cmd.env(k, env_text(v));
        }
        let mut seen: Vec<&str> = Vec::new();
        for input in ctx.inputs {
            if seen.contains(&input.stage.as_str()) {
                continue;
            }
            seen.push(&input.stage);
            let all: Vec<&crate::stage::InputArtifact> = ctx
                .inputs
                .iter()
                .filter(|i| i.stage == input.stage)
                .collect();
            let var = input_var(&input.stage);
            let joined: Vec<String> = all.iter().map(|i| i.dir.display().to_string()).collect();
            cmd.env(&var, joined.join(":"));
            if all.len() > 1 {
                for (i, a) in all.iter().enumerate() {
                    cmd.env(format!("{var}_{i}"), &a.dir);
                }
            }
        }
        // a previous run killed with -9 may have left the command's children running
        kill_strays(ctx.out_dir);
        own_group_and_die_with_parent(&mut cmd);
        let mut child = cmd.spawn().context("cannot start `sh`")?;
        ctx.progress.set_message("running command");
        let mut term_sent: Option<Instant> = None;
        let status = loop {
            if let Some(st) = child.try_wait()? {
                break st;
            }
            if ctx.cancel.is_cancelled() {
                match term_sent {
                    None => {
                        terminate(&child);
                        term_sent = Some(Instant::now());
                    }
                    Some(t) if t.elapsed() > Duration::from_secs(10) => {
                        let _ = child.kill();
                    }
                    _ => {}
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if term_sent.is_some() {
            wait_group_gone(&child);
            bail!("cancelled");
        }
        if !status.success() {
            let err = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            let tail: Vec<&str> = err
                .lines()
                .rev()
                .take(10)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            bail!(
                "command failed ({status}); stderr ends with:\n{}",
                if tail.is_empty() {
                    "(empty)".to_string()
                } else {
                    tail.join("\n")
                }
            );
        }
        // a command may report metrics by writing metrics.json into its output folder
        let metrics_path = ctx.out_dir.join("metrics.json");
        if metrics_path.is_file() {
            let text = std::fs::read_to_string(&metrics_path)?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", metrics_path.display()))?;
            if v.is_object() {
                return Ok(v);
            }
        }
        Ok(serde_json::json!({}))
    }
}

fn env_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        v => display_value(v),
    }
}

/// Ask the command's whole process group to stop (SIGTERM) so it can save its state.
fn terminate(child: &std::process::Child) {
    #[cfg(unix)]
    unsafe {
        libc::kill(-(child.id() as libc::pid_t), libc::SIGTERM);
    }
    #[cfg(not(unix))]
    {
        let _ = child;
    }
}

/// After the shell exited on SIGTERM, give the rest of its group 10 s to finish saving,
/// then kill what is left.
fn wait_group_gone(child: &std::process::Child) {
    #[cfg(unix)]
    {
        let pg = -(child.id() as libc::pid_t);
        let t = Instant::now();
        while unsafe { libc::kill(pg, 0) } == 0 {
            if t.elapsed() > Duration::from_secs(10) {
                unsafe { libc::kill(pg, libc::SIGKILL) };
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    #[cfg(not(unix))]
    {
        let _ = child;
    }
}

/// The command runs in its own process group (so whittle, not the terminal, decides when it
/// stops); on Linux the shell is killed when the thread that started it dies (e.g. `kill -9`
/// of whittle).
fn own_group_and_die_with_parent(cmd: &mut Command) {
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        #[cfg(target_os = "linux")]
        let parent = std::process::id() as libc::pid_t;
        unsafe {
            cmd.pre_exec(move || {
                libc::setpgid(0, 0);
                #[cfg(target_os = "linux")]
                {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    if libc::getppid() != parent {
                        libc::_exit(1);
                    }
                }
                Ok(())
            });
        }
    }
    #[cfg(not(unix))]
    {
        let _ = cmd;
    }
}

/// Kill processes left from an earlier attempt at this node (found by their `WHITTLE_OUT`),
/// so no orphan of a killed run keeps writing into the pending folder. Linux only.
fn kill_strays(out_dir: &Path) {
    #[cfg(target_os = "linux")]
    {
        let needle = format!("WHITTLE_OUT={}", out_dir.display());
        let me = std::process::id();
        let Ok(rd) = std::fs::read_dir("/proc") else {
            return;
        };
        let mut killed = Vec::new();
        for e in rd.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if pid == me {
                continue;
            }
            let Ok(env) = std::fs::read(e.path().join("environ")) else {
                continue;
            };
            if env.split(|b| *b == 0).any(|v| v == needle.as_bytes()) {
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                tracing::warn!(
                    "killed process {pid} left over from an interrupted run of this node"
                );
                killed.push(pid);
            }
        }
        let t = Instant::now();
        for pid in killed {
            // wait until it is gone (or a zombie)
            while t.elapsed() < Duration::from_secs(2) {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                let state = stat
                    .rsplit(')')
                    .next()
                    .and_then(|r| r.split_whitespace().next());
                if matches!(state, None | Some("Z") | Some("X")) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = out_dir;
    }
}
