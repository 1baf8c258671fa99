#!/usr/bin/env bash
# Install the appliance as a systemd service, from the repository root, after bootstrap.sh:
#
#   sudo bash systemd/install.sh [CONFIG.yaml]    # user, folders, config, models, unit, enable --now
#   bash systemd/install.sh --print-unit           # only print the unit it would install
#
# Creates the system user `appliance` (groups audio), /etc/appliance/config.yaml (CONFIG.yaml,
# else the embedded default; an existing one is kept), /etc/appliance/elevenlabs_api_key (empty,
# 0600; put the key in it for remote agents), copies the models into /var/cache/appliance/models,
# installs /etc/systemd/system/appliance.service and starts it. Idempotent. The user who ran sudo
# joins group `appliance`, so `appliance status` / `appliance send` reach the status feed.
# Remove it with: sudo bash systemd/uninstall.sh
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
UNIT_SRC="$REPO/systemd/appliance.service"
UNIT_DST=/etc/systemd/system/appliance.service
CONF_DIR=/etc/appliance
MODELS_DIR=/var/cache/appliance/models
APPLIANCE="$REPO/.venv/bin/appliance"

render_unit() {
  # The service sees no home directory (ProtectHome=tmpfs) but the repository; a Python from a
  # home directory (pyenv) is made visible too.
  local prefix extra=""
  prefix="$("$REPO/.venv/bin/python" -c 'import sys; print(sys.base_prefix)' 2>/dev/null || true)"
  case "$prefix" in
    /home/*|/root/*) extra="BindReadOnlyPaths=$prefix" ;;
  esac
  sed -e "s|@APPLIANCE_HOME@|$REPO|g" "$UNIT_SRC" | while IFS= read -r line; do
    printf '%s\n' "$line"
    if [ -n "$extra" ] && [ "$line" = "BindReadOnlyPaths=$REPO" ]; then printf '%s\n' "$extra"; fi
  done
}

if [ "${1:-}" = "--print-unit" ]; then
  render_unit
  exit 0
fi

say() { printf '==> %s\n' "$*"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run it as root: sudo bash systemd/install.sh"
[ -x "$APPLIANCE" ] || die "$APPLIANCE is missing: run 'bash systemd/bootstrap.sh' first"
command -v systemctl >/dev/null || die "systemctl not found: this system does not run systemd"
case "$REPO" in
  *[[:space:]]*) die "the repository path must not contain spaces: $REPO" ;;
esac
CONFIG_SRC="${1:-}"
if [ -n "$CONFIG_SRC" ] && [ ! -f "$CONFIG_SRC" ]; then die "no such config file: $CONFIG_SRC"; fi

say "user 'appliance' (groups: audio)"
if ! id appliance >/dev/null 2>&1; then
  useradd --system --user-group --home-dir /var/lib/appliance --no-create-home \
          --shell /usr/sbin/nologin --comment "appliance voice assistant" appliance
fi
usermod -a -G audio appliance
if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
  usermod -a -G appliance "$SUDO_USER"
  say "$SUDO_USER joins group 'appliance' (the status feed; log in again to use it)"
fi

say "configuration in $CONF_DIR"
install -d -m 0755 "$CONF_DIR"
if [ ! -f "$CONF_DIR/config.yaml" ]; then
  if [ -n "$CONFIG_SRC" ]; then
    install -m 0640 -g appliance "$CONFIG_SRC" "$CONF_DIR/config.yaml"
  else
    install -m 0640 -g appliance "$REPO/appliance/assets/default-config.yaml" "$CONF_DIR/config.yaml"
  fi
elif [ -n "$CONFIG_SRC" ]; then
  say "keeping the existing $CONF_DIR/config.yaml (not replaced by $CONFIG_SRC)"
fi
if [ ! -f "$CONF_DIR/elevenlabs_api_key" ]; then
  install -m 0600 /dev/null "$CONF_DIR/elevenlabs_api_key"   # LoadCredential needs the file
fi
"$APPLIANCE" check-config "$CONF_DIR/config.yaml"

say "models in $MODELS_DIR"
install -d -m 0750 -o appliance -g appliance /var/cache/appliance "$MODELS_DIR"
SRC_MODELS=""
if [ -n "${SUDO_USER:-}" ]; then
  user_home="$(getent passwd "$SUDO_USER" | cut -d: -f6)"
  [ -d "$user_home/.cache/appliance/models" ] && SRC_MODELS="$user_home/.cache/appliance/models"
fi
[ -z "$SRC_MODELS" ] && [ -d "$HOME/.cache/appliance/models" ] && SRC_MODELS="$HOME/.cache/appliance/models"
if [ -n "$SRC_MODELS" ]; then
  cp -a --no-preserve=ownership "$SRC_MODELS/." "$MODELS_DIR/"
fi
if ! APPLIANCE_MODELS_DIR="$MODELS_DIR" "$APPLIANCE" models verify >/dev/null 2>&1; then
  APPLIANCE_MODELS_DIR="$MODELS_DIR" "$APPLIANCE" models provision
fi
chown -R appliance:appliance /var/cache/appliance

say "unit $UNIT_DST"
render_unit > "$UNIT_DST.tmp"
chmod 0644 "$UNIT_DST.tmp"
mv "$UNIT_DST.tmp" "$UNIT_DST"
systemd-analyze verify "$UNIT_DST"
systemctl daemon-reload
systemctl enable --now appliance.service

say "installed. Audio devices the service can use:"
"$APPLIANCE" devices || true
cat <<EOF

  state:    $APPLIANCE status
  logs:     journalctl -u appliance -f
  config:   sudoedit $CONF_DIR/config.yaml, then: sudo systemctl reload appliance
  API key:  sudo sh -c 'cat > $CONF_DIR/elevenlabs_api_key', then: sudo systemctl restart appliance
  check:    sudo systemctl stop appliance
            APPLIANCE_MODELS_DIR=$MODELS_DIR $APPLIANCE doctor --config $CONF_DIR/config.yaml
  remove:   sudo bash $REPO/systemd/uninstall.sh
Name the microphone and speaker in appliance.audio (input_device / output_device, e.g. "USB"):
the service uses ALSA directly, and the "default", "pulse" or "pipewire" devices of a desktop
session are not available to a system service.
EOF
