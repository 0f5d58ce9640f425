#!/bin/sh
# Nagios-style plugin: runs an experiment application step (a tiny stand-in payload computed by
# awk) and checks it produced its output. Usage: check_app.sh APP EVENTS
app=${1:-Gauss}
events=${2:-100}
start=$(date +%s)
sum=$(awk -v n="$events" 'BEGIN { s = 0; for (i = 1; i <= n; i++) s += i * i; print s }')
if [ -z "$sum" ]; then
    echo "$app CRITICAL - payload produced no output"
    exit 2
fi
echo "$app OK - processed $events events | events=$events;;;0"
echo "checksum of the run: $sum"
echo "started at $start"
exit 0
