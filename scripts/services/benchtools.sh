# The reference tools of the compare benchmark (bench/compare, benches/compare.rs) for its test
# (tests/bench_compare.rs): wrk, blackbox_exporter, the Nagios plugins, and nginx (nginx-extras,
# as the WebDAV tests use, when no nginx is installed: nginx-light would conflict with it). Keeps
# one nginx (bench/nginx.conf) and one blackbox_exporter (bench/blackbox.yml) running on
# 127.0.0.1, started with bench/services.sh, state under $GRIDPROBE_SERVICES (default
# /tmp/gridprobe-services/bench). Sourced by scripts/test-env.sh.
#
# http://127.0.0.1:$GRIDPROBE_BENCHTOOLS_NGINX_PORT (default 18493): /probe and /nginx_status
# http://127.0.0.1:$GRIDPROBE_BENCHTOOLS_BLACKBOX_PORT (default 18494): blackbox_exporter
benchtools_packages=(wrk monitoring-plugins-basic)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || benchtools_packages+=(nginx-extras)
if ! dpkg-query -W -f='${Status}' prometheus-blackbox-exporter 2>/dev/null | grep -q "install ok installed"; then
    benchtools_packages+=(prometheus-blackbox-exporter)
fi
# The packages' maintainer scripts would start their own daemons (blackbox_exporter on *:9115,
# nginx on *:80): a policy-rc.d, only while installing and only if the machine has none, stops
# that (as scripts/services/prometheus.sh does).
benchtools_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\n# Temporary, from gridprobe scripts/services/benchtools.sh\nexit 101\n' |
        as_root tee /usr/sbin/policy-rc.d >/dev/null
    as_root chmod 755 /usr/sbin/policy-rc.d
    benchtools_policy=1
fi
benchtools_rc=0
need_pkg "${benchtools_packages[@]}" || benchtools_rc=$?
[ $benchtools_policy -eq 1 ] && as_root rm -f /usr/sbin/policy-rc.d
[ $benchtools_rc -eq 0 ] || return $benchtools_rc

# shellcheck source=bench/services.sh
source "$here/../bench/services.sh"

benchtools_dir=${GRIDPROBE_SERVICES:-/tmp/gridprobe-services}/bench
benchtools_nginx_port=${GRIDPROBE_BENCHTOOLS_NGINX_PORT:-18493}
benchtools_blackbox_port=${GRIDPROBE_BENCHTOOLS_BLACKBOX_PORT:-18494}
mkdir -p "$benchtools_dir"

# Running: the pid file names a live process of that program (a pid may be reused).
benchtools_running() {
    local pid
    pid="$(cat "$1" 2>/dev/null)" || return 1
    [ -n "$pid" ] && bench_alive "$pid" && grep -q "$2" "/proc/$pid/cmdline" 2>/dev/null
}

# A running nginx whose configuration bench/nginx.conf has changed since is restarted.
if benchtools_running "$benchtools_dir/nginx/nginx.pid" nginx &&
    [ "$(sed -e "s#@PREFIX@#$benchtools_dir/nginx#g" -e "s#@PORT@#$benchtools_nginx_port#g" \
        "$bench_conf_dir/nginx.conf")" != "$(cat "$benchtools_dir/nginx/nginx.conf" 2>/dev/null)" ]; then
    bench_stop "$(cat "$benchtools_dir/nginx/nginx.pid")"
fi
if ! benchtools_running "$benchtools_dir/nginx/nginx.pid" nginx ||
    ! bench_port_open "$benchtools_nginx_port"; then
    log "starting the bench's nginx on 127.0.0.1:$benchtools_nginx_port"
    bench_start_nginx "$benchtools_dir/nginx" "$benchtools_nginx_port" || return 1
fi
if ! benchtools_running "$benchtools_dir/blackbox.pid" blackbox ||
    ! bench_port_open "$benchtools_blackbox_port"; then
    log "starting blackbox_exporter on 127.0.0.1:$benchtools_blackbox_port"
    bench_start_blackbox "$benchtools_dir" "$benchtools_blackbox_port" || return 1
    echo "$bench_blackbox_pid" >"$benchtools_dir/blackbox.pid"
fi

echo "export GRIDPROBE_TEST_NGINX=$(bench_nginx_bin)"
echo "export GRIDPROBE_TEST_BLACKBOX=$(bench_blackbox_bin)"
echo "export GRIDPROBE_TEST_WRK=$(command -v wrk)"
echo "export GRIDPROBE_TEST_BENCH_TARGET=http://127.0.0.1:$benchtools_nginx_port/probe"
echo "export GRIDPROBE_TEST_BENCH_BLACKBOX=http://127.0.0.1:$benchtools_blackbox_port"
