#!/usr/bin/env bash
# Starts the local services VirtLab uses when they are not already running:
# Redis (127.0.0.1:6379), PostgreSQL (127.0.0.1:5432) and libvirtd. Idempotent; no systemd needed.
#
#   scripts/services.sh               start what is missing; record what this run started
#   scripts/services.sh stop-started  stop what was started from this process group (make run's
#                                     Ctrl-C); daemons that were already running are left alone
#
# The record (var/services-started: name, pid, process group of the command that started it)
# ties each daemon to one `make run`: setup and run.sh share make's process group.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '\033[1;34m[services]\033[0m %s\n' "$*"; }
RECORD=${VIRTLAB_VAR_DIR:-var}/services-started

pgid_of() { local stat fields; stat=$(<"/proc/$1/stat"); read -ra fields <<<"${stat##*) }"; echo "${fields[2]}"; }
OWN_PGID=$(pgid_of $$)

# The signal that stops a recorded daemon cleanly.
stop_signal() { case $1 in postgres) echo INT ;; *) echo TERM ;; esac; }  # postgres: fast shutdown

# name pid: that pid is still this daemon (its comm is the name; not a reused pid, not a zombie).
is_daemon() {
  local comm stat
  comm=$(cat "/proc/$2/comm" 2>/dev/null) && stat=$(cat "/proc/$2/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ $comm == "$1" && ${stat%% *} != Z ]]
}
group_alive() { kill -0 -- "-$1" 2>/dev/null; }

# Keep records whose daemon still runs and whose starting process group is still alive.
prune_record() {
  [[ -f $RECORD ]] || return 0
  local name pid pgid kept=()
  while read -r name pid pgid; do
    [[ -n $name ]] || continue
    if is_daemon "$name" "$pid" && { [[ $pgid == "$OWN_PGID" ]] || group_alive "$pgid"; }; then
      kept+=("$name $pid $pgid")
    fi
  done <"$RECORD"
  if ((${#kept[@]})); then printf '%s\n' "${kept[@]}" >"$RECORD"; else rm -f "$RECORD"; fi
}

record_started() {  # name pid
  mkdir -p "$(dirname "$RECORD")"
  prune_record
  echo "$1 $2 $OWN_PGID" >>"$RECORD"
}

start_redis() {
  if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then log "redis: running"; return; fi
  log "redis: starting"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/virtlab.log --pidfile /run/virtlab-redis.pid
  for _ in $(seq 50); do
    if redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
      record_started redis-server "$(cat /run/virtlab-redis.pid)"
      return
    fi
    sleep 0.1
  done
  log "redis: did not answer"; exit 1
}

psql_admin() {
  # A server that is already up (ours, a container, another cluster) may not be local: try TCP
  # as the postgres superuser first, then the local socket with peer auth (fresh Debian install).
  if psql -h 127.0.0.1 -p 5432 -U postgres -w -d postgres -qtAc 'SELECT 1' >/dev/null 2>&1; then
    psql -h 127.0.0.1 -p 5432 -U postgres -w -d postgres -v ON_ERROR_STOP=1 -qtA "$@"
  else
    su postgres -c "psql -p 5432 -d postgres -v ON_ERROR_STOP=1 -qtA $(printf '%q ' "$@")"
  fi
}

start_postgres() {
  if pg_isready -h 127.0.0.1 -p 5432 -q; then
    log "postgresql: running"
  else
    local version
    version=$(find /etc/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' 2>/dev/null | sort -V | tail -n 1 || true)
    [[ -n $version ]] || { log "postgresql: not running and no local cluster in /etc/postgresql"; exit 1; }
    log "postgresql: starting cluster $version/main"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
    for _ in $(seq 50); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 0.2; done
    pg_isready -h 127.0.0.1 -p 5432 -q || { log "postgresql: did not answer"; exit 1; }
    local pidfile=/run/postgresql/$version-main.pid  # Debian's external_pid_file
    [[ -r $pidfile ]] || pidfile=/var/lib/postgresql/$version/main/postmaster.pid
    record_started postgres "$(head -n 1 "$pidfile")"
  fi
  # A role and database for VirtLab (the tests' TEST_POSTGRES_URL default).
  psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname='virtlab'" | grep -q 1 ||
    psql_admin -c "CREATE ROLE virtlab LOGIN CREATEDB PASSWORD 'virtlab'"
  psql_admin -c "SELECT 1 FROM pg_database WHERE datname='virtlab'" | grep -q 1 ||
    psql_admin -c "CREATE DATABASE virtlab OWNER virtlab"
}

start_libvirt() {
  local before_virtlogd before_libvirtd pid
  before_virtlogd=$(pidof virtlogd || true)
  before_libvirtd=$(pidof libvirtd || true)
  scripts/setup-libvirt.sh
  # Started here only if it was not running before (a restart to apply qemu.conf is not ours).
  if [[ -z $before_virtlogd ]] && pid=$(pidof -s virtlogd); then record_started virtlogd "$pid"; fi
  if [[ -z $before_libvirtd ]] && pid=$(pidof -s libvirtd); then record_started libvirtd "$pid"; fi
}

stop_started() {
  [[ -f $RECORD ]] || return 0
  prune_record
  [[ -f $RECORD ]] || return 0
  local name pid pgid lines
  mapfile -t lines < <(tac "$RECORD")  # libvirtd before virtlogd: the reverse of starting
  for line in "${lines[@]}"; do
    read -r name pid pgid <<<"$line"
    [[ $pgid == "$OWN_PGID" ]] || continue
    log "$name: stopping (started by this run, pid $pid)"
    kill -s "$(stop_signal "$name")" "$pid" 2>/dev/null || true
    for _ in $(seq 100); do is_daemon "$name" "$pid" || break; sleep 0.1; done
    if is_daemon "$name" "$pid"; then log "$name: still running after 10 s (pid $pid)"; fi
  done
  prune_record
}

case ${1:-start} in
  start) start_redis; start_postgres; start_libvirt ;;
  stop-started) stop_started ;;
  *) echo "usage: $0 [start|stop-started]" >&2; exit 2 ;;
esac
