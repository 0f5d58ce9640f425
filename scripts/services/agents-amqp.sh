# A private RabbitMQ node (AMQP on 127.0.0.1:5683, distribution port 25693, directories under
# /var/tmp/gridprobe-agents-amqp; scripts/rabbitmq-node.sh) for tests/agents_rabbitmq.rs: the
# tests make their own virtual hosts, users and permissions on it with rabbitmqctl, which the
# machine's shared RabbitMQ must not be used for. Idempotent and quiet. Sourced by
# scripts/test-env.sh.

agents_amqp_port=5683
agents_amqp_dist_port=25693
agents_amqp_dir=/var/tmp/gridprobe-agents-amqp

if [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
    need_pkg rabbitmq-server
fi
bash "$here/rabbitmq-node.sh" start $agents_amqp_dir $agents_amqp_port $agents_amqp_dist_port || {
    log "the agents' RabbitMQ node did not come up on 127.0.0.1:$agents_amqp_port"
    return 1
}
echo "export GRIDPROBE_TEST_AGENTS_AMQP_NODE=$agents_amqp_dir:$agents_amqp_port:$agents_amqp_dist_port"
