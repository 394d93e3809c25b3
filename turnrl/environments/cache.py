"""Where environments keep data they build once (catalogues, search indexes, generated games).

`$TURNRL_CACHE/<name>`, else `~/.cache/turnrl/<name>`; the same root the model aliases use.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """The cache folder `parts` under the turnrl cache root, created if missing."""
    root = Path(os.environ.get("TURNRL_CACHE") or Path.home() / ".cache" / "turnrl")
    folder = root.joinpath(*parts)
    folder.mkdir(parents=True, exist_ok=True)
    return folder
