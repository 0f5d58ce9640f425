#!/bin/sh
# Stand-in for LHCb's DaVinci (analysis): selects candidates from Brunel's brunel.dst into the
# ntuple davinci.tuple. Usage: davinci.sh [MIN_TRACKS]
min=${1:-30}
[ -s brunel.dst ] || { echo "DaVinci: no brunel.dst to analyse"; exit 2; }
echo "DaVinci v64r2: selecting events with at least $min tracks"
awk -v min="$min" '$4 >= min { printf "candidate %d tracks %d\n", $2, $4 }' brunel.dst > davinci.tuple
total=$(wc -l < brunel.dst)
selected=$(wc -l < davinci.tuple)
echo "DaVinci: selected $selected of $total events into davinci.tuple"
echo "ApplicationMgr INFO Application Manager Terminated successfully"
