#!/usr/bin/env bash
# Apache Kafka for recon's tests, benches and by hand (docs/kafka.md).
#
#   scripts/kafka.sh libs          fetch the broker's jars once (Maven Central,
#                                  tests/kafka/pom.xml) and print their folder
#   scripts/kafka.sh run DIR PORT  format DIR and run one KRaft node (broker and
#                                  controller) with a plaintext listener on
#                                  127.0.0.1:PORT and its controller on PORT+1,
#                                  in the foreground
#
# The jars go to ${XDG_CACHE_HOME:-~/.cache}/recon-kafka/<version>/libs
# (RECON_TEST_KAFKA_LIBS overrides the folder); the tests find them there.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KAFKA_VERSION="4.1.1" # also in tests/kafka/pom.xml and tests/src/broker.rs
LIBS="${RECON_TEST_KAFKA_LIBS:-${XDG_CACHE_HOME:-$HOME/.cache}/recon-kafka/$KAFKA_VERSION/libs}"

fetch_libs() {
  if [ -f "$LIBS/kafka_2.13-$KAFKA_VERSION.jar" ]; then return; fi
  printf '[kafka.sh] fetching Apache Kafka %s into %s\n' "$KAFKA_VERSION" "$LIBS" >&2
  mkdir -p "$LIBS"
  # Into a folder of its own first, so that an interrupted fetch leaves no
  # half-filled cache behind.
  local partial="$LIBS.partial"
  rm -rf "$partial"
  mvn -q -B -f "$ROOT/tests/kafka/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$partial" >&2
  rm -rf "$LIBS"
  mv "$partial" "$LIBS"
}

run_node() {
  local dir="$1" port="$2" controller=$(($2 + 1))
  mkdir -p "$dir"
  cat >"$dir/server.properties" <<PROPERTIES
process.roles=broker,controller
node.id=1
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller
advertised.listeners=PLAINTEXT://127.0.0.1:$port
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
controller.quorum.voters=1@127.0.0.1:$controller
log.dirs=$dir/data
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
PROPERTIES
  if [ ! -f "$dir/data/meta.properties" ]; then
    local cluster_id
    cluster_id="$(java -cp "$LIBS/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)"
    java -cp "$LIBS/*" kafka.tools.StorageTool format -t "$cluster_id" -c "$dir/server.properties" >&2
  fi
  exec java -Xmx512m -XX:+UseSerialGC -Dlog4j2.configurationFile="$ROOT/tests/kafka/log4j2.properties" \
    -cp "$LIBS/*" kafka.Kafka "$dir/server.properties"
}

case "${1:-}" in
  libs) fetch_libs; printf '%s\n' "$LIBS" ;;
  run) [ $# -eq 3 ] || { echo "usage: $0 run DIR PORT" >&2; exit 2; }
       fetch_libs; run_node "$2" "$3" ;;
  *) echo "usage: $0 libs | run DIR PORT" >&2; exit 2 ;;
esac
