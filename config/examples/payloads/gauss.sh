#!/bin/sh
# Stand-in for LHCb's Gauss (simulation): generates EVENTS events into gauss.sim, the input of
# Boole. Usage: gauss.sh [EVENTS]
events=${1:-100}
echo "Gauss v49r25: generating $events events"
awk -v n="$events" 'BEGIN {
    srand(42)
    for (i = 1; i <= n; i++)
        printf "event %d particles %d energy %.3f\n", i, 20 + int(rand() * 80), rand() * 14000
}' > gauss.sim || { echo "Gauss: cannot write gauss.sim"; exit 2; }
echo "Gauss: $(wc -l < gauss.sim) events written to gauss.sim"
echo "ApplicationMgr INFO Application Manager Terminated successfully"
