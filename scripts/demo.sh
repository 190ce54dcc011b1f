#!/usr/bin/env bash
# The main job: install what is needed, build fabrik, and validate every example factory.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --quiet
for example in examples/*/; do
  ./target/release/fabrik validate "$example"
done
