#!/usr/bin/env bash
# libFuzzer over fabrik's untrusted input (fuzz/: yaml, kdl, factory, agent), each target
# for SECONDS (default 15), seeded from examples/ and fixtures/. Fails on a crash and says
# where the crashing input is. Needs a nightly toolchain: without one it fails when
# CI=true and skips with the reason otherwise. Long runs: docs/fuzzing.md.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-15}"
targets=(yaml kdl factory agent)

if ! cargo +nightly --version >/dev/null 2>&1; then
    if [ "${CI:-}" = true ]; then
        echo "fuzz: no nightly toolchain (cargo +nightly), which libFuzzer needs" >&2
        exit 1
    fi
    echo "fuzz: skipped: no nightly toolchain (cargo +nightly), which libFuzzer needs" >&2
    exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# No sanitizer: fabrik's parsers and the agent are safe Rust, and libFuzzer finds panics,
# stack overflows, leaks of time (-timeout) and memory (-rss_limit_mb) without ASan, whose
# build of every dependency costs more than the runs (docs/fuzzing.md has the figures).
build=(-s none)
cargo +nightly fuzz build "${build[@]}"

# Seeds: every example and fixture of the target's syntax, named by their path.
seed() { # target, then find(1) name patterns
    local target="$1" prefix="$2"
    shift 2
    local dir="fuzz/corpus/$target"
    mkdir -p "$dir"
    find examples fixtures -type f \( "$@" \) -print0 | while IFS= read -r -d '' f; do
        { printf '%s' "$prefix"; cat "$f"; } >"$dir/seed-${f//\//_}"
    done
}
seed yaml '' -name '*.yaml' -o -name '*.yml'
seed kdl '' -name '*.kdl'
# The factory target reads its syntax from the first byte: '0' (even) YAML, '1' (odd) KDL.
seed factory '0' -name '*.yaml' -o -name '*.yml'
seed factory '1' -name '*.kdl'
mkdir -p fuzz/corpus/agent
cp fuzz/seeds/agent/* fuzz/corpus/agent/

for target in "${targets[@]}"; do
    echo "fuzz: $target for ${seconds} s" >&2
    mkdir -p "fuzz/artifacts/$target"
    if ! cargo +nightly fuzz run "${build[@]}" "$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1; then
        echo "fuzz: $target crashed; the input is in fuzz/artifacts/$target/:" >&2
        ls -l "fuzz/artifacts/$target" >&2
        echo "reproduce: cargo +nightly fuzz run ${build[*]} $target fuzz/artifacts/$target/<file>" >&2
        exit 1
    fi
done
