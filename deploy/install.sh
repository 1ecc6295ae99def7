#!/bin/bash
# Install or upgrade peershop on Debian / Raspberry Pi OS (bookworm or newer).
#
#   sudo deploy/install.sh                 # install or upgrade this checkout on this Pi
#   deploy/install.sh --root /tmp/pi       # everything into a folder, the machine untouched
#
# Safe to run again: it upgrades the code and the units, keeps /etc/peershop/peershop.toml
# and the data in /var/lib/peershop, and migrates the database when the hub starts.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: install.sh [--root DIR] [--source DIR] [--python PYTHON] [--pip-args ARGS]
                  [--no-apt] [--no-start]

  --root DIR       install below DIR instead of / (also: DESTDIR=DIR); no packages,
                   no running services are touched, units are enabled with systemctl --root
  --source DIR     the peershop source to install (default: this script's checkout)
  --python PYTHON  interpreter for the venv (default: python3)
  --pip-args ARGS  extra pip install arguments (e.g. "--no-index --find-links WHEELS")
  --no-apt         do not apt-get install mosquitto, python3-venv, python3-dev, gcc
  --no-start       enable the services but do not (re)start them now
EOF
}

ROOT="${DESTDIR:-/}"
SOURCE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON=python3
PIP_ARGS=""
APT=1
START=1
while [ $# -gt 0 ]; do
    case "$1" in
        --root) ROOT="$2"; shift 2 ;;
        --root=*) ROOT="${1#*=}"; shift ;;
        --source) SOURCE="$2"; shift 2 ;;
        --source=*) SOURCE="${1#*=}"; shift ;;
        --python) PYTHON="$2"; shift 2 ;;
        --python=*) PYTHON="${1#*=}"; shift ;;
        --pip-args) PIP_ARGS="$2"; shift 2 ;;
        --pip-args=*) PIP_ARGS="${1#*=}"; shift ;;
        --no-apt) APT=0; shift ;;
        --no-start) START=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done

ROOT="$(realpath -m "$ROOT")"
SOURCE="$(realpath "$SOURCE")"
DEPLOY="$SOURCE/deploy"
LIVE=0
[ "$ROOT" = "/" ] && LIVE=1
at() { if [ "$LIVE" = 1 ]; then echo "$1"; else echo "$ROOT$1"; fi; }
step() { echo "==> $*"; }
note() { echo "    $*"; }

OPT=/opt/peershop
VENV=$OPT/venv
ETC=/etc/peershop
DATA=/var/lib/peershop
UNITS=/etc/systemd/system
SERVICES="peershop-mosquitto.service peershop.service"

if [ ! -f "$SOURCE/pyproject.toml" ] || [ ! -d "$SOURCE/hub" ]; then
    echo "install.sh: $SOURCE is not a peershop source tree (use --source)" >&2
    exit 2
fi
if [ "$LIVE" = 1 ] && [ "$(id -u)" != 0 ]; then
    echo "install.sh: run as root (sudo), or use --root DIR to install into a folder" >&2
    exit 2
fi
AS_ROOT=0
[ "$(id -u)" = 0 ] && AS_ROOT=1

# -- packages ---------------------------------------------------------------------------
if [ "$LIVE" = 1 ] && [ "$APT" = 1 ]; then
    step "packages: mosquitto, python3-venv, and a compiler for evdev (USB badge readers)"
    missing=""
    for pkg in mosquitto python3-venv python3-dev gcc linux-libc-dev; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || missing="$missing $pkg"
    done
    if [ -n "$missing" ]; then
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing
    else
        note "already installed"
    fi
else
    step "packages: skipped (--root or --no-apt)"
fi

# -- the peershop user ------------------------------------------------------------------
step "system user peershop"
PASSWD="$(at /etc/passwd)"
user_args=(--system --user-group --home-dir "$DATA" --no-create-home --shell /usr/sbin/nologin)
prefix=()
[ "$LIVE" = 0 ] && prefix=(--prefix "$ROOT")
if [ ! -f "$PASSWD" ]; then
    note "no $PASSWD in the target root: files stay owned by $(id -un)"
elif grep -q '^peershop:' "$PASSWD"; then
    note "exists"
else
    useradd "${prefix[@]}" "${user_args[@]}" peershop
    note "created"
fi
OWNER=""
if [ -f "$PASSWD" ] && grep -q '^peershop:' "$PASSWD"; then
    OWNER="$(awk -F: '$1 == "peershop" {print $3 ":" $4}' "$PASSWD")"
    # Hardware the agent and bridge drive: GPIO, serial ports, I2C/SPI, input devices.
    for group in gpio dialout i2c spi input; do
        if grep -q "^$group:" "$(at /etc/group)" \
            && ! grep -E "^$group:" "$(at /etc/group)" | grep -qE '[:,]peershop(,|$)'; then
            usermod "${prefix[@]}" -a -G "$group" peershop
            note "added to group $group"
        fi
    done
fi
own() {  # own OWNER_SPEC PATH...: chown when we can (root) and the user exists
    local spec="$1"; shift
    if [ "$AS_ROOT" = 1 ] && [ -n "$OWNER" ]; then
        case "$spec" in
            peershop) chown "$OWNER" "$@" ;;
            root:peershop) chown "0:${OWNER#*:}" "$@" ;;
        esac
    fi
}

# -- folders ----------------------------------------------------------------------------
step "folders: $OPT, $ETC, $DATA"
install -d -m 0755 "$(at $OPT)" "$(at /usr/local/bin)" "$(at $UNITS)"
install -d -m 0750 "$(at $ETC)" "$(at $DATA)" "$(at $DATA/backups)"
install -d -m 0700 "$(at $DATA/broker)"
own root:peershop "$(at $ETC)"
own peershop "$(at $DATA)" "$(at $DATA/backups)" "$(at $DATA/broker)"

# -- the code ---------------------------------------------------------------------------
step "python venv in $VENV"
if [ ! -x "$(at $VENV)/bin/python" ]; then
    "$PYTHON" -m venv "$(at $VENV)"
    note "created with $("$(at $VENV)/bin/python" --version)"
fi
# Build from a clean copy: never write build/ or *.egg-info into the source tree.
build="$(mktemp -d)"
trap 'rm -rf "$build"' EXIT
tar -C "$SOURCE" -cf - \
    --exclude=.git --exclude=.venv --exclude=build --exclude=dist --exclude='*.egg-info' \
    --exclude=__pycache__ --exclude=.pytest_cache --exclude=.hypothesis \
    --exclude=.ruff_cache --exclude=data --exclude=test-artifacts . | tar -C "$build" -xf -
# shellcheck disable=SC2086  # PIP_ARGS is a list of words on purpose
"$(at $VENV)/bin/python" -m pip install --quiet --disable-pip-version-check \
    $PIP_ARGS "$build"
note "$("$(at $VENV)/bin/peershop" --version)"
install -m 0755 "$DEPLOY/bin/peershop" "$(at /usr/local/bin/peershop)"

# -- config -----------------------------------------------------------------------------
CONFIG="$(at $ETC/peershop.toml)"
step "config $ETC/peershop.toml"
if [ -f "$CONFIG" ]; then
    note "kept (yours to edit)"
else
    hub_password="$(head -c 24 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
    timezone="UTC"
    if [ -s "$(at /etc/timezone)" ]; then
        timezone="$(tr -d ' \n' < "$(at /etc/timezone)")"
    fi
    umask 027
    sed -e "s/@HUB_PASSWORD@/$hub_password/" -e "s|@TIMEZONE@|$timezone|" \
        "$DEPLOY/peershop.toml.in" > "$CONFIG.new"
    chmod 0640 "$CONFIG.new"
    own root:peershop "$CONFIG.new"
    mv "$CONFIG.new" "$CONFIG"
    umask 022
    note "written with a new hub MQTT password"
fi

# -- broker files -----------------------------------------------------------------------
step "Mosquitto config in $DATA/broker"
run_peershop() {  # as the peershop user on a live system; data under the root otherwise
    if [ "$LIVE" = 1 ]; then
        runuser -u peershop -- "$VENV/bin/peershop" --config "$ETC/peershop.toml" "$@"
    else
        PEERSHOP_SITE_DATA_DIR="$(at $DATA)" \
            "$(at $VENV)/bin/peershop" --config "$CONFIG" "$@"
    fi
}
run_peershop mosquitto-config --out "$(at $DATA/broker)" >/dev/null
# Files an operator made as root (a database, a restored backup) must be the hub's.
if [ "$AS_ROOT" = 1 ] && [ -n "$OWNER" ]; then
    chown -R "$OWNER" "$(at $DATA)"
fi
note "passwords and ACL written from the database"

# -- systemd ----------------------------------------------------------------------------
step "systemd units"
for unit in "$DEPLOY"/systemd/*.service; do
    install -m 0644 "$unit" "$(at $UNITS)/$(basename "$unit")"
    note "$(basename "$unit")"
done
if [ "$LIVE" = 1 ] && [ -d /run/systemd/system ]; then
    if command -v systemd-analyze >/dev/null; then
        systemd-analyze verify "$UNITS"/peershop*.service || note "systemd-analyze: see above"
    fi
    systemctl daemon-reload
    # Debian's broker would hold port 1883 with the wrong config.
    systemctl disable --now mosquitto.service 2>/dev/null || true
    systemctl enable $SERVICES
    if [ "$START" = 1 ]; then
        systemctl restart $SERVICES
        note "started: $SERVICES"
    fi
elif command -v systemctl >/dev/null; then
    systemctl --root="$ROOT" --quiet enable $SERVICES
    note "enabled in $ROOT (nothing started)"
else
    note "systemctl not found: enable $SERVICES yourself"
fi

step "done"
cat <<EOF
    Add a device:     sudo peershop device add laser-node
    Logs:             journalctl -u peershop -u peershop-mosquitto -f
    Back up:          sudo peershop backup $DATA/backups/peershop-\$(date +%F).backup
EOF
