#!/usr/bin/env bash
# Installs everything VirtLab needs on a fresh Debian 12 machine (as root, no stdin) and
# prepares the project: system packages, services, venv, front-end assets, guest image,
# database, static files, translations and content. Safe to run again: each step is cached.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${VENV:-$ROOT/.venv}
log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*"; }

want_packages() {
  cat scripts/system-packages.txt guest/packages.txt 2>/dev/null | sed 's/#.*//' | tr -s ' \t' '\n' | sed '/^$/d' | sort -u
}

install_system_packages() {
  local missing=()
  while read -r pkg; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done < <(want_packages)
  command -v node >/dev/null || missing+=(nodejs npm)
  if ((${#missing[@]})); then
    log "apt: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
  else
    log "apt: all system packages present"
  fi
}

install_venv() {
  local stamp="$VENV/.requirements.sha"
  local want; want=$(sha256sum requirements.txt | cut -d' ' -f1)
  if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then log "venv: up to date"; return; fi
  log "venv: installing requirements.txt"
  [[ -x $VENV/bin/python ]] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check --upgrade pip
  "$VENV/bin/pip" install -q --disable-pip-version-check -r requirements.txt
  echo "$want" > "$stamp"
}

install_assets() { scripts/assets.sh; }

# var/ and the development secret key, before any manage.py call: importing the settings writes
# nothing, and refuses to start without a key (production sets SECRET_KEY or SECRET_KEY_FILE).
make_var_dir() {
  local var=${VIRTLAB_VAR_DIR:-var}
  mkdir -p "$var"
  if [[ -s $var/secret_key ]]; then return; fi
  log "secret key: $var/secret_key"
  (umask 077 && python3 -c 'import secrets; print(secrets.token_urlsafe(64))' >"$var/secret_key.new")
  mv "$var/secret_key.new" "$var/secret_key"
}

main() {
  install_system_packages
  make_var_dir
  scripts/services.sh
  install_venv
  install_assets
  log "guest image"
  guest/build.sh | tail -n 1
  log "database, static files, translations, content"
  local py="$VENV/bin/python"
  "$py" manage.py migrate --noinput -v 0
  "$py" manage.py compilemessages -v 0 --ignore='.venv/*' --ignore='node_modules/*'
  "$py" manage.py collectstatic --noinput -v 0
  "$py" manage.py docs build
  "$py" manage.py labs check
}

main "$@"
