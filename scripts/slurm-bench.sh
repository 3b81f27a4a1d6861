#!/usr/bin/env bash
# Overhead of the Slurm executor against a running Slurm (scripts/slurm-local.sh): wall time
# of one empty command node and of a sweep of 100 empty command nodes, locally and through
# Slurm with and without job arrays. Usage: scripts/slurm-bench.sh [path/to/whittle] [poll_secs]
set -euo pipefail
bin="$(realpath "${1:-target/release/whittle}")"
poll="${2:-2.0}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
exp() { # name, sweep size
  cat <<TOML
[experiment]
name = "$1"
seed = 1
[executor]
poll_secs = $poll
[stages.empty]
kind = "command"
cmd = "true"
sweep = { "env.I" = [$(seq -s, 1 "$2")] }
TOML
}
exp bench1 1 >one.toml
exp bench100 100 >hundred.toml
t() { # label, args...
  local label="$1"; shift
  rm -rf cache
  local s e
  s=$(date +%s.%N)
  "$bin" --cache cache --reports reports run "$@" >/dev/null 2>&1
  e=$(date +%s.%N)
  printf '%-44s %7.2f s\n' "$label" "$(echo "$e - $s" | bc)"
}
echo "poll_secs = $poll; $(sinfo -h -o '%N %c cpus' | head -1)"
t "1 empty node, local" one.toml
t "1 empty node, slurm" one.toml --executor slurm
t "100 empty nodes, local" hundred.toml
t "100 empty nodes, slurm, one job array" hundred.toml --executor slurm
t "100 empty nodes, slurm, 100 jobs (array = false)" hundred.toml --executor slurm --set executor.array=false
