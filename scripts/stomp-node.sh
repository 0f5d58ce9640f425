#!/usr/bin/env bash
# One private RabbitMQ node speaking only STOMP (the rabbitmq_stomp plugin, no AMQP listener),
# with its own node name, distribution port, Erlang cookie, mnesia and log directories, so that
# the machine's shared RabbitMQ is never touched. Used by scripts/services/stomp.sh (the node
# the tests share) and by tests/stomp.rs (a dedicated node stopped and restarted in a test).
#
#   scripts/stomp-node.sh start|stop DIR STOMP_PORT DIST_PORT [TLS_PORT]
#
# With TLS_PORT, the node also listens for STOMP over TLS there, with a server certificate for
# localhost / 127.0.0.1 issued by a test CA made here once (DIR/tls/ca.pem; openssl CLI).
# The node has a user `gridprobe` (passcode gp-stomp-test-passcode) besides guest.
# Idempotent: `start` on a running node and `stop` on a stopped one do nothing. Quiet: output
# goes to DIR/log/, and only a failure is reported (on stderr, exit status 1).
set -euo pipefail
[ $# -eq 4 ] || [ $# -eq 5 ] || { echo "usage: $0 start|stop DIR STOMP_PORT DIST_PORT [TLS_PORT]" >&2; exit 2; }
cmd=$1 dir=$2 port=$3 dist=$4 tls_port=${5:-}
# The test user's passcode: a test secret on a loopback-only node.
STOMP_TEST_PASSCODE=gp-stomp-test-passcode
bin=/usr/lib/rabbitmq/bin
mkdir -p "$dir/mnesia" "$dir/log"
dir="$(cd "$dir" && pwd)"

# The node's own world: its cookie lives in HOME, everything else under DIR.
export HOME="$dir"
export RABBITMQ_NODENAME="gpstomp$port@localhost"
export RABBITMQ_DIST_PORT="$dist"
export RABBITMQ_MNESIA_BASE="$dir/mnesia"
export RABBITMQ_LOG_BASE="$dir/log"
export RABBITMQ_PID_FILE="$dir/rabbitmq.pid"
export RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf"
export RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config"
export RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins"

cat >"$dir/rabbitmq.conf" <<CONF
listeners.tcp = none
stomp.listeners.tcp.1 = 127.0.0.1:$port
log.file.level = warning
log.console = false
CONF
if [ -n "$tls_port" ]; then
    tls="$dir/tls"
    if [ ! -s "$tls/server.pem" ]; then
        mkdir -p "$tls"
        (
            cd "$tls"
            openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 3650 \
                -subj /CN=gridprobe-stomp-test-ca \
                -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
            openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost
            printf '%s\n' 'subjectAltName=DNS:localhost,IP:127.0.0.1' 'basicConstraints=CA:FALSE' \
                'keyUsage=digitalSignature,keyEncipherment' 'extendedKeyUsage=serverAuth' >server.ext
            openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
                -out server.pem -days 3650 -extfile server.ext
        ) >"$dir/log/tls.out" 2>&1
    fi
    cat >>"$dir/rabbitmq.conf" <<CONF
stomp.listeners.ssl.1 = 127.0.0.1:$tls_port
ssl_options.cacertfile = $tls/ca.pem
ssl_options.certfile = $tls/server.pem
ssl_options.keyfile = $tls/server.key
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
CONF
fi
echo '[rabbitmq_stomp].' >"$dir/enabled_plugins"

stomp_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || return 1
    [ -z "$tls_port" ] || (exec 3<>"/dev/tcp/127.0.0.1/$tls_port") 2>/dev/null
}
pinged() { "$bin/rabbitmq-diagnostics" -q -n "$RABBITMQ_NODENAME" ping >/dev/null 2>&1; }
poll() {
    local end=$((SECONDS + $1)); shift
    until "$@"; do
        [ $SECONDS -ge "$end" ] && return 1
        sleep 0.2
    done
}

case "$cmd" in
start)
    if pinged && stomp_open; then exit 0; fi
    "$bin/rabbitmq-server" -detached >"$dir/log/start.out" 2>&1 || true
    # The node answers `ping` before its STOMP listener is up: wait for both.
    if ! { poll 120 pinged && poll 60 stomp_open; }; then
        echo "stomp-node: RabbitMQ node $RABBITMQ_NODENAME did not come up with STOMP on 127.0.0.1:$port (see $dir/log)" >&2
        exit 1
    fi
    # A user with a passcode of its own (guest/guest would hide a passcode echoed in a log).
    ctl() { "$bin/rabbitmqctl" -q -n "$RABBITMQ_NODENAME" "$@" >/dev/null 2>&1; }
    ctl add_user gridprobe "$STOMP_TEST_PASSCODE" || ctl change_password gridprobe "$STOMP_TEST_PASSCODE"
    ctl set_permissions -p / gridprobe '.*' '.*' '.*'
    ;;
stop)
    pinged || exit 0
    # `stop PIDFILE` returns once the Erlang VM has exited, so the port is free afterwards.
    "$bin/rabbitmqctl" -q -n "$RABBITMQ_NODENAME" stop "$RABBITMQ_PID_FILE" >/dev/null 2>&1 || true
    if ! poll 60 eval '! stomp_open'; then
        echo "stomp-node: RabbitMQ node $RABBITMQ_NODENAME still listens on $port" >&2
        exit 1
    fi
    ;;
*)
    echo "usage: $0 start|stop DIR STOMP_PORT DIST_PORT [TLS_PORT]" >&2
    exit 2
    ;;
esac
