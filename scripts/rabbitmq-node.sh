#!/usr/bin/env bash
# One private RabbitMQ node speaking AMQP 0-9-1 on 127.0.0.1, with its own node name,
# distribution port, Erlang cookie, mnesia and log directories, so that the machine's shared
# RabbitMQ is never touched. Used by scripts/services/agents-amqp.sh (the node the site-agent
# tests share, each test in a virtual host of its own) and by tests/agents_rabbitmq.rs (a
# dedicated node stopped and restarted in a test).
#
#   scripts/rabbitmq-node.sh start|stop|kill DIR AMQP_PORT DIST_PORT
#   scripts/rabbitmq-node.sh ctl DIR AMQP_PORT DIST_PORT -- RABBITMQCTL_ARGS...
#
# `kill` ends the node with SIGKILL (an outage, not a clean shutdown; `start` brings it back with
# its durable queues). `ctl` runs rabbitmqctl against this node (users, virtual hosts, permissions).
# The node has no guest user: tests make the users and permissions they need.
# Idempotent: `start` on a running node and `stop` on a stopped one do nothing. Quiet: output
# goes to DIR/log/, and only a failure is reported (on stderr, exit status 1).
set -euo pipefail
[ $# -ge 4 ] || { echo "usage: $0 start|stop|kill|ctl DIR AMQP_PORT DIST_PORT [-- ARGS]" >&2; exit 2; }
cmd=$1 dir=$2 port=$3 dist=$4
shift 4
bin=/usr/lib/rabbitmq/bin
mkdir -p "$dir/mnesia" "$dir/log"
dir="$(cd "$dir" && pwd)"

# The node's own world: its cookie lives in HOME, everything else under DIR.
export HOME="$dir"
export RABBITMQ_NODENAME="gpamqp$port@localhost"
export RABBITMQ_DIST_PORT="$dist"
export RABBITMQ_MNESIA_BASE="$dir/mnesia"
export RABBITMQ_LOG_BASE="$dir/log"
export RABBITMQ_PID_FILE="$dir/rabbitmq.pid"
export RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf"
export RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config"
export RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins"

cat >"$dir/rabbitmq.conf" <<CONF
listeners.tcp.1 = 127.0.0.1:$port
loopback_users = none
log.file.level = warning
log.console = false
CONF
echo '[].' >"$dir/enabled_plugins"

amqp_open() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }
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
    # One start at a time per node (tests in parallel processes share it).
    exec 9>"$dir/start.lock"
    flock 9
    if pinged && amqp_open; then exit 0; fi
    # Not with the lock: the node would hold it for its lifetime.
    "$bin/rabbitmq-server" -detached 9>&- >"$dir/log/start.out" 2>&1 || true
    # The node answers `ping` before its listener is up: wait for both.
    if ! { poll 120 pinged && poll 60 amqp_open; }; then
        echo "rabbitmq-node: RabbitMQ node $RABBITMQ_NODENAME did not come up with AMQP on 127.0.0.1:$port (see $dir/log)" >&2
        exit 1
    fi
    "$bin/rabbitmqctl" -q -n "$RABBITMQ_NODENAME" delete_user guest >/dev/null 2>&1 || true
    ;;
stop)
    pinged || exit 0
    # `stop PIDFILE` returns once the Erlang VM has exited, so the port is free afterwards.
    "$bin/rabbitmqctl" -q -n "$RABBITMQ_NODENAME" stop "$RABBITMQ_PID_FILE" >/dev/null 2>&1 || true
    if ! poll 60 eval '! amqp_open'; then
        echo "rabbitmq-node: RabbitMQ node $RABBITMQ_NODENAME still listens on $port" >&2
        exit 1
    fi
    ;;
kill)
    pid=$(cat "$RABBITMQ_PID_FILE" 2>/dev/null || true)
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || exit 0
    kill -KILL "$pid"
    if ! poll 30 eval '! kill -0 "$pid" 2>/dev/null'; then
        echo "rabbitmq-node: RabbitMQ node $RABBITMQ_NODENAME (pid $pid) did not die" >&2
        exit 1
    fi
    ;;
ctl)
    [ "${1:-}" = "--" ] && shift
    out=$("$bin/rabbitmqctl" -q -n "$RABBITMQ_NODENAME" "$@" 2>&1) || {
        echo "rabbitmq-node: rabbitmqctl $1 failed: $out" >&2
        exit 1
    }
    [ -z "$out" ] || printf '%s\n' "$out"
    ;;
*)
    echo "usage: $0 start|stop|kill|ctl DIR AMQP_PORT DIST_PORT [-- ARGS]" >&2
    exit 2
    ;;
esac
