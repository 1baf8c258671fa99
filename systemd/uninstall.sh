#!/usr/bin/env bash
# Remove the appliance service:
#
#   sudo bash systemd/uninstall.sh           # stop, disable, remove the unit; keep config, models, recordings
#   sudo bash systemd/uninstall.sh --purge   # also /etc/appliance, /var/lib/appliance (recordings),
#                                            #   /var/cache/appliance (models) and the user 'appliance'
set -euo pipefail
UNIT=/etc/systemd/system/appliance.service

say() { printf '==> %s\n' "$*"; }
[ "$(id -u)" -eq 0 ] || { echo "uninstall.sh: run it as root: sudo bash systemd/uninstall.sh" >&2; exit 1; }
PURGE=0
case "${1:-}" in
  "") ;;
  --purge) PURGE=1 ;;
  *) echo "usage: sudo bash systemd/uninstall.sh [--purge]" >&2; exit 2 ;;
esac

if systemctl list-unit-files appliance.service >/dev/null 2>&1; then
  say "stopping and disabling appliance.service"
  systemctl disable --now appliance.service || true
fi
rm -f "$UNIT"
systemctl daemon-reload || true
systemctl reset-failed appliance.service 2>/dev/null || true

if [ "$PURGE" -eq 1 ]; then
  say "removing /etc/appliance, /var/lib/appliance, /var/cache/appliance and the user 'appliance'"
  rm -rf /etc/appliance /var/lib/appliance /var/lib/private/appliance /var/cache/appliance /var/cache/private/appliance
  if id appliance >/dev/null 2>&1; then userdel appliance || true; fi
  if getent group appliance >/dev/null 2>&1; then groupdel appliance || true; fi
else
  say "kept: /etc/appliance (config, API key), /var/lib/appliance (recordings), /var/cache/appliance (models)"
  echo "    remove them too with: sudo bash systemd/uninstall.sh --purge"
fi
say "done"
