#!/usr/bin/env bash
# The main job: install what is needed, build fabrik, validate every example factory and
# read the reference factory's hosts as simulated twins.
set -euo pipefail
cd "$(dirname "$0")/.."
FABRIK_TESTBED="${FABRIK_TESTBED:-0}" bash scripts/setup.sh
cargo build --release --quiet
for example in examples/*/; do
  ./target/release/fabrik validate "$example"
done
twins=$(mktemp -d)
trap 'rm -rf "$twins"' EXIT
./target/release/fabrik inventory --sim --state-dir "$twins" examples/ai-factory
