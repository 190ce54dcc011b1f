#!/usr/bin/env bash
# Every test: install what is needed, then formatting, lints, and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings
cargo clippy -p sim-nvml --all-targets --quiet -- -D warnings
# The simulated libnvidia-ml the NVML driver is tested against (tests/nvml_sim.rs).
cargo build -p sim-nvml --quiet
cargo test -p sim-nvml --quiet
cargo test --all-targets
# The benchmark's serde_yaml baseline is behind the `bench` feature (docs/bench.md).
cargo test --features bench --test formats --quiet
cargo test --doc --quiet
# Coverage-guided fuzzing, 15 s per target (docs/fuzzing.md).
bash scripts/fuzz.sh 15
