# A private RabbitMQ node with the STOMP plugin (127.0.0.1:61623, over TLS 61624 with a test CA;
# user gridprobe) for tests/stomp.rs:
# its own node name, distribution port (25683), cookie and directories under
# /var/tmp/gridprobe-stomp (scripts/stomp-node.sh), so the machine's shared RabbitMQ is never
# reconfigured. Idempotent and quiet. Sourced by scripts/test-env.sh.

stomp_port=61623
stomp_tls_port=61624
stomp_dist_port=25683

if [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
    need_pkg rabbitmq-server
fi
need_pkg openssl
bash "$here/stomp-node.sh" start /var/tmp/gridprobe-stomp $stomp_port $stomp_dist_port $stomp_tls_port || {
    log "the STOMP RabbitMQ node did not come up on 127.0.0.1:$stomp_port"
    return 1
}
echo "export GRIDPROBE_TEST_STOMP_URL=stomp://gridprobe:gp-stomp-test-passcode@127.0.0.1:$stomp_port"
echo "export GRIDPROBE_TEST_STOMP_TLS_URL=stomp+ssl://gridprobe:gp-stomp-test-passcode@127.0.0.1:$stomp_tls_port"
echo "export GRIDPROBE_TEST_STOMP_CA=/var/tmp/gridprobe-stomp/tls/ca.pem"
