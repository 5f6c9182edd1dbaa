#!/usr/bin/env bash
# Runs the whole portal in the foreground: ASGI web server, Celery host agent and beat.
# Ctrl-C (or SIGTERM) stops everything it started: honcho stops the three processes, every VM of
# this deployment on this host is destroyed (`manage.py host teardown`), then scripts/services.sh
# stops the daemons (Redis, PostgreSQL, libvirtd, virtlogd) that this `make run` started; daemons
# that were already running keep running.
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
port=${PORT:-8000}
var=${VIRTLAB_VAR_DIR:-var}
"$py" manage.py ensure_admin
echo
echo "  VirtLab is starting at http://127.0.0.1:${port}/"
echo "  Admin login: $(cat "$var/admin-credentials")"
echo "  Health:      http://127.0.0.1:${port}/healthz"
echo "  Stop:        Ctrl-C"
echo
export PORT=$port

trap '"$py" manage.py host teardown || true; scripts/services.sh stop-started' EXIT
.venv/bin/honcho start -f Procfile &
honcho=$!
# honcho runs in the background so a signal to this script is handled at once (bash defers traps
# while a foreground child runs): it is forwarded to honcho, which stops web, worker and beat
# (SIGKILL after 5 s); then the EXIT trap stops the daemons this run started.
trap 'kill -TERM "$honcho" 2>/dev/null || true' INT TERM
status=0
wait "$honcho" || status=$?
while kill -0 "$honcho" 2>/dev/null; do wait "$honcho" || status=$?; done
exit "$status"
