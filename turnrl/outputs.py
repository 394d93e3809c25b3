"""Writing output files safely: a file is written under a temporary name in its folder, flushed to disk and
renamed, so an interrupted write never leaves a truncated file that looks complete; a missing folder is created;
an unwritable folder is found before any work."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def check_writable(folder: str | Path) -> Path:
    """Create `folder` if needed and check that a file can be written in it; raise OSError saying which."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".turnrl-write-check-"):
            pass
    except OSError as err:
        raise OSError(f"cannot write to {folder}: {err.strerror or err}; choose another output folder") from None
    return folder


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write `text` to `path` through a temporary file in the same folder, fsync'd, then renamed over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
