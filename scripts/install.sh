#!/bin/sh
# Install everything fim needs on Debian/Ubuntu: system tools (as root), then the
# Python package with its test tools in .venv. With `test`, also the servers and
# tools the end-to-end tests run against. Safe to run again: it only does what is
# missing.
set -eu
cd "$(dirname "$0")/.."

# uidmap: newuidmap/newgidmap, for ordinary users' subordinate ids (package installs).
PACKAGES="python3 python3-venv squashfs-tools squashfuse fuse3 fuse-overlayfs unionfs-fuse busybox-static util-linux mmdebstrap zstd uidmap"
# Real X11, Wayland, audio and D-Bus servers; gcc builds a made-up GPU driver; proot
# for the fallback where namespaces are refused (embedded in images when present);
# podman, skopeo and umoci make OCI/Docker images and unpack them for comparison;
# the desktop's own tools check the integration (desktop-file-validate, xdg-mime,
# update-mime-database, gtk-update-icon-cache, pngcheck).
TEST_PACKAGES="xvfb xauth x11-utils weston pulseaudio dbus gcc libc6-dev proot podman skopeo umoci desktop-file-utils xdg-utils shared-mime-info gtk-update-icon-cache pngcheck"
if [ "${1:-}" = test ]; then
  PACKAGES="$PACKAGES $TEST_PACKAGES"
fi

missing=""
for p in $PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "E::missing system packages:$missing; run: sudo apt-get install$missing" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q $missing >/dev/null
fi

# Normal distributions ship /dev/fuse world-accessible; some minimal systems do not.
if [ "$(id -u)" -eq 0 ] && [ -c /dev/fuse ]; then
  chmod 0666 /dev/fuse
fi

# The system Python, not a shim that may shadow it on PATH.
python=/usr/bin/python3
[ -x "$python" ] || python=$(command -v python3)
stamp=.venv/.fim-installed
want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  [ -x .venv/bin/python ] || "$python" -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
  echo "$want" > "$stamp"
fi
