#!/usr/bin/env bash
# Install a mercato relay on a fresh Linux VPS (Debian/Ubuntu, systemd), as root:
#   git clone <this repository> /opt/mercato/src && bash /opt/mercato/src/bootstrap/install.sh
# It creates the `mercato` user, a virtualenv in /opt/mercato/venv, the data dir
# /var/lib/mercato-relay, and the systemd unit mercato-relay.service; then it
# starts the relay and prints the address to give others as a bootstrap peer.
# To upgrade: git -C /opt/mercato/src pull, then run it again; the data dir (and so
# the peer id) is kept.
set -euo pipefail

SRC="$(cd "$(dirname "$0")/.." && pwd)"
PREFIX=/opt/mercato
DATA=/var/lib/mercato-relay
UNIT=/etc/systemd/system/mercato-relay.service
PORT="${MERCATO_RELAY_PORT:-4001}"

if [ "$(id -u)" -ne 0 ]; then
    echo "run as root (it installs a system service)" >&2
    exit 1
fi
# py-libp2p pins fastecdsa 2.3.2, which is built from source: a compiler, Python's
# headers and GMP. venv needs ensurepip (Debian's python3-venv).
if command -v apt-get >/dev/null; then
    apt-get install -y -qq python3-venv python3-dev build-essential libgmp-dev >/dev/null
fi
command -v python3 >/dev/null || { echo "python3 (3.11 or newer) is needed" >&2; exit 1; }
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "python3 must be 3.11 or newer" >&2; exit 1; }
python3 -c 'import ensurepip' 2>/dev/null \
    || { echo "python3-venv is needed: apt-get install -y python3-venv" >&2; exit 1; }

id mercato >/dev/null 2>&1 || useradd --system --home "$DATA" --shell /usr/sbin/nologin mercato
install -d -o mercato -g mercato -m 700 "$DATA"
python3 -m venv "$PREFIX/venv"
"$PREFIX/venv/bin/pip" install --quiet --upgrade pip
"$PREFIX/venv/bin/pip" install --quiet "$SRC"

sed "s#/ip4/0.0.0.0/tcp/4001#/ip4/0.0.0.0/tcp/$PORT#" "$SRC/bootstrap/mercato-relay.service" > "$UNIT"
systemctl daemon-reload
systemctl enable mercato-relay.service
systemctl restart mercato-relay.service  # starts it, or restarts it on an upgrade

# Wait for the control API, then print what others need.
for _ in $(seq 1 30); do
    if runuser -u mercato -- "$PREFIX/venv/bin/mercato" node status --data-dir "$DATA" >/dev/null 2>&1; then
        break
    fi
    sleep 1
done
PEER_ID="$(runuser -u mercato -- "$PREFIX/venv/bin/mercato" node status --data-dir "$DATA" --json \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["peer_id"])')"
PUBLIC_IP="$(curl -fsS --max-time 5 https://api.ipify.org 2>/dev/null || hostname -I | cut -d' ' -f1)"
echo "mercato relay running. Open TCP port $PORT in the firewall, then give others:"
echo "  /ip4/$PUBLIC_IP/tcp/$PORT/p2p/$PEER_ID"
