#!/bin/sh
# The services' Kafka users and ACLs (SPEC §14), for docker-compose (service kafka-setup) and
# Kubernetes (Job kafka-acls). Each service's principal User:crm-<service> may
#   - write (and describe) its own topic and the dead-letter topic, nothing else;
#   - read (and describe) the crm.* topics, which it consumes;
#   - use the consumer groups named crm-<service>* (its consumer; analytics' KPI stream).
# Run as the Kafka admin (KAFKA_ADMIN_USERNAME / KAFKA_ADMIN_PASSWORD). Idempotent: run it again
# to change a password. Passwords: letters and digits (they sit inside SCRAM-SHA-512=[...]).
set -eu
BIN=${KAFKA_BIN:-/opt/kafka/bin}
BOOTSTRAP=${KAFKA_BOOTSTRAP_SERVERS:?set KAFKA_BOOTSTRAP_SERVERS}
CONFIG=$(mktemp)
trap 'rm -f "$CONFIG"' EXIT
cat > "$CONFIG" <<PROPERTIES
security.protocol=${KAFKA_ADMIN_SECURITY_PROTOCOL:-SASL_PLAINTEXT}
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="${KAFKA_ADMIN_USERNAME:-admin}" password="${KAFKA_ADMIN_PASSWORD:?set KAFKA_ADMIN_PASSWORD}";
PROPERTIES

kafka() {
  tool=$1
  shift
  "$BIN/$tool.sh" --bootstrap-server "$BOOTSTRAP" --command-config "$CONFIG" "$@"
}

DEADLETTER=crm.deadletter.v1
if [ "${CREATE_TOPICS:-true}" = true ]; then  # the names come from contracts/topics.py
  for topic in crm.intake.v1 crm.case.v1 crm.notification.v1 crm.analytics.v1 "$DEADLETTER"; do
    kafka kafka-topics --create --if-not-exists --topic "$topic" \
      --partitions "${KAFKA_TOPIC_PARTITIONS:-6}" --replication-factor "${KAFKA_REPLICATION_FACTOR:-1}"
  done
fi

# service <name> <the one topic it produces> <its password>
service() {
  user="crm-$1"
  kafka kafka-configs --alter --entity-type users --entity-name "$user" --add-config "SCRAM-SHA-512=[password=$3]"
  kafka kafka-acls --add --allow-principal "User:$user" --operation Write --operation Describe --topic "$2"
  kafka kafka-acls --add --allow-principal "User:$user" --operation Write --operation Describe --topic "$DEADLETTER"
  kafka kafka-acls --add --allow-principal "User:$user" --operation Read --operation Describe \
    --resource-pattern-type prefixed --topic crm.
  kafka kafka-acls --add --allow-principal "User:$user" --operation Read --operation Describe \
    --resource-pattern-type prefixed --group "crm-$1"
}

service intake crm.intake.v1 "${CRM_INTAKE_KAFKA_PASSWORD:?}"
service case crm.case.v1 "${CRM_CASE_KAFKA_PASSWORD:?}"
service notification crm.notification.v1 "${CRM_NOTIFICATION_KAFKA_PASSWORD:?}"
service analytics crm.analytics.v1 "${CRM_ANALYTICS_KAFKA_PASSWORD:?}"
echo "kafka users and ACLs are in place"
