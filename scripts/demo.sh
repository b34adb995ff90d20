#!/bin/sh
# The main job: install, build the default busybox image, run a command in it.
set -eu
cd "$(dirname "$0")/.."
./scripts/install.sh
out=${FIM_DEMO_DIR:-build/demo}
rm -rf "$out" && mkdir -p "$out"
.venv/bin/fim rootfs busybox "$out/rootfs"
.venv/bin/fim build "$out/rootfs" "$out/busybox.flatimage"
echo "Built $out/busybox.flatimage; running: fim-exec sh -c 'id; cat /etc/os-release'"
"$out/busybox.flatimage" fim-exec sh -c 'id; cat /etc/os-release'
