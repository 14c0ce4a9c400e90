#!/usr/bin/env bash
# Create lepton's topics (name:partitions:retention_ms) if missing; used by docker-compose's kafka-init.
set -euo pipefail
for spec in $TOPICS; do
  IFS=: read -r name partitions retention <<<"$spec"
  /opt/kafka/bin/kafka-topics.sh --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
    --topic "$name" --partitions "$partitions" --replication-factor 1 --config "retention.ms=$retention"
done
/opt/kafka/bin/kafka-topics.sh --bootstrap-server "$BOOTSTRAP" --list
