#!/bin/sh
# fim image: a portable Linux application container in one file. This stub finds
# Python 3.9+ for the runtime inside (the launcher has 8192 bytes: keep it short).
fim_bootstrap='@BOOTSTRAP@'
if [ "${FIM_PYTHON:-}" != embedded ]; then
  for fim_python in "${FIM_PYTHON:-}" /usr/bin/python3 /usr/local/bin/python3 /bin/python3; do
    if [ -n "$fim_python" ] && [ -x "$fim_python" ]; then
      exec "$fim_python" -I -S -c "$fim_bootstrap" "$0" "$@"
    fi
  done
  if fim_python=$(command -v python3); then
    exec "$fim_python" -I -S -c "$fim_bootstrap" "$0" "$@"
  fi
fi
# No host python3 3.9+: the image's own, a .tar.gz in this file, unpacked once.
fim_size=@PYSIZE@
if [ "$fim_size" -eq 0 ]; then
  echo "E::python3 (3.9 or newer) is required to run this image; install it" >&2
  exit 125
fi
fim_dir=/tmp/fim-$(id -u)/python
(umask 077; mkdir -p "$fim_dir") 2>/dev/null
if [ -L "/tmp/fim-$(id -u)" ] || [ ! -O "/tmp/fim-$(id -u)" ] || [ ! -O "$fim_dir" ]; then
  echo "E::No usable directory for the interpreter: /tmp/fim-$(id -u) is not yours" >&2
  exit 125
fi
fim_py=$fim_dir/@BUILDID@
if [ ! -x "$fim_py/bin/python3" ]; then
  rm -rf "$fim_py.$$"
  mkdir "$fim_py.$$" && tail -c +$((@PYOFFSET@ + 1)) "$0" 2>/dev/null | head -c "$fim_size" |
    gzip -dc | tar -xf - -C "$fim_py.$$" && [ -x "$fim_py.$$/bin/python3" ] || {
    rm -rf "$fim_py.$$"
    echo "E::Cannot extract the interpreter of $0 (tail, head, gzip and tar are needed)" >&2
    exit 125
  }
  # Published by a symlink (atomic); a loser's link lands in the winner's copy.
  ln -s "@BUILDID@.$$" "$fim_py" 2>/dev/null
  if [ -L "$fim_py/@BUILDID@.$$" ] || [ ! -L "$fim_py" ]; then
    rm -f "$fim_py/@BUILDID@.$$"; rm -rf "$fim_py.$$"
  fi
fi
exec "$fim_py/lib/ld.so" --library-path "$fim_py/lib" "$fim_py/bin/python3" \
  -I -S -c "$fim_bootstrap" "$0" "$@"
