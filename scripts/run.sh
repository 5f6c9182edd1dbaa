#!/usr/bin/env bash
# Runs the whole portal in the foreground: ASGI web server, Celery host agent and beat.
# Ctrl-C stops everything it started (honcho forwards the signal to every process).
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
port=${PORT:-8000}
"$py" manage.py ensure_admin
echo
echo "  VirtLab is starting at http://127.0.0.1:${port}/"
echo "  Admin login: $(cat var/admin-credentials)"
echo "  Health:      http://127.0.0.1:${port}/healthz"
echo
export PORT=$port
exec .venv/bin/honcho start -f Procfile
