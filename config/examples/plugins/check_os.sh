#!/bin/sh
# Nagios-style plugin: reports the operating system of the worker node (like SAM's CE-*-os).
# Exit codes follow the Nagios plugin API: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
if [ ! -r /etc/os-release ]; then
    echo "OS UNKNOWN - /etc/os-release is not readable"
    exit 3
fi
. /etc/os-release
kernel=$(uname -r)
cores=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 0)
echo "OS OK - ${PRETTY_NAME:-$NAME} on $(uname -m), kernel $kernel | cores=$cores;;;1"
echo "ID=${ID:-unknown}"
echo "VERSION_ID=${VERSION_ID:-unknown}"
exit 0
