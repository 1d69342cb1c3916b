"""Helpers shared by several test modules (pytest puts tests/ on the path; this file holds no tests)."""


def voc_palette() -> list[int]:
    """PASCAL VOC's colour map (class c's colour from the bits of c), as in the devkit: 768 RGB values."""
    palette = []
    for c in range(256):
        r = g = b = 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette
