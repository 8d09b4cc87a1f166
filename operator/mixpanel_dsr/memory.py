"""Giving memory back to the operating system after a burst of requests.

CPython frees objects into its allocators, which keep the pages: after 10,000 requests have
finished, the process would hold its peak until it restarts. glibc's ``malloc_trim`` hands the
free pages back (from the top of the heap and from inside it). Where there is no glibc (musl,
macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


_TRIM = _malloc_trim()


def give_back() -> bool:
    """Collect garbage, then return the allocator's free pages; False where not possible."""
    gc.collect()
    if _TRIM is None:
        return False
    _TRIM(0)
    return True
