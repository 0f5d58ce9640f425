# RabbitMQ (AMQP 0-9-1, 127.0.0.1:5672, guest/guest) and NATS with JetStream (127.0.0.1:4222) for
# the publishing tests (broker/tests, tests/spool.rs, tests/consume.rs). This machine kind
# normally runs both; whatever is missing is installed and started directly (no systemd), the
# same way the machine starts them. Idempotent and quiet. Sourced by scripts/test-env.sh.

amqp_port=5672
nats_port=4222

# Whether something accepts TCP connections on 127.0.0.1:PORT.
tcp_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

rabbit_up() {
    if ! command -v rabbitmq-server >/dev/null 2>&1; then
        need_pkg rabbitmq-server
    fi
    if tcp_open $amqp_port && rabbitmq-diagnostics -q ping >/dev/null 2>&1; then
        return 0
    fi
    log "starting RabbitMQ"
    as_root rabbitmq-server -detached >/dev/null 2>&1 || true
    # The node answers `ping` before its AMQP listener is up: wait for both.
    wait_for 90 rabbitmq-diagnostics -q ping && wait_for 60 tcp_open $amqp_port || {
        log "RabbitMQ did not come up on 127.0.0.1:$amqp_port"
        return 1
    }
}

nats_up() {
    if [ ! -x /usr/sbin/nats-server ] && ! command -v nats-server >/dev/null 2>&1; then
        need_pkg nats-server
    fi
    tcp_open $nats_port && return 0
    log "starting NATS (JetStream)"
    as_root mkdir -p /var/lib/nats-server
    as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
        -a 127.0.0.1 -p $nats_port -js -sd /var/lib/nats-server -l /var/log/nats-server.log >&2
    wait_for 30 tcp_open $nats_port || {
        log "NATS did not come up on 127.0.0.1:$nats_port"
        return 1
    }
}

export -f tcp_open 2>/dev/null || true
rabbit_up
nats_up
echo "export GRIDPROBE_TEST_AMQP=amqp://guest:guest@127.0.0.1:$amqp_port/%2f"
echo "export GRIDPROBE_TEST_NATS=nats://127.0.0.1:$nats_port"
