#!/bin/sh
# Nagios-style plugin in the spirit of SAM's CE-*-lock: takes an exclusive lock in a directory,
# reports who holds it when it is taken, and releases it. Usage: check_lock.sh DIR
dir=${1:-/tmp}
lock="$dir/.gridprobe-lock"
if ! mkdir -p "$dir" 2>/dev/null; then
    echo "LOCK CRITICAL - cannot create lock directory $dir"
    exit 2
fi
if ! mkdir "$lock" 2>/dev/null; then
    holder=$(cat "$lock/owner" 2>/dev/null || echo unknown)
    echo "LOCK WARNING - lock $lock is held by $holder"
    exit 1
fi
echo "pid $$ on $(hostname)" > "$lock/owner"
rm -rf "$lock"
echo "LOCK OK - took and released $lock"
exit 0
