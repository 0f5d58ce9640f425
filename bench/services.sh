# Starting and stopping the reference services of the compare benchmark: nginx (the HTTP
# target, configuration bench/nginx.conf) and blackbox_exporter (bench/blackbox.yml), both on
# 127.0.0.1 only, in the foreground of a background job whose PID is kept. Sourced (functions
# only) by bench/compare, which stops them at exit, and by scripts/services/benchtools.sh, which
# keeps one pair running for the compare test.
# shellcheck shell=bash

bench_conf_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# The nginx program: whichever is installed (nginx-extras for the WebDAV tests, nginx-light, ...).
bench_nginx_bin() {
    command -v nginx 2>/dev/null && return 0
    [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx
}

# The blackbox_exporter program (Debian names it prometheus-blackbox-exporter).
bench_blackbox_bin() {
    command -v prometheus-blackbox-exporter 2>/dev/null || command -v blackbox_exporter 2>/dev/null
}

# Whether something accepts connections on 127.0.0.1:PORT.
bench_port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Waits up to SECONDS for 127.0.0.1:PORT to accept connections while PID lives.
bench_wait_port() {
    local port=$1 pid=$2 seconds=$3 end=$((SECONDS + $3))
    until bench_port_open "$port"; do
        if [ $SECONDS -ge $end ] || ! bench_alive "$pid"; then
            return 1
        fi
        sleep 0.1
    done
}

# bench_start_nginx PREFIX PORT: writes PREFIX/nginx.conf from bench/nginx.conf and starts nginx
# with PREFIX for its pid file, logs and temp paths. Sets bench_nginx_pid.
bench_start_nginx() {
    local prefix=$1 port=$2 bin
    bin="$(bench_nginx_bin)" || { echo "nginx is not installed" >&2; return 1; }
    mkdir -p "$prefix/tmp"
    sed -e "s#@PREFIX@#$prefix#g" -e "s#@PORT@#$port#g" "$bench_conf_dir/nginx.conf" >"$prefix/nginx.conf"
    # -e: the error log from the start (before the configuration is read), not /var/log/nginx.
    "$bin" -q -t -e "$prefix/error.log" -p "$prefix" -c "$prefix/nginx.conf" -g "daemon off;" >&2 || return 1
    nohup "$bin" -e "$prefix/error.log" -p "$prefix" -c "$prefix/nginx.conf" -g "daemon off;" \
        >"$prefix/nginx.out" 2>&1 </dev/null &
    bench_nginx_pid=$!
    if ! bench_wait_port "$port" "$bench_nginx_pid" 10; then
        echo "nginx did not come up on 127.0.0.1:$port; see $prefix/error.log:" >&2
        tail -5 "$prefix/error.log" "$prefix/nginx.out" >&2 2>/dev/null || true
        return 1
    fi
}

# bench_start_blackbox DIR PORT: starts blackbox_exporter with bench/blackbox.yml, its log in
# DIR. Sets bench_blackbox_pid.
bench_start_blackbox() {
    local dir=$1 port=$2 bin
    bin="$(bench_blackbox_bin)" || { echo "blackbox_exporter is not installed" >&2; return 1; }
    mkdir -p "$dir"
    nohup "$bin" --config.file="$bench_conf_dir/blackbox.yml" --web.listen-address="127.0.0.1:$port" \
        --log.level=warn >"$dir/blackbox.log" 2>&1 </dev/null &
    bench_blackbox_pid=$!
    if ! bench_wait_port "$port" "$bench_blackbox_pid" 10; then
        echo "blackbox_exporter did not come up on 127.0.0.1:$port; its log:" >&2
        tail -5 "$dir/blackbox.log" >&2 2>/dev/null || true
        return 1
    fi
}

# Whether PID is a live process (an exited child not yet reaped, a zombie, is not).
bench_alive() {
    local state
    state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" || return 1
    [ -n "$state" ] && [ "$state" != Z ]
}

# bench_stop PID: SIGTERM, up to 5 s to exit, then SIGKILL. Only the given process (nginx's
# master stops its own workers); reaped when it is this shell's child.
bench_stop() {
    local pid=$1 i
    [ -n "$pid" ] || return 0
    if bench_alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 50); do
            bench_alive "$pid" || break
            sleep 0.1
        done
        bench_alive "$pid" && kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null || true
}
