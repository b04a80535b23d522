#!/usr/bin/env python3
"""Draws the web app's icons (web/static/icons/*.png) with nothing but the standard
library: a terminal prompt (a green chevron and a white cursor) on Paddock's dark
blue. Run it again after changing the design; the PNGs are committed."""

import math
import struct
import zlib
from pathlib import Path

BACKGROUND = (0x1D, 0x2B, 0x36)
CHEVRON = (0x7B, 0xD8, 0x8F)
CURSOR = (0xF4, 0xF6, 0xF8)
OUT = Path(__file__).resolve().parent.parent / "static" / "icons"


def png(path, size, pixels):
    rows = b"".join(b"\x00" + bytes(pixels[y * size * 4:(y + 1) * size * 4]) for y in range(size))
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b""))


def segment_distance(px, py, ax, ay, bx, by):
    dx, dy = bx - ax, by - ay
    t = max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy)))
    return math.hypot(px - (ax + t * dx), py - (ay + t * dy))


def inside_rounded(x, y, radius):
    cx = min(max(x, radius), 1 - radius)
    cy = min(max(y, radius), 1 - radius)
    return math.hypot(x - cx, y - cy) <= radius


def shade(x, y, scale):
    """The glyph's colour at (x, y) in 0..1, or None; `scale` shrinks it to the centre."""
    gx = 0.5 + (x - 0.5) / scale
    gy = 0.5 + (y - 0.5) / scale
    chevron = min(segment_distance(gx, gy, 0.25, 0.29, 0.49, 0.5),
                  segment_distance(gx, gy, 0.49, 0.5, 0.25, 0.71))
    if chevron <= 0.055:
        return CHEVRON
    if 0.55 <= gx <= 0.77 and 0.63 <= gy <= 0.72:
        return CURSOR
    return None


def draw(size, radius, scale, background=True, mono=False, samples=3):
    pixels = bytearray(size * size * 4)
    step = 1.0 / (size * samples)
    for py in range(size):
        for px in range(size):
            r = g = b = a = 0.0
            for sy in range(samples):
                for sx in range(samples):
                    x = (px * samples + sx + 0.5) * step
                    y = (py * samples + sy + 0.5) * step
                    colour = shade(x, y, scale)
                    if mono:
                        colour = (255, 255, 255) if colour else None
                    elif colour is None and background and inside_rounded(x, y, radius):
                        colour = BACKGROUND
                    if colour:
                        r += colour[0]; g += colour[1]; b += colour[2]; a += 1
            n = samples * samples
            offset = (py * size + px) * 4
            if a:
                pixels[offset:offset + 4] = bytes((round(r / a), round(g / a), round(b / a), round(255 * a / n)))
    return pixels


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for name, size, radius, scale, extra in [
        ("icon-192.png", 192, 0.22, 1.0, {}),
        ("icon-512.png", 512, 0.22, 1.0, {}),
        ("maskable-512.png", 512, 0.0, 0.78, {}),
        ("apple-touch-icon.png", 180, 0.0, 0.9, {}),
        ("badge-72.png", 72, 0.0, 1.15, {"background": False, "mono": True}),
    ]:
        png(OUT / name, size, draw(size, radius, scale, **extra))
        print(name, (OUT / name).stat().st_size, "bytes")


if __name__ == "__main__":
    main()
