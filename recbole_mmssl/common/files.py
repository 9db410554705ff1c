"""Writing the files that a run depends on later, so that an interruption never leaves half a file.

Each file is written beside its final path and moved over it with ``os.replace``, which is atomic
on one filesystem: a reader sees the old file or the new one, never a truncated mix.
"""

import os
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is removed."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        if partial.exists():
            partial.unlink()


def write_text(path, text):
    """``path``'s new content, written atomically (UTF-8, ``\\n`` line ends)."""
    with atomic_path(path) as partial, open(partial, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def save_npy(path, array):
    """A ``.npy`` file written atomically (``np.save`` would add ``.npy`` to the temporary name)."""
    import numpy as np

    with atomic_path(path) as partial, open(partial, "wb") as f:
        np.save(f, array)


def save_csv(path, frame):
    """A pandas DataFrame as CSV without its index, written atomically."""
    with atomic_path(path) as partial:
        frame.to_csv(partial, index=False)
