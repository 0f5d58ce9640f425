#!/usr/bin/env bash
# Fuzzes every parser of hostile input (fuzz/fuzz_targets: the config loader, the VO feed and
# GOCDB importers (downtimes, site contacts), plugin output and perfdata, the spool's record
# reader, the broker message decoder, the STOMP frame decoder, CVMFS whitelists and signed
# letters, A-REX's answers to the arc backend) for a bounded time each, and fails on any
# crash, panic, overflow or hang.
#
#   scripts/fuzz.sh [SECONDS]     (default 30 per target)
#
# Installs cargo-fuzz when missing. The toolchain is stable: RUSTC_BOOTSTRAP=1 lets it take
# the -Z flags cargo-fuzz needs. No sanitizer (safe Rust; panics and overflow checks are what
# is looked for), which keeps builds and runs fast. Each target's corpus lives in
# fuzz/corpus/<target>/ (the seed-* files are in git, what the runs add stays on the machine);
# a crashing input is left in fuzz/artifacts/<target>/. Builds go to $GRIDPROBE_FUZZ_TARGET_DIR
# (default fuzz/target).
set -euo pipefail

seconds="${1:-30}"
case "$seconds" in
  '' | *[!0-9]*) echo "usage: $0 [SECONDS per target]" >&2; exit 2 ;;
esac
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export RUSTC_BOOTSTRAP=1
target_dir="${GRIDPROBE_FUZZ_TARGET_DIR:-$root/fuzz/target}"
flags=(--sanitizer none --target-dir "$target_dir")

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

started=$(date +%s)
cargo fuzz build "${flags[@]}"
echo "fuzz: targets built in $(( $(date +%s) - started )) s" >&2

mapfile -t targets < <(cargo fuzz list)
failed=()
summary=()
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  log="$(mktemp)"
  echo "fuzz: $t for ${seconds} s" >&2
  # -timeout: an input taking over 10 s is a hang and fails like a crash.
  if cargo fuzz run "${flags[@]}" "$t" "fuzz/corpus/$t" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      >"$log" 2>&1; then
    status=ok
  else
    status=FAILED
    failed+=("$t")
    tail -n 60 "$log" >&2
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  corpus=$(find "fuzz/corpus/$t" -type f | wc -l)
  summary+=("$(printf '%-16s %-7s %12s execs %7s corpus files' "$t" "$status" "${execs:-?}" "$corpus")")
  rm -f "$log"
done

echo "fuzz: done in $(( $(date +%s) - started )) s" >&2
printf '%s\n' "${summary[@]}"
if ((${#failed[@]})); then
  echo "fuzz: crashes in ${failed[*]}: reproduce with" >&2
  echo "  RUSTC_BOOTSTRAP=1 cargo fuzz run ${flags[*]} TARGET fuzz/artifacts/TARGET/<file>" >&2
  exit 1
fi
