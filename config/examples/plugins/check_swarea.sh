#!/bin/sh
# Nagios-style plugin: checks that the VO software area exists and is writable, and reports its
# free space (like SAM's CE-*-install prerequisites). Usage: check_swarea.sh DIR [WARN_MB] [CRIT_MB]
dir=$1
warn_mb=${2:-1024}
crit_mb=${3:-100}
if [ -z "$dir" ]; then
    echo "SWAREA UNKNOWN - usage: check_swarea.sh DIR [WARN_MB] [CRIT_MB]"
    exit 3
fi
if [ ! -d "$dir" ]; then
    echo "SWAREA CRITICAL - software area $dir does not exist"
    exit 2
fi
if [ ! -w "$dir" ]; then
    echo "SWAREA CRITICAL - software area $dir is not writable"
    exit 2
fi
free_mb=$(df -Pm "$dir" | awk 'NR==2 {print $4}')
perf="free=${free_mb}MB;${warn_mb};${crit_mb};0"
if [ "$free_mb" -lt "$crit_mb" ]; then
    echo "SWAREA CRITICAL - only ${free_mb} MB free in $dir | $perf"
    exit 2
elif [ "$free_mb" -lt "$warn_mb" ]; then
    echo "SWAREA WARNING - ${free_mb} MB free in $dir | $perf"
    exit 1
fi
echo "SWAREA OK - ${free_mb} MB free in $dir | $perf"
exit 0
