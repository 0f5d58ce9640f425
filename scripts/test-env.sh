#!/usr/bin/env bash
# Installs and starts what gridprobe's tests need on a Debian machine, idempotently and quietly,
# and prints the environment the tests read: eval "$(scripts/test-env.sh)" in a shell.
# Used by .ci/run; developers can run it too (as root, or with sudo available).
#
# Each service has its own script in scripts/services/NAME.sh: it may call need_pkg, as_root and
# log, must be idempotent, and prints `export VAR=value` lines for the tests. Run one alone with
# scripts/test-env.sh NAME.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

log() { printf '[test-env] %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
need_pkg() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ $apt_updated -eq 0 ]; then
        as_root apt-get update -qq >/dev/null
        apt_updated=1
    fi
    log "installing ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Polls a command until it succeeds or the deadline (seconds) passes.
wait_for() {
    local deadline=$1; shift
    local end=$((SECONDS + deadline))
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -ge $end ] && return 1
        sleep 0.2
    done
}

export -f log as_root need_pkg wait_for 2>/dev/null || true

if [ $# -gt 0 ]; then
    services=("$@")
else
    services=()
    for f in "$here"/services/*.sh; do
        services+=("$(basename "$f" .sh)")
    done
fi
for s in "${services[@]}"; do
    # shellcheck source=/dev/null
    source "$here/services/$s.sh"
done
