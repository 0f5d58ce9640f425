#!/usr/bin/env bash
# Installs and starts what gridprobe's tests need on a Debian machine, idempotently and quietly,
# and prints the environment the tests read (eval "$(scripts/test-env.sh)" in a shell).
# Used by .ci/run; developers can run it too (as root, or with sudo available).
set -euo pipefail

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

# Real Nagios plugins (check_dummy, check_tcp, check_http) for the nagios probe tests.
need_pkg monitoring-plugins-basic

echo "export GRIDPROBE_TEST_PLUGINS=/usr/lib/nagios/plugins"
