#!/bin/sh
# Stand-in for LHCb's Brunel (reconstruction): reconstructs tracks from Boole's boole.digi into
# brunel.dst, the input of DaVinci.
[ -s boole.digi ] || { echo "Brunel: no boole.digi to reconstruct"; exit 2; }
echo "Brunel v63r1: reconstructing $(wc -l < boole.digi) events"
awk '{ printf "dst %d tracks %d\n", $2, int($4 / 7) }' boole.digi > brunel.dst ||
    { echo "Brunel: cannot write brunel.dst"; exit 2; }
tracks=$(awk '{ t += $4 } END { print t + 0 }' brunel.dst)
echo "Brunel: $(wc -l < brunel.dst) events, $tracks tracks written to brunel.dst"
echo "ApplicationMgr INFO Application Manager Terminated successfully"
