"""Counter-based random numbers: a value is a pure function of (key, stream, index).

The synthetic market must give the same path to every strategy run with the same seed
(common random numbers), whatever the order and the times at which it is looked at. So
its random numbers are not drawn from a generator in call order: each one is a stable
hash of where it is used. The hash is splitmix64's finalizer, fast in pure Python.
"""

from __future__ import annotations

import hashlib
import math

MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB
TWO_PI = 2.0 * math.pi
INV_2_53 = 1.0 / float(1 << 53)


def mix64(value: int) -> int:
    """splitmix64's finalizer: a well-mixed 64-bit integer from any integer."""
    z = (value + GOLDEN) & MASK64
    z = ((z ^ (z >> 30)) * MIX1) & MASK64
    z = ((z ^ (z >> 27)) * MIX2) & MASK64
    return z ^ (z >> 31)


def stable_key(*parts: object) -> int:
    """A 64-bit key from the text of parts, the same in every process (unlike hash())."""
    text = "\x1f".join([str(part) for part in parts]).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def stream_base(key: int, stream: int) -> int:
    """The base of one named stream of a key; add an index and mix64 to get its values."""
    return mix64(key ^ mix64(stream))


def draw(base: int, index: int) -> int:
    """The 64-bit value number index of the stream whose base is base."""
    return mix64((base + index) & MASK64)


def unit(value: int) -> float:
    """A uniform number in (0, 1) from the high 53 bits of a 64-bit value."""
    return ((value >> 11) + 0.5) * INV_2_53


def gauss(value: int) -> float:
    """A standard normal number from one 64-bit value (Box-Muller on two bit fields)."""
    u1 = ((value >> 11) + 0.5) * INV_2_53
    u2 = ((value & 0x7FF) + 0.5) / 2048.0
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(TWO_PI * u2)
