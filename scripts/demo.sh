#!/usr/bin/env bash
# The main job: install what is needed, build fabrik, validate every example factory, then
# on simulated twins of the reference factory's hosts: read them, plan, apply, and plan
# again, which must show no changes.
set -euo pipefail
cd "$(dirname "$0")/.."
FABRIK_TESTBED="${FABRIK_TESTBED:-0}" bash scripts/setup.sh
cargo build --release --quiet
for example in examples/*/; do
  ./target/release/fabrik validate "$example"
done
twins=$(mktemp -d)
trap 'rm -rf "$twins"' EXIT
fabrik() { ./target/release/fabrik "$@"; }
fabrik inventory --sim --state-dir "$twins" examples/ai-factory
# Exit 2: the fresh twins need changes.
status=0
fabrik plan --sim --state-dir "$twins" examples/ai-factory || status=$?
[ "$status" -eq 2 ] || { echo "demo: the first plan exited $status, expected 2 (changes)" >&2; exit 1; }
fabrik apply --sim --yes --state-dir "$twins" examples/ai-factory
# Exit 0: no changes left.
fabrik plan --sim --state-dir "$twins" examples/ai-factory
