#!/usr/bin/env bash
# Installs front-end packages from package-lock.json and copies the files the site serves into
# portal/static/vendor/ (ignored by git), where collectstatic picks them up.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=node_modules/.lock.sha
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" > "$stamp"
fi
v=portal/static/vendor
rm -rf "$v"; mkdir -p "$v/htmx" "$v/xterm" "$v/asciinema-player"
cp node_modules/htmx.org/dist/htmx.min.js "$v/htmx/"
cp node_modules/@xterm/xterm/lib/xterm.js node_modules/@xterm/xterm/lib/xterm.js.map node_modules/@xterm/xterm/css/xterm.css "$v/xterm/"
cp node_modules/@xterm/addon-fit/lib/addon-fit.js* "$v/xterm/"
cp node_modules/@xterm/addon-web-links/lib/addon-web-links.js* "$v/xterm/"
# The replay page's player (labs/timeline): one self-contained bundle and its stylesheet.
cp node_modules/asciinema-player/dist/bundle/asciinema-player.min.js node_modules/asciinema-player/dist/bundle/asciinema-player.css "$v/asciinema-player/"
echo "[assets] vendor files in $v"
