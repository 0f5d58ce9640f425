# Prometheus for the metrics tests: Debian's `prometheus` package gives promtool (rule checks and
# rule unit tests) and the server binary, which tests/metrics.rs starts itself on a free port
# with its own configuration and data directory. The package's own daemon is not wanted: while
# the package installs, a policy-rc.d (if the machine has none) stops its maintainer scripts
# from starting it. Sourced by scripts/test-env.sh.
if ! dpkg-query -W -f='${Status}' prometheus 2>/dev/null | grep -q "install ok installed"; then
    prometheus_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\n# Temporary, from gridprobe scripts/services/prometheus.sh\nexit 101\n' |
            as_root tee /usr/sbin/policy-rc.d >/dev/null
        as_root chmod 755 /usr/sbin/policy-rc.d
        prometheus_policy=1
    fi
    prometheus_rc=0
    need_pkg prometheus || prometheus_rc=$?
    [ $prometheus_policy -eq 1 ] && as_root rm -f /usr/sbin/policy-rc.d
    [ $prometheus_rc -eq 0 ] || return $prometheus_rc
fi
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
    log "the prometheus package is installed but promtool or prometheus is not on PATH"
    return 1
fi
echo "export GRIDPROBE_TEST_PROMETHEUS=$(command -v prometheus)"
echo "export GRIDPROBE_TEST_PROMTOOL=$(command -v promtool)"
