#!/usr/bin/env bash
# Starts the local services VirtLab uses when they are not already running:
# Redis (127.0.0.1:6379), PostgreSQL (127.0.0.1:5432) and libvirtd. Idempotent; no systemd needed.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '\033[1;34m[services]\033[0m %s\n' "$*"; }

start_redis() {
  if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then log "redis: running"; return; fi
  log "redis: starting"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/virtlab.log
  for _ in $(seq 50); do redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && return; sleep 0.1; done
  log "redis: did not answer"; exit 1
}

start_postgres() {
  local version
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
  [[ -n $version ]] || { log "postgresql: no cluster found"; exit 1; }
  if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
    log "postgresql: starting cluster $version/main"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
    for _ in $(seq 50); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 0.2; done
  else
    log "postgresql: running"
  fi
  # A role and database for VirtLab, created over the local socket as the postgres user
  # (peer auth works on a fresh Debian install, where TCP needs a password).
  su postgres -c "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='virtlab'\"" | grep -q 1 ||
    su postgres -c "psql -qc \"CREATE ROLE virtlab LOGIN CREATEDB PASSWORD 'virtlab'\""
  su postgres -c "psql -qtAc \"SELECT 1 FROM pg_database WHERE datname='virtlab'\"" | grep -q 1 ||
    su postgres -c "createdb -O virtlab virtlab"
}

start_libvirt() { scripts/setup-libvirt.sh; }

start_redis
start_postgres
start_libvirt
