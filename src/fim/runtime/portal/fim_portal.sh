#!/bin/sh
# fim_portal COMMAND [ARGS...]: run COMMAND on the host, outside the container.
#
# Part of fim's portal (docs/runtime.md, "The portal"); opened by the image's
# 'portal' permission. stdin, stdout and stderr are streamed, the exit code is
# COMMAND's (128+N when a signal N ended it), and SIGINT, SIGTERM, SIGHUP and
# SIGQUIT sent to this script are sent on to COMMAND. Codes of its own: 125 when the
# portal itself fails (closed, not answering, its host side gone), with one E:: line;
# 126 and 127 come from the host when COMMAND cannot be started there.
#
# Plain POSIX sh with cat, mkdir, mkfifo, rm and sleep (a busybox image has them):
# an image need not have Python or any particular C library.

portal=/tmp/.fim-portal/host
# Seconds the host has to take a call (it takes one in milliseconds) before the
# portal counts as gone.
limit=10

fail() {
  printf 'E::%s\n' "$1" >&2
  exit 125
}

[ "$#" -gt 0 ] || fail "Usage: fim_portal COMMAND [ARGS...] (runs COMMAND on the host)"
[ -p "$portal/requests" ] ||
  fail "The portal is closed: this image was not given the 'portal' permission (fim-perms add portal)"

# The call's directory: its request (argv, environment, directory) and FIFOs.
n=0
until mkdir "$portal/calls/$$.$n" 2>/dev/null; do
  n=$((n + 1))
  [ "$n" -lt 100 ] || fail "The portal cannot take a call: cannot make a directory in $portal/calls"
done
id=$$.$n
call=$portal/calls/$id
{
  printf '%s\000' "$@" >"$call/argv" &&
    cat "/proc/$$/environ" >"$call/env" &&
    printf '%s' "$PWD" >"$call/cwd" &&
    mkfifo "$call/in" "$call/out" "$call/err" "$call/sig"
} 2>/dev/null || {
  rm -rf "$call"
  fail "The portal cannot take a call: cannot write in $call"
}

# The streams, each opening blocks until the host opens its end. stdin goes through
# descriptor 3: an asynchronous command's own stdin is /dev/null. The helpers ignore
# the signals this script forwards: SIGTERM to every process of the sandbox (the
# instance told to end) must reach COMMAND, not cut its output short.
trap '' INT TERM HUP QUIT
if true <&0 2>/dev/null; then exec 3<&0; else exec 3</dev/null; fi
cat <&3 >"$call/in" 2>/dev/null 3<&- &
feeder=$!
exec 3<&-
cat "$call/out" &
out=$!
cat "$call/err" >&2 &
err=$!

# The watchdog: a host side that does not take the call in time is gone (a FIFO
# cannot tell a dead reader from a slow one). It claims the call in the host's
# place (mkdir: one of them wins) and opens every FIFO read-write, which lets the
# openings above return; closing them ends the readers.
(
  i=0
  while [ "$i" -lt "$limit" ]; do
    [ -d "$call/claim" ] || [ ! -d "$call" ] && exit 0
    sleep 1
    i=$((i + 1))
  done
  mkdir "$call/claim" 2>/dev/null || exit 0
  : >"$call/unanswered"
  exec 4<>"$call/in" 5<>"$call/out" 6<>"$call/err"
) >/dev/null 2>&1 &

forward() {
  # Read-write: never blocks, even with nobody at the other end.
  [ -p "$call/sig" ] && printf '%s\n' "$1" 1<>"$call/sig"
}
trap 'forward INT' INT
trap 'forward TERM' TERM
trap 'forward HUP' HUP
trap 'forward QUIT' QUIT

# One short line: atomic (under PIPE_BUF) among many callers; read-write, so that
# the write never blocks on a dispatcher that is gone.
printf '%s\n' "$id" 1<>"$portal/requests"

# A trapped signal interrupts wait: wait again until the reader is gone.
finish() {
  while kill -0 "$1" 2>/dev/null; do wait "$1"; done
}
finish "$out"
finish "$err"
# The call is over: what stdin still holds is not the command's. (SIGKILL: the
# feeder ignores SIGTERM.)
kill -KILL "$feeder" 2>/dev/null

code=
[ -f "$call/status" ] && read -r code <"$call/status"
if [ -z "$code" ]; then
  if [ -e "$call/unanswered" ]; then
    rm -rf "$call"
    fail "The portal is not answering: its host side is gone"
  fi
  rm -rf "$call"
  fail "The portal's host side ended before the command did"
fi
rm -rf "$call"
exit "$code"
