# Production-like image for the web tier, the host agent (worker) and beat.
FROM debian:12-slim
ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 VIRTLAB_VAR_DIR=/var/lib/virtlab/var
WORKDIR /app
COPY scripts/system-packages.txt scripts/
RUN apt-get update -q && apt-get install -y -q --no-install-recommends python3 python3-venv python3-dev \
      build-essential pkg-config gettext libvirt-dev libvirt-clients qemu-utils nodejs npm \
    && rm -rf /var/lib/apt/lists/*
COPY requirements.txt package.json package-lock.json ./
RUN python3 -m venv .venv && .venv/bin/pip install -q -r requirements.txt && npm ci --no-audit --no-fund
COPY . .
RUN scripts/assets.sh && SECRET_KEY=build .venv/bin/python manage.py collectstatic --noinput -v0 \
    && SECRET_KEY=build .venv/bin/python manage.py compilemessages -v0 --ignore='.venv/*' --ignore='node_modules/*'
# The app runs unprivileged: the code stays root-owned (read-only to it); only its runtime directory
# is its own. docker-compose.yml's secrets are readable by this group (10001).
RUN groupadd --system --gid 10001 virtlab \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/virtlab/var --shell /usr/sbin/nologin virtlab \
    && install -d -o virtlab -g virtlab -m 0750 /var/lib/virtlab/var
USER 10001:10001
EXPOSE 8000
CMD [".venv/bin/uvicorn", "portal.asgi:application", "--host", "0.0.0.0", "--port", "8000", "--workers", "4"]
