#!/bin/sh
# fim image: a portable Linux application container in one file.
# This stub finds Python 3.9+ and hands the file to the runtime embedded in it.
# The bootstrap is held once, in a variable: the launcher has 8192 bytes.
fim_bootstrap='@BOOTSTRAP@'
for fim_python in "${FIM_PYTHON:-}" /usr/bin/python3 /usr/local/bin/python3 /bin/python3; do
  if [ -n "$fim_python" ] && [ -x "$fim_python" ]; then
    exec "$fim_python" -I -S -c "$fim_bootstrap" "$0" "$@"
  fi
done
if fim_python=$(command -v python3); then
  exec "$fim_python" -I -S -c "$fim_bootstrap" "$0" "$@"
fi
echo "E::python3 (3.9 or newer) is required to run this image; install it" >&2
exit 125
