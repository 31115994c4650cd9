# -*- coding: utf-8 -*-
"""Writing files so that an interrupted write never leaves a truncated file under the real name."""

import contextlib
import os
from typing import IO, Callable, Sequence

__all__ = ["restored_on_error", "write_atomically"]


def write_atomically(path: str, write: Callable[[IO], object], mode: str = "w"):
    """
    Write ``path`` by calling ``write(f)`` on a temporary file in the same directory, flushed to
    disk and then renamed to ``path`` (an atomic replacement on POSIX file systems). If anything
    fails, the temporary file is removed and an existing ``path`` is left as it was.
    """
    temporary = f"{path}.incomplete"
    try:
        with open(temporary, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


@contextlib.contextmanager
def restored_on_error(paths: Sequence[str]):
    """Within: if an exception escapes, the files ``paths`` get back their earlier contents."""
    kept = {}
    for path in paths:
        if os.path.isfile(path):
            with open(path, "rb") as f:
                kept[path] = f.read()
    try:
        yield
    except BaseException:
        for path, data in kept.items():
            write_atomically(path, lambda f: f.write(data), "wb")
        raise
