#!/usr/bin/env bash
# Starts or stops a local 3-master Redis Cluster on 127.0.0.1:7000-7002 with
# the machine's redis-server: no replicas, no persistence, state in a
# temporary directory. Only the servers this script started (by pid file)
# are stopped. REDIS_CLUSTER_PORTS (default "7000 7001 7002") picks other
# ports, so that several runs on one machine do not meet.
#   .ci/redis-cluster.sh start|stop
set -euo pipefail

read -r -a PORTS <<<"${REDIS_CLUSTER_PORTS:-7000 7001 7002}"
DIR="${REDIS_CLUSTER_DIR:-${TMPDIR:-/tmp}/cacheme-redis-cluster-${PORTS[0]}}"

stop() {
  local port pid
  for port in "${PORTS[@]}"; do
    [[ -f "$DIR/$port.pid" ]] || continue
    pid="$(cat "$DIR/$port.pid")"
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$DIR/$port.pid"
  done
  rm -rf "$DIR"
}

start() {
  stop
  local port addrs=()
  for port in "${PORTS[@]}"; do
    if redis-cli -p "$port" ping >/dev/null 2>&1; then
      echo "redis-cluster: port $port is already in use by a server this script did not start" >&2
      exit 1
    fi
  done
  mkdir -p "$DIR"
  for port in "${PORTS[@]}"; do
    mkdir -p "$DIR/$port"
    redis-server --port "$port" --bind 127.0.0.1 --daemonize yes \
      --cluster-enabled yes --cluster-config-file "$DIR/$port/nodes.conf" \
      --cluster-node-timeout 5000 --save '' --appendonly no \
      --dir "$DIR/$port" --pidfile "$DIR/$port.pid" --logfile "$DIR/$port.log"
    addrs+=("127.0.0.1:$port")
  done
  for port in "${PORTS[@]}"; do
    wait_for "$port" ping PONG
  done
  redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes >"$DIR/create.log"
  for port in "${PORTS[@]}"; do
    wait_for "$port" "cluster info" cluster_state:ok
    wait_for "$port" "cluster info" "cluster_known_nodes:${#PORTS[@]}"
  done
  echo "redis-cluster: up on ${addrs[*]} (state in $DIR)"
}

# wait_for PORT COMMAND TEXT: waits up to 30s until COMMAND's reply contains TEXT.
wait_for() {
  local port="$1" cmd="$2" want="$3"
  for _ in $(seq 300); do
    # shellcheck disable=SC2086
    if redis-cli -p "$port" $cmd 2>/dev/null | grep -q "$want"; then return 0; fi
    sleep 0.1
  done
  echo "redis-cluster: 127.0.0.1:$port never answered '$cmd' with $want; log:" >&2
  tail -n 20 "$DIR/$port.log" >&2 || true
  exit 1
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
