#!/usr/bin/env bash
# API load benchmark: wrk hammers GET /api/v1/matrix of a real `gridprobe serve` (2,000 schedule
# entries probing a closed local port every 30 s) while we watch whether the scheduler stays on
# time: runs finished during the load vs. the number due, and slots skipped as late.
#   bash bench/api-load.sh [SECONDS]      (default 30; prints a markdown table)
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-30}
command -v wrk >/dev/null || { echo "installing wrk" >&2; apt-get install -y -qq wrk >/dev/null; }
cargo build --release -q
bin=target/release/gridprobe
tmp=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$tmp"' EXIT

{
  echo 'vo = "load"'
  echo '[defaults]'
  echo 'interval = "30s"'
  echo 'timeout = "5s"'
  echo 'concurrency = 64'
  echo '[server]'
  echo 'startup_spread = "5s"'
  for s in $(seq 1 200); do
    echo "[[site]]"
    echo "name = \"SITE-$s\""
    echo "tier = $(( s % 4 ))"
    for v in $(seq 1 5); do
      echo "  [[site.service]]"
      echo "  flavour = \"CE\""
      echo "  hostname = \"ce$v.site$s.example.org\""
    done
  done
  for p in 1 2; do
    echo "[[probe]]"
    echo "metric = \"org.load.port-$p\""
    echo "kind = \"tcp\""
    echo "flavours = [\"CE\"]"
    echo "  [probe.params]"
    echo "  host = \"127.0.0.1\""
    echo "  port = 9"
  done
} > "$tmp/vo.toml"

"$bin" serve --config "$tmp/vo.toml" --store "$tmp/r.sqlite" --listen 127.0.0.1:0 > "$tmp/serve.log" 2>&1 &
pid=$!
addr=""
for _ in $(seq 1 100); do
  addr=$(grep -o 'http://[0-9.:]*' "$tmp/serve.log" | head -1 | sed 's#http://##') || true
  [ -n "$addr" ] && break
  sleep 0.2
done
[ -n "$addr" ] || { cat "$tmp/serve.log"; exit 1; }
metric() { curl -s "http://$addr/metrics" | awk -v m="$1" '$1 == m {print $2}' | head -1; }
# Wait until every entry has run once.
for _ in $(seq 1 300); do
  done_runs=$(metric gridprobe_scheduler_runs_finished_total)
  [ "${done_runs%.*}" -ge 2000 ] 2>/dev/null && break
  sleep 0.2
done
before_runs=$(metric gridprobe_scheduler_runs_finished_total)
before_late=$(curl -s "http://$addr/metrics" | awk '/^gridprobe_scheduler_skipped_total\{reason="late"\}/ {print $2}')
before_late=${before_late:-0}
wrk -t2 -c16 -d"${duration}s" --latency "http://$addr/api/v1/matrix" > "$tmp/wrk.txt"
after_runs=$(metric gridprobe_scheduler_runs_finished_total)
after_late=$(curl -s "http://$addr/metrics" | awk '/^gridprobe_scheduler_skipped_total\{reason="late"\}/ {print $2}')
after_late=${after_late:-0}
requests=$(awk '/requests in/ {print $1}' "$tmp/wrk.txt")
p50=$(awk '$1 == "50%" {print $2}' "$tmp/wrk.txt")
p99=$(awk '$1 == "99%" {print $2}' "$tmp/wrk.txt")
rps=$(awk '/Requests\/sec/ {print $2}' "$tmp/wrk.txt")
runs=$(awk -v a="$after_runs" -v b="$before_runs" 'BEGIN {print a - b}')
due=$(( 2000 * duration / 30 ))
echo "| requests | req/s | p50 | p99 | runs finished during load | runs due | late slots skipped |"
echo "|---:|---:|---:|---:|---:|---:|---:|"
echo "| $requests | $rps | $p50 | $p99 | $runs | $due | $(awk -v a="$after_late" -v b="$before_late" 'BEGIN {print a - b}') |"
echo
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
