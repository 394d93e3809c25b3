"""Every shell block of the README and docs/ runs: each ```bash block (``sh``, ``shell`` too) is run with bash -e
from a scratch folder that sees the repository's configs/, examples/, bench/ and docs/, the blocks of one page in
order in one folder (a later block may use what an earlier one wrote). A block that cannot run here carries an
HTML comment on the line before it saying why, one of:

    <!-- docs-test: gpu (why) -->    needs a GPU
    <!-- docs-test: long (why) -->   runs on CPU but takes too long for the suite (the why says how long)
    <!-- docs-test: skip (why) -->   interactive, or needs something a test cannot have (a reader's own file)

and is reported as skipped with that reason."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
KINDS = ("gpu", "long", "skip")
BLOCK = re.compile(r"(?:^<!--\s*docs-test:\s*(?P<kind>\w+)\s*\((?P<why>.*?)\)\s*-->[ \t]*\n)?"
                   r"^```(?P<lang>bash|sh|shell)[ \t]*\n(?P<body>.*?)^```", re.DOTALL | re.MULTILINE)
LINKED = ("configs", "examples", "bench", "docs", "tests")
TIMEOUT = 300


def shell_blocks() -> list:
    blocks = []
    for page in PAGES:
        text = page.read_text()
        for match in BLOCK.finditer(text):
            line = text.count("\n", 0, match.start("body"))
            blocks.append(pytest.param(page, match["kind"], match["why"], match["body"],
                                       id=f"{page.relative_to(ROOT)}:{line}"))
    return blocks


BLOCKS = shell_blocks()


@pytest.fixture(scope="session")
def page_folders(tmp_path_factory):
    """One scratch folder per page, shared by its blocks in order."""
    folders: dict = {}

    def folder(page: Path) -> Path:
        if page not in folders:
            path = tmp_path_factory.mktemp(page.stem.replace(".", "_"))
            for name in LINKED:
                (path / name).symlink_to(ROOT / name)
            folders[page] = path
        return folders[page]

    return folder


def test_the_docs_have_shell_blocks_and_every_mark_says_why():
    assert len(BLOCKS) >= 5
    for block in BLOCKS:
        _, kind, why, _ = block.values
        if kind is not None:
            assert kind in KINDS, f"{block.id}: docs-test kind {kind!r} is not one of {', '.join(KINDS)}"
            assert why.strip(), f"{block.id}: say why the block is marked {kind}"


def test_a_mark_without_a_block_under_it_is_caught():
    """A mark separated from its block by text would silently let the block run (or a typo skip nothing)."""
    for page in PAGES:
        text = page.read_text()
        for match in re.finditer(r"^<!--\s*docs-test:.*-->[ \t]*\n(?P<next>.*)$", text, re.MULTILINE):
            assert re.match(r"```(bash|sh|shell)\b", match["next"]), \
                f"{page.relative_to(ROOT)}: a docs-test mark must be the line right before a ```bash block"


@pytest.mark.slow
@pytest.mark.parametrize("page, kind, why, body", BLOCKS)
def test_shell_block_runs(page, kind, why, body, page_folders):
    if kind is not None:
        pytest.skip(f"{kind}: {why}")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "OMP_NUM_THREADS": "2", "TERM": "dumb"}
    result = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", body], check=False, cwd=page_folders(page), env=env,
                            capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, f"exit {result.returncode}\n--- stdout\n{result.stdout[-3000:]}\n" \
                                   f"--- stderr\n{result.stderr[-3000:]}"
