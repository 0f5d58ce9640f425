#!/bin/sh
# Schemathesis against a real `gridprobe serve`: every operation of /api/openapi.json with
# generated (valid and invalid) inputs, every check, as configured in scripts/schemathesis.toml (status codes and content types documented,
# response schemas, no 5xx, negative data refused). Bounded: --max-time (default 180 s).
#
#   scripts/schemathesis.sh                  # builds nothing: uses target/debug/gridprobe
#   GRIDPROBE_BIN=path SCHEMATHESIS_MAX_TIME=60 scripts/schemathesis.sh
#
# schemathesis is taken from PATH, else installed from PyPI into a throw-away virtualenv.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${GRIDPROBE_BIN:-${CARGO_TARGET_DIR:-$root/target}/debug/gridprobe}
max_time=${SCHEMATHESIS_MAX_TIME:-180}
work=$(mktemp -d)
pid=
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

[ -x "$bin" ] || { echo "error: $bin not found (cargo build, or set GRIDPROBE_BIN)" >&2; exit 1; }
if command -v schemathesis >/dev/null 2>&1; then
    st=schemathesis
else
    python3 -m venv "$work/venv"
    "$work/venv/bin/pip" install --quiet schemathesis
    st="$work/venv/bin/schemathesis"
fi

# A VO with one site whose probe fails fast (a closed local port): results, reasons and
# availability have something to show, and nothing leaves the machine.
token=schemathesis-operator-token
sha=$(printf %s "$token" | sha256sum | cut -d' ' -f1)
cat >"$work/vo.toml" <<TOML
vo = "schemathesis"
[defaults]
interval = "5s"
timeout = "2s"
[server]
startup_spread = "1s"
shutdown_grace = "1s"
[access]
runs_per_hour = 1000
  [[access.token]]
  name = "schemathesis"
  sha256 = "$sha"
  role = "operator"
[[site]]
name = "LCG.Test.ch"
tier = 1
  [[site.service]]
  flavour = "WEB"
  hostname = "127.0.0.1"
  endpoint = "http://127.0.0.1:9/"
[[probe]]
metric = "org.schemathesis.web"
kind = "http"
flavours = ["WEB"]
TOML

"$bin" serve --config "$work/vo.toml" --store "$work/r.sqlite" --listen 127.0.0.1:0 >"$work/serve.log" 2>&1 &
pid=$!
addr=
for _ in $(seq 1 100); do
    addr=$(sed -n 's|^ *http: *http://\(.*\)/healthz$|\1|p' "$work/serve.log")
    [ -n "$addr" ] && break
    sleep 0.2
done
[ -n "$addr" ] || { echo "error: serve did not start:" >&2; cat "$work/serve.log" >&2; exit 1; }

status=0
"$st" --config-file "$root/scripts/schemathesis.toml" run "http://$addr/api/openapi.json" \
    --url "http://$addr" \
    --max-time "$max_time" \
    --request-timeout 20 \
    --header "Authorization: Bearer $token" \
    --seed "${SCHEMATHESIS_SEED:-1}" \
    --no-color || status=$?
if [ "$status" -ne 0 ]; then
    echo "--- serve's log" >&2
    tail -n 50 "$work/serve.log" >&2
fi
exit "$status"
