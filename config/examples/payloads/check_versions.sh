#!/bin/sh
# Lists the application versions installed in a release area (AREA/APP/VERSION directories) and
# fails when one the VO expects is missing. Usage: check_versions.sh AREA APP/VERSION...
area=$1
shift
[ -d "$area" ] || { echo "release area $area does not exist"; exit 2; }
missing=""
for v in "$@"; do
    if [ -d "$area/$v" ]; then echo "found $v"; else missing="$missing $v"; fi
done
if [ -n "$missing" ]; then
    echo "missing:$missing"
    exit 1
fi
echo "all $# versions present in $area"
