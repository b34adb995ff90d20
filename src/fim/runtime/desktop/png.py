"""PNG with the standard library only: check, decode, scale into a square, encode.

The runtime cannot count on a host image tool (ImageMagick, librsvg, GdkPixbuf),
so the hicolor sizes are made here. Every PNG form the format defines is read:
greyscale, RGB, palette, greyscale + alpha and RGBA, bit depths 1 to 16, tRNS
transparency, Adam7 interlacing; colour management chunks are ignored, as icon
themes do. Scaling is an area average (a box filter over the source area each
target pixel covers, so it works up and down) on premultiplied alpha, so the
colour of fully transparent pixels never bleeds into the edges. Large reductions
first halve the picture as many times as they can with whole-image integer
arithmetic (one 2x2 average is a few big-integer operations, not a Python loop per
pixel), then finish with the exact area average. The output is 8-bit RGBA.

`check` is cheap (chunks, CRCs, header, the decompressed length and the filter
bytes): it runs at `fim-desktop setup`; `decode` and `squares` run once per
change of the icon, in the background integration.
"""

from __future__ import annotations

import struct
import zlib

from fim.runtime.record import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, Iterator, List, Optional, Sequence, Tuple

SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Larger sources are refused: decoding is Python code, a 2048x2048 RGBA picture
# takes seconds, and no icon theme has a size above 512.
MAX_SIDE = 2048
# Allowed bit depths of each colour type.
_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
# Adam7 passes: x start, y start, x step, y step.
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4),
          (1, 0, 2, 2), (0, 1, 1, 2))


class PngError(ValueError):
    """What is wrong with the bytes, in words for an `E::` line."""


@dataclass(frozen=True)
class Info:
    width: int
    height: int
    depth: int
    color: int
    interlaced: bool
    palette: bytes  # PLTE, 3 bytes an entry
    transparency: bytes  # tRNS
    pixels: bytes  # the decompressed IDAT stream: filter byte + scanline, per row


@dataclass(frozen=True)
class Picture:
    width: int
    height: int
    rgba: bytes  # width * height * 4, rows top down


def _chunks(data: bytes) -> Iterator[Tuple[bytes, bytes]]:
    if not data.startswith(SIGNATURE):
        raise PngError("no PNG signature")
    pos = len(SIGNATURE)
    while pos < len(data):
        if pos + 12 > len(data):
            raise PngError("truncated chunk")
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        end = pos + 8 + length
        if end + 4 > len(data):
            raise PngError(f"truncated {kind.decode('latin-1')!r} chunk")
        body = data[pos + 8:end]
        (crc,) = struct.unpack(">I", data[end:end + 4])
        if zlib.crc32(kind + body) != crc:
            raise PngError(f"CRC mismatch in the {kind.decode('latin-1')!r} chunk")
        yield kind, body
        pos = end + 4
        if kind == b"IEND":
            return
    raise PngError("no IEND chunk")


def _row_bytes(width: int, depth: int, color: int) -> int:
    return (width * depth * _CHANNELS[color] + 7) // 8


def _passes(width: int, height: int, interlaced: bool) -> List[Tuple[int, int, int, int, int, int]]:
    """(x0, y0, dx, dy, pass width, pass height) of each non-empty pass."""
    if not interlaced:
        return [(0, 0, 1, 1, width, height)]
    found = []
    for x0, y0, dx, dy in _ADAM7:
        w = (width - x0 + dx - 1) // dx if width > x0 else 0
        h = (height - y0 + dy - 1) // dy if height > y0 else 0
        if w and h:
            found.append((x0, y0, dx, dy, w, h))
    return found


def check(data: bytes) -> Info:
    """Parse and check a PNG file's structure without decoding its pixels; PngError
    says what is wrong."""
    header: Optional[Tuple[int, ...]] = None
    palette = transparency = b""
    idat: List[bytes] = []
    last = b""
    for kind, body in _chunks(data):
        if header is None and kind != b"IHDR":
            raise PngError("the first chunk is not IHDR")
        if kind == b"IHDR":
            if header is not None or len(body) != 13:
                raise PngError("bad IHDR chunk")
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"PLTE":
            palette = body
        elif kind == b"tRNS":
            transparency = body
        elif kind == b"IDAT":
            if idat and last != b"IDAT":
                raise PngError("IDAT chunks are not consecutive")
            idat.append(body)
        last = kind
    assert header is not None  # _chunks yields at least IEND, and IHDR comes first
    width, height, depth, color, method, filtering, interlace = header
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
        raise PngError(f"{width}x{height} pixels (at most {MAX_SIDE} a side)")
    if color not in _DEPTHS or depth not in _DEPTHS[color]:
        raise PngError(f"colour type {color} with bit depth {depth} does not exist")
    if method != 0 or filtering != 0 or interlace not in (0, 1):
        raise PngError("unknown compression, filter or interlace method")
    if color == 3 and (not palette or len(palette) % 3 or len(palette) // 3 > 1 << depth):
        raise PngError("a palette image without a valid PLTE chunk")
    if not idat:
        raise PngError("no image data (IDAT)")
    passes = _passes(width, height, bool(interlace))
    expected = sum(h * (1 + _row_bytes(w, depth, color)) for _, _, _, _, w, h in passes)
    inflater = zlib.decompressobj()
    try:
        pixels = inflater.decompress(b"".join(idat), expected + 1)
    except zlib.error as e:
        raise PngError(f"damaged image data ({e})") from None
    if len(pixels) != expected or not inflater.eof:
        raise PngError("the image data does not match the picture's size")
    pos = 0
    for _, _, _, _, w, h in passes:
        stride = 1 + _row_bytes(w, depth, color)
        for _ in range(h):
            if pixels[pos] > 4:
                raise PngError(f"unknown row filter {pixels[pos]}")
            pos += stride
    return Info(width, height, depth, color, bool(interlace), palette, transparency, pixels)


def _unfilter(pixels: bytes, pos: int, rows: int, stride: int, bpp: int) -> bytearray:
    """The scanlines of one pass, filters undone (filter byte dropped)."""
    out = bytearray()
    prior = bytearray(stride - 1)
    for _ in range(rows):
        kind = pixels[pos]
        row = bytearray(pixels[pos + 1:pos + stride])
        pos += stride
        n = len(row)
        if kind == 1:
            for i in range(bpp, n):
                row[i] = (row[i] + row[i - bpp]) & 255
        elif kind == 2:
            row = bytearray((a + b) & 255 for a, b in zip(row, prior))
        elif kind == 3:
            for i in range(n):
                left = row[i - bpp] if i >= bpp else 0
                row[i] = (row[i] + ((left + prior[i]) >> 1)) & 255
        elif kind == 4:
            for i in range(n):
                if i >= bpp:
                    a, c = row[i - bpp], prior[i - bpp]
                else:
                    a = c = 0
                b = prior[i]
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                if pa <= pb and pa <= pc:
                    pred = a
                elif pb <= pc:
                    pred = b
                else:
                    pred = c
                row[i] = (row[i] + pred) & 255
        out += row
        prior = row
    return out


def _samples(rows: bytearray, width: int, height: int, depth: int, channels: int) -> bytes:
    """One byte per sample: 16-bit samples keep their high byte, 1/2/4-bit ones are
    unpacked (row padding dropped); palette indices stay indices."""
    if depth == 8:
        return bytes(rows)
    if depth == 16:
        return bytes(rows[0::2])
    per_row = (width * channels * depth + 7) // 8
    mask = (1 << depth) - 1
    out = bytearray()
    for y in range(height):
        row = rows[y * per_row:(y + 1) * per_row]
        count = width * channels
        for i in range(count):
            bit = i * depth
            out.append((row[bit >> 3] >> (8 - depth - (bit & 7))) & mask)
    return bytes(out)


def _to_rgba(info: Info, samples: bytes, count: int) -> bytes:
    """`count` pixels of `info`'s colour type as RGBA bytes."""
    color, depth, trns = info.color, info.depth, info.transparency
    if color == 6:
        return samples
    if color == 3:
        palette = info.palette
        entries = len(palette) // 3
        table = [palette[i * 3:i * 3 + 3] + bytes([trns[i] if i < len(trns) else 255])
                 for i in range(entries)]
        table += [b"\0\0\0\xff"] * (256 - entries)  # out-of-range indices: opaque black
        return b"".join(table[i] for i in samples)
    out = bytearray(count * 4)
    if color == 4:
        gray, alpha = samples[0::2], samples[1::2]
        for c in range(3):
            out[c::4] = gray
        out[3::4] = alpha
        return bytes(out)
    if color == 0:
        scale = 255 // ((1 << depth) - 1) if depth < 8 else 1
        gray = bytes(v * scale for v in samples) if scale != 1 else samples
        for c in range(3):
            out[c::4] = gray
        out[3::4] = b"\xff" * count
        if len(trns) == 2:
            key = int.from_bytes(trns, "big")
            key = key >> 8 if depth == 16 else key * scale
            for i, v in enumerate(gray):
                if v == key:
                    out[i * 4 + 3] = 0
        return bytes(out)
    # color == 2: RGB
    for c in range(3):
        out[c::4] = samples[c::3]
    out[3::4] = b"\xff" * count
    if len(trns) == 6:
        rgb_key = bytes(trns[0::2]) if depth == 16 else bytes(trns[1::2])
        for i in range(count):
            if samples[i * 3:i * 3 + 3] == rgb_key:
                out[i * 4 + 3] = 0
    return bytes(out)


def decode(data: bytes) -> Picture:
    """The picture of a PNG file, as 8-bit RGBA; PngError when it is not one."""
    info = check(data)
    channels = _CHANNELS[info.color]
    bpp = max(1, info.depth * channels // 8)
    pos = 0
    if not info.interlaced:
        stride = 1 + _row_bytes(info.width, info.depth, info.color)
        rows = _unfilter(info.pixels, 0, info.height, stride, bpp)
        samples = _samples(rows, info.width, info.height, info.depth, channels)
        count = info.width * info.height
        return Picture(info.width, info.height, _to_rgba(info, samples, count))
    canvas = bytearray(info.width * info.height * 4)
    for x0, y0, dx, dy, w, h in _passes(info.width, info.height, True):
        stride = 1 + _row_bytes(w, info.depth, info.color)
        rows = _unfilter(info.pixels, pos, h, stride, bpp)
        pos += h * stride
        rgba = _to_rgba(info, _samples(rows, w, h, info.depth, channels), w * h)
        for j in range(h):
            y = y0 + j * dy
            for i in range(w):
                at = (y * info.width + x0 + i * dx) * 4
                canvas[at:at + 4] = rgba[(j * w + i) * 4:(j * w + i) * 4 + 4]
    return Picture(info.width, info.height, bytes(canvas))


# -- scaling ----------------------------------------------------------------------


def _premultiplied(rgba: bytes) -> bytes:
    if rgba[3::4].count(255) == len(rgba) // 4:
        return rgba  # opaque: nothing to multiply
    out = bytearray(rgba)
    for i in range(3, len(out), 4):
        a = out[i]
        if a == 255:
            continue
        out[i - 3] = (out[i - 3] * a + 127) // 255
        out[i - 2] = (out[i - 2] * a + 127) // 255
        out[i - 1] = (out[i - 1] * a + 127) // 255
    return bytes(out)


def _straight(rgba: bytearray) -> bytes:
    for i in range(3, len(rgba), 4):
        a = rgba[i]
        if a == 255:
            continue
        if a == 0:
            rgba[i - 3] = rgba[i - 2] = rgba[i - 1] = 0
            continue
        half = a // 2
        rgba[i - 3] = min(255, (rgba[i - 3] * 255 + half) // a)
        rgba[i - 2] = min(255, (rgba[i - 2] * 255 + half) // a)
        rgba[i - 1] = min(255, (rgba[i - 1] * 255 + half) // a)
    return bytes(rgba)


def _mean(a: bytes, b: bytes, up: bool) -> bytes:
    """Bytewise average of two equal-length byte strings on whole big integers,
    rounded up ((a | b) - ((a ^ b) >> 1)) or down ((a & b) + ((a ^ b) >> 1)), the
    shift kept inside each byte. The two passes of a 2x2 average round opposite ways,
    so repeated halving does not drift."""
    n = len(a)
    x, y = int.from_bytes(a, "little"), int.from_bytes(b, "little")
    half = ((x ^ y) >> 1) & int.from_bytes(b"\x7f" * n, "little")
    return ((x | y) - half if up else (x & y) + half).to_bytes(n, "little")


def _halved(pic: Picture) -> Picture:
    """A 2x2 box average: half the width and height (an odd last row or column is
    dropped, one pixel of a picture that is still more than twice the target)."""
    w, h = pic.width // 2, pic.height // 2
    src, stride = pic.rgba, pic.width * 4
    even = b"".join(src[y * stride:y * stride + w * 8] for y in range(0, h * 2, 2))
    odd = b"".join(src[y * stride:y * stride + w * 8] for y in range(1, h * 2, 2))
    rows = memoryview(_mean(even, odd, True)).cast("I")  # w*2 pixels a row, h rows
    # Pixels, not bytes, pair up along a row: every other 4-byte pixel.
    return Picture(w, h, _mean(rows[0::2].tobytes(), rows[1::2].tobytes(), False))


def _weights(source: int, target: int) -> List[List[Tuple[int, float]]]:
    """For each target index, the source indices its interval covers and the share of
    each (an area average)."""
    scale = source / target
    table = []
    for o in range(target):
        lo, hi = o * scale, (o + 1) * scale
        taps = []
        i = int(lo)
        while i < hi and i < source:
            share = min(hi, i + 1) - max(lo, i)
            if share > 1e-9:
                taps.append((i, share / scale))
            i += 1
        table.append(taps)
    return table


def _resampled(pic: Picture, width: int, height: int) -> bytearray:
    """Area average of a premultiplied picture to width x height, one axis at a time."""
    cols = _weights(pic.width, width)
    src = pic.rgba
    stride = pic.width * 4
    wide: List[List[float]] = []  # per source row: width * 4 channel sums
    for y in range(pic.height):
        base = y * stride
        row: List[float] = []
        for taps in cols:
            r = g = b = a = 0.0
            for i, share in taps:
                at = base + i * 4
                r += src[at] * share
                g += src[at + 1] * share
                b += src[at + 2] * share
                a += src[at + 3] * share
            row += (r, g, b, a)
        wide.append(row)
    out = bytearray(width * height * 4)
    at = 0
    for taps in _weights(pic.height, height):
        for x in range(width * 4):
            total = 0.0
            for j, share in taps:
                total += wide[j][x] * share
            out[at] = min(255, int(total + 0.5))
            at += 1
    return out


def squares(pic: Picture, sizes: Sequence[int]) -> Dict[int, Picture]:
    """The picture scaled to fit each size x size square (aspect kept), centred on
    transparency. One premultiplication and one chain of halvings serve every size."""
    longest = max(pic.width, pic.height)
    levels = [Picture(pic.width, pic.height, _premultiplied(pic.rgba))]
    found: Dict[int, Picture] = {}
    for size in sorted(sizes, reverse=True):
        width = max(1, round(pic.width * size / longest))
        height = max(1, round(pic.height * size / longest))
        while levels[-1].width >= 2 * width and levels[-1].height >= 2 * height:
            levels.append(_halved(levels[-1]))
        # The smallest level still covering the target; the source itself to enlarge.
        covering = [lv for lv in levels if lv.width >= width and lv.height >= height]
        work = covering[-1] if covering else levels[0]
        if (work.width, work.height) == (width, height):
            body = bytearray(work.rgba)
        else:
            body = _resampled(work, width, height)
        found[size] = _centred(_straight(body), width, height, size)
    return found


def _centred(body: bytes, width: int, height: int, size: int) -> Picture:
    if (width, height) == (size, size):
        return Picture(size, size, body)
    canvas = bytearray(size * size * 4)
    left, top = (size - width) // 2, (size - height) // 2
    for y in range(height):
        at = ((top + y) * size + left) * 4
        canvas[at:at + width * 4] = body[y * width * 4:(y + 1) * width * 4]
    return Picture(size, size, bytes(canvas))


def encode(pic: Picture) -> bytes:
    """An 8-bit RGBA PNG, no interlacing, every row unfiltered."""
    stride = pic.width * 4
    raw = b"".join(b"\0" + pic.rgba[y * stride:(y + 1) * stride] for y in range(pic.height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + \
            struct.pack(">I", zlib.crc32(kind + body))

    head = struct.pack(">IIBBBBB", pic.width, pic.height, 8, 6, 0, 0, 0)
    return SIGNATURE + chunk(b"IHDR", head) + chunk(b"IDAT", zlib.compress(raw, 9)) + \
        chunk(b"IEND", b"")
