"""Rings given by name or as objects."""

from __future__ import annotations

from typing import Union

from ringshm.ring import Ring


def as_ring(ring: Union[Ring, str]) -> Ring:
    """`ring` itself, or the named ring opened.

    Raises:
        TypeError: neither a Ring nor a str.  RingNotFound and the other
            errors of Ring.open().
    """
    if isinstance(ring, Ring):
        return ring
    if isinstance(ring, str):
        return Ring.open(ring)
    raise TypeError(f"ring must be a Ring or a ring's name, not {type(ring).__name__}")
