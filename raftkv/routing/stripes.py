"""The stripe hash: which of a striped segment's K groups owns a key (pure, fixed forever).

A striped segment ``[T, end)`` is served by K Raft groups; key ``k`` belongs to
stripe ``stripe_of(k, K)``.  The hash is part of the on-disk contract -- every
replica checks its keys with it -- so it must never change:

    x = k
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 mod 2**64
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB mod 2**64
    x =  x ^ (x >> 31)
    stripe = x mod K

(the SplitMix64 finaliser).  Nanosecond timestamps that differ in their low bits
only, or that are all multiples of 10**6, still spread evenly over the stripes.
"""

from __future__ import annotations

MAX_STRIPES = 16
_M64 = (1 << 64) - 1


def mix(key: int) -> int:
    """The 64-bit hash of ``key`` (the SplitMix64 finaliser)."""
    x = key
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def stripe_of(key: int, count: int) -> int:
    """The stripe (``0 <= i < count``) that owns ``key`` in a segment of ``count`` stripes."""
    return mix(key) % count
