# The first Python code an image runs: the launcher passes the text of this file to
# `python3 -I -S -c` (where __name__ is "__main__"), so it may not contain a single
# quote, and it runs before the runtime exists on disk. It finds the per-user
# global directory, extracts the runtime payload once per build id, and hands
# over to fim.runtime.main.
#
# Whatever the file holds, each failure is one E:: line and exit code 125: a damaged
# or hostile header, payload or record never reaches a traceback, a huge allocation
# or a write outside the runtime directory being made.
import os
import sys

MAGIC = b"\x7fFIMAGE\x00"
HEADER_OFFSET = 8192
PAYLOAD_MAGIC = b"FIMPAY01"
# The payload holds the runtime and a few tools with their libraries (a few MB);
# these bounds only keep a damaged size from asking for gigabytes.
MAX_PAYLOAD = 256 << 20
MAX_FILE = 64 << 20
ID_CHARS = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_"


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


def safe_name(name):
    # A relative path of plain components: nothing absolute, no "..", no NUL.
    parts = name.split("/")
    return bool(name) and "\0" not in name and all(p not in ("", ".", "..") for p in parts)


# (path, mode, data) of each file of a runtime payload, in order; ValueError when it
# is damaged (a short record, bad UTF-8, a zlib error, a path leaving its directory,
# a file larger than MAX_FILE). The builder reads payloads with this same function.
def records(payload):
    import struct
    import zlib

    if payload[:8] != PAYLOAD_MAGIC:
        raise ValueError("not a runtime payload")
    pos = 8
    while pos < len(payload):
        if pos + 10 > len(payload):
            raise ValueError("short record")
        plen, mode, clen = struct.unpack_from("<HII", payload, pos)
        pos += 10
        if pos + plen + clen > len(payload):
            raise ValueError("record runs past the payload")
        try:
            name = payload[pos:pos + plen].decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("file name is not UTF-8") from None
        if not safe_name(name):
            raise ValueError("file name leaves the runtime directory")
        pos += plen
        unpacker = zlib.decompressobj()
        try:
            data = unpacker.decompress(payload[pos:pos + clen], MAX_FILE)
        except zlib.error:
            raise ValueError("compressed data damaged") from None
        if not unpacker.eof or unpacker.unconsumed_tail:
            raise ValueError("compressed data damaged or too large")
        yield name, mode & 0o755, data
        pos += clen


def payload_of(image, fd, header):
    import struct

    size = os.fstat(fd).st_size
    hsize, = struct.unpack_from("<I", header, 12)
    poff, psize, chain = struct.unpack_from("<QQQ", header, 48)
    if poff + psize > size or chain > size:
        fail("%s is truncated (runtime payload incomplete)" % image)
    if psize > MAX_PAYLOAD or poff < HEADER_OFFSET + 4096 or poff + psize > chain:
        fail("%s is damaged (its header gives the runtime payload an impossible place)" % image)
    payload = os.pread(fd, psize, poff)
    if len(payload) != psize:
        fail("%s is truncated (runtime payload incomplete)" % image)
    digest = header[104:136] if hsize >= 136 else bytes(32)
    if digest != bytes(32):
        import hashlib

        if hashlib.sha256(payload).digest() != digest:
            fail("%s is damaged (its runtime payload does not match its digest)" % image)
    return payload


def extract(image, fd, header, dest):
    import shutil

    payload = payload_of(image, fd, header)
    tmp = "%s.%d" % (dest, os.getpid())
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        os.mkdir(tmp, 0o700)
        for name, mode, data in records(payload):
            path = os.path.join(tmp, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with open(out, "wb") as f:
                f.write(data)
            os.chmod(path, mode)
        os.chmod(tmp, 0o755)
    except ValueError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        fail("%s is damaged (runtime payload unreadable: %s)" % (image, e))
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        fail("Cannot extract the runtime of %s into %s: %s" % (image, tmp, e.strerror))
    try:
        os.rename(tmp, dest)
    except OSError:
        # Another instance finished first; its copy is identical.
        shutil.rmtree(tmp, ignore_errors=True)


def build_id(image, header):
    # It names a directory: letters, digits, "-" and "_" only (fim writes hex digits).
    raw = header[72:104].rstrip(b"\0")
    if not raw or raw.translate(None, ID_CHARS):
        fail("%s is damaged (its build id is not one of letters and digits)" % image)
    return raw.decode("ascii")


def boot():
    if sys.version_info < (3, 9):
        if os.environ.get("FIM_PYTHON") != "embedded":
            # Too old a host python3: the launcher again, for the image's own interpreter
            # (it says what is missing when the image carries none).
            import _signal

            os.environ["FIM_PYTHON"] = "embedded"
            _signal.signal(_signal.SIGPIPE, _signal.SIG_DFL)  # ignored by Python, inherited
            os.execv("/bin/sh", ["sh"] + sys.argv[1:])
        fail("Python 3.9 or newer is required (found %d.%d)" % sys.version_info[:2])
    image = os.path.realpath(sys.argv[1])
    try:
        # Opened once: the runtime reads the settings and the layer chain through it.
        fd = os.open(image, os.O_RDONLY | os.O_CLOEXEC)
        header = os.pread(fd, 4096, HEADER_OFFSET)
    except OSError as e:
        fail("Cannot read %s: %s" % (image, e.strerror))
    if len(header) < 104 or header[:8] != MAGIC:
        fail("%s is not a fim image (no image header)" % image)
    version = int.from_bytes(header[8:12], "little")
    if version != 1:
        fail("%s uses image format version %d; this runtime reads version 1" % (image, version))
    gdir = global_dir()
    app = gdir + "/app/" + build_id(image, header)
    runtime = app + "/runtime"
    try:
        if not os.path.isdir(runtime):
            os.makedirs(app, exist_ok=True)
            extract(image, fd, header, runtime)
    except OSError as e:
        fail("Cannot extract the runtime of %s into %s: %s" % (image, app, e.strerror))
    sys.path.insert(0, runtime)
    try:
        from fim.runtime.main import main
    except Exception as e:
        fail("The runtime in %s cannot be loaded (%s: %s); remove it and run again"
             % (runtime, type(e).__name__, e))
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
