# whittle recipes. `just --list` shows them.

# Run an experiment file (extra arguments go to `whittle run`).
run FILE *ARGS:
    cargo run --release -q -p whittle -- run {{FILE}} {{ARGS}}

# Resume an interrupted experiment.
resume FILE *ARGS:
    cargo run --release -q -p whittle -- resume {{FILE}} {{ARGS}}

# Show the state of every node of an experiment.
status FILE *ARGS:
    cargo run --release -q -p whittle -- status {{FILE}} {{ARGS}}

# Explain why a node would run.
why FILE NODE:
    cargo run --release -q -p whittle -- why {{FILE}} '{{NODE}}'

# Compare two experiments (files or report folders).
diff A B *ARGS:
    cargo run --release -q -p whittle -- diff {{A}} {{B}} {{ARGS}}

# Remove cache entries no experiment references.
gc *ARGS:
    cargo run --release -q -p whittle -- gc {{ARGS}}

# The test suite (the same command README.md and CI use).
test:
    cargo test --workspace

# Long tests that are ignored by default.
test-long:
    cargo test --workspace --release -- --ignored

# Model throughput benchmark: DS-CNN, TCN-64, ResNet-8 at batch 100, training and inference
# samples/s, side by side with PyTorch (run `just torch` once first): 3 alternating rounds per
# model, medians and the median per-round ratio (WHITTLE_BENCH_ROUNDS, WHITTLE_BENCH_STEPS).
# `just bench pit_tcn64`: the PIT search step of TCN-64 against its plain training step (mask
# overhead) and PLiNIO on PyTorch (needs `just torch`, `.venv-torch/bin/pip install tdigest` and a
# checkout of eml-eda/plinio at .plinio or PLINIO_SRC; skipped with one line otherwise).
bench *MODELS:
    cargo bench -p whittle-nn --bench models -- {{MODELS}}

# Every benchmark of the workspace (engine overhead, hashing, kernels, models).
bench-all:
    cargo bench --workspace

# Engine benchmarks only: no-op re-run of a 50-node experiment, deps hashing throughput.
bench-engine:
    cargo bench -p whittle --bench engine

# Install PyTorch (CPU build) into .venv-torch for the side-by-side benchmark (large download;
# not for CI). Falls back to PyPI when the PyTorch wheel index is unreachable.
torch:
    python3 -m venv .venv-torch
    .venv-torch/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu || .venv-torch/bin/pip install torch
    .venv-torch/bin/python -c "import torch; print('torch', torch.__version__)"

# Fuzz the experiment parser and validation (real stage registry) for SECS seconds (needs
# `cargo install cargo-fuzz`; RUSTC_BOOTSTRAP lets a stable toolchain build it). Builds in
# fuzz/target; new corpus entries and crashes stay in fuzz/ and are git-ignored.
fuzz SECS="600" *ARGS:
    RUSTC_BOOTSTRAP=1 cargo fuzz run experiment -- -max_total_time={{SECS}} {{ARGS}}

# Write the fuzz seed corpus: the files under experiments/ and the malformed-file test table.
fuzz-seed:
    WHITTLE_FUZZ_SEEDS="$PWD/fuzz/corpus/experiment" cargo test -q -p whittle-engine --test malformed -- --ignored write_fuzz_seeds
    for f in experiments/*.toml; do cp "$f" "fuzz/corpus/experiment/seed-$(basename "$f")"; done
