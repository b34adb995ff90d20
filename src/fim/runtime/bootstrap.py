# The first Python code an image runs: the launcher passes the text of this file to
# `python3 -I -S -c` (where __name__ is "__main__"), so it may not contain a single
# quote, and it runs before the runtime exists on disk. It finds the per-user
# global directory, extracts the runtime payload once per build id, and hands
# over to fim.runtime.main.
import os
import sys

MAGIC = b"\x7fFIMAGE\x00"
HEADER_OFFSET = 8192
PAYLOAD_MAGIC = b"FIMPAY01"


def fail(message):
    sys.stderr.write("E::" + message + "\n")
    sys.exit(125)


def global_dir():
    # /tmp/fim is shared by convention; code is only ever run from a directory
    # owned by the caller, so a /tmp/fim of another user sends us to our own.
    uid = os.getuid()
    for path in ("/tmp/fim", "/tmp/fim-%d" % uid):
        try:
            os.mkdir(path, 0o755)
        except FileExistsError:
            pass
        except OSError as e:
            fail("Cannot create %s: %s" % (path, e.strerror))
        st = os.lstat(path)
        if st.st_uid == uid and not os.path.islink(path) and not st.st_mode & 0o022:
            return path
    fail("No usable runtime directory: /tmp/fim-%d belongs to someone else" % uid)


# (path, mode, data) of each file of a runtime payload, in order; struct.error,
# zlib.error or UnicodeDecodeError when it is damaged. The builder reads payloads
# with this same function.
def records(payload):
    import struct
    import zlib

    if payload[:8] != PAYLOAD_MAGIC:
        raise ValueError("not a runtime payload")
    pos = 8
    while pos < len(payload):
        plen, mode, clen = struct.unpack_from("<HII", payload, pos)
        pos += 10
        name = payload[pos:pos + plen].decode("utf-8")
        pos += plen
        yield name, mode, zlib.decompress(payload[pos:pos + clen])
        pos += clen


def extract(image, fd, header, dest):
    import struct
    import zlib

    poff, psize = struct.unpack_from("<QQ", header, 48)
    payload = os.pread(fd, psize, poff)
    if len(payload) != psize or payload[:8] != PAYLOAD_MAGIC:
        fail("%s is truncated or damaged (runtime payload incomplete)" % image)
    tmp = "%s.%d" % (dest, os.getpid())
    try:
        for name, mode, data in records(payload):
            path = os.path.join(tmp, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as out:
                out.write(data)
            os.chmod(path, mode)
    except (struct.error, zlib.error, UnicodeDecodeError):
        fail("%s is damaged (runtime payload unreadable)" % image)
    try:
        os.rename(tmp, dest)
    except OSError:
        # Another instance finished first; its copy is identical.
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def boot():
    if sys.version_info < (3, 9):
        fail("Python 3.9 or newer is required (found %d.%d)" % sys.version_info[:2])
    image = os.path.realpath(sys.argv[1])
    try:
        # Opened once: the runtime reads the settings and the layer chain through it.
        fd = os.open(image, os.O_RDONLY | os.O_CLOEXEC)
        header = os.pread(fd, 4096, HEADER_OFFSET)
    except OSError as e:
        fail("Cannot read %s: %s" % (image, e.strerror))
    if header[:8] != MAGIC:
        fail("%s is not a fim image (no image header)" % image)
    version = int.from_bytes(header[8:12], "little")
    if version != 1:
        fail("%s uses image format version %d; this runtime reads version 1" % (image, version))
    build_id = header[72:104].rstrip(b"\0").decode("ascii", "replace")
    gdir = global_dir()
    app = gdir + "/app/" + build_id
    runtime = app + "/runtime"
    if not os.path.isdir(runtime):
        os.makedirs(app, exist_ok=True)
        extract(image, fd, header, runtime)
    sys.path.insert(0, runtime)
    from fim.runtime.main import main

    code = main(image, sys.argv[2:], gdir, header, fd)
    # Skip the interpreter teardown: milliseconds on every run, nothing to save.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    boot()
