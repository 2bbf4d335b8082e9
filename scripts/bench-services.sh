# Sourced by the bench scripts that need a throw-away PostgreSQL (server
# defaults: fsync and synchronous_commit on) and one Apache Kafka 4.1 KRaft
# node (scripts/kafka.sh), both on free loopback ports under a temporary
# directory that is removed, with everything in it stopped, on exit.
# Expects ROOT and log(); `start_services <name>` starts both and sets
# WORK_DIR, PG_BIN, PG_PORT and KAFKA_PORT; `create_database <name>` prints
# a new database's URL.

WORK_DIR=""
PG_BIN=""
KAFKA_PID=""
cleanup() {
  local status=$?
  if [ -n "$KAFKA_PID" ]; then kill "$KAFKA_PID" 2>/dev/null || true; wait "$KAFKA_PID" 2>/dev/null || true; fi
  if [ -n "$PG_BIN" ] && [ -f "$WORK_DIR/pg/postmaster.pid" ]; then
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$WORK_DIR/pg" -m fast stop >/dev/null 2>&1 || true
  fi
  [ -n "$WORK_DIR" ] && rm -rf "$WORK_DIR"
  exit "$status"
}
trap cleanup EXIT INT TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_postgres() {
  PG_BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
  PG_PORT="$(free_port)"
  mkdir -p "$WORK_DIR/pg"
  chown postgres "$WORK_DIR" "$WORK_DIR/pg"
  runuser -u postgres -- "$PG_BIN/initdb" -D "$WORK_DIR/pg" -A trust -U postgres >/dev/null
  runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$WORK_DIR/pg" -w -l "$WORK_DIR/pg/log" \
    -o "-p $PG_PORT -k $WORK_DIR/pg -c listen_addresses=127.0.0.1 -c shared_buffers=512MB -c max_wal_size=4GB" \
    start >/dev/null
  log "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PG_PORT, default durability"
}

create_database() {
  runuser -u postgres -- "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -qAt \
    -c "CREATE DATABASE $1" >/dev/null
  printf 'postgres://postgres@127.0.0.1:%s/%s' "$PG_PORT" "$1"
}

start_kafka() {
  # Two consecutive free ports: the broker's and its controller's.
  KAFKA_PORT="$(python3 -c 'import socket
for port in range(39000, 40000, 2):
    try:
        a = socket.socket(); a.bind(("127.0.0.1", port)); b = socket.socket(); b.bind(("127.0.0.1", port + 1))
        print(port); break
    except OSError: pass')"
  bash "$ROOT/scripts/kafka.sh" run "$WORK_DIR/kafka" "$KAFKA_PORT" >"$WORK_DIR/kafka.log" 2>&1 &
  KAFKA_PID=$!
  for _ in $(seq 1 300); do
    if grep -q "Kafka Server started" "$WORK_DIR/kafka.log" 2>/dev/null; then
      log "Apache Kafka 4.1.1 on 127.0.0.1:$KAFKA_PORT"
      return
    fi
    sleep 0.2
  done
  log "Kafka did not start"; tail -30 "$WORK_DIR/kafka.log" >&2; return 1
}

start_services() {
  WORK_DIR="$(mktemp -d "/tmp/recon-bench-$1.XXXXXX")"
  chmod 755 "$WORK_DIR"
  start_postgres
  start_kafka
}
