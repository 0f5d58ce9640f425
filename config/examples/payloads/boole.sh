#!/bin/sh
# Stand-in for LHCb's Boole (digitisation): turns Gauss's gauss.sim into detector hits in
# boole.digi, the input of Brunel.
[ -s gauss.sim ] || { echo "Boole: no gauss.sim to digitise"; exit 2; }
echo "Boole v46r1: digitising $(wc -l < gauss.sim) events"
awk '{ printf "digi %d hits %d adc %d\n", $2, $4 * 3, int($6) % 1024 }' gauss.sim > boole.digi ||
    { echo "Boole: cannot write boole.digi"; exit 2; }
echo "Boole: $(wc -l < boole.digi) events written to boole.digi"
echo "ApplicationMgr INFO Application Manager Terminated successfully"
