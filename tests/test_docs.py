"""The docs (docs/**/*.md and README.md): every fenced code block runs in a test or says why not (docs/development.md,
"The docs"), and the site builds strictly.

The line before each block is one of ``<!-- tested: tests/test_x.py::test_name[, ...] -->`` (those tests exist),
``<!-- run -->`` (a self-contained Python block, run here as written) or ``<!-- not run: <reason> -->``.
"""

import ast
import os
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
FENCE = re.compile(r"^(\s*)(```+|~~~+)(.*)$")
MARKER = re.compile(r"^<!-- (tested: (?P<tests>.+?)|(?P<run>run)|not run: (?P<reason>.+?)) -->$")
REFERENCE = re.compile(r"^(tests/[\w/]+\.py)::(\w+(?:::\w+)?)$")


def blocks(page: Path) -> list[tuple[int, str, str, str]]:
    """Every fenced block of ``page``: (line number, the line before it, its info string, its code)."""
    lines = page.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence, info = opening.groups()
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip().startswith(fence)), None)
        assert end is not None, f"{page.relative_to(ROOT)}:{i + 1}: a code block that never closes"
        code = "\n".join(line[len(indent):] for line in lines[i + 1 : end])
        found.append((i + 1, lines[i - 1].strip() if i else "", info.strip(), code + "\n"))
        i = end + 1
    return found


def where(page: Path, line: int) -> str:
    return f"{page.relative_to(ROOT)}:{line}"


ALL_BLOCKS = [(page, *block) for page in PAGES for block in blocks(page)]


@cache
def functions_in(path: Path) -> set[str]:
    """Names of the test functions in a file: ``test_x`` at the top, ``TestY::test_x`` in classes."""
    functions = (ast.FunctionDef, ast.AsyncFunctionDef)
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, functions):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names |= {f"{node.name}::{f.name}" for f in node.body if isinstance(f, functions)}
    return {n for n in names if n.rsplit("::", 1)[-1].startswith("test")}


def test_the_pages_have_code_blocks():
    """The parser finds the blocks (a regression in it would make every check below pass on nothing)."""
    assert ROOT / "docs" / "index.md" in PAGES and ROOT / "docs" / "callback.md" in PAGES
    assert len(ALL_BLOCKS) >= 30
    assert sum(1 for *_, marker, _, _ in ALL_BLOCKS if marker == "<!-- run -->") >= 2


def test_every_code_block_is_tested_run_or_says_why_not():
    unmarked = [
        f"{where(page, line)}: the line before the block is {before!r}"
        for page, line, before, _, _ in ALL_BLOCKS
        if not MARKER.match(before)
    ]
    assert unmarked == [], (
        "Put one of <!-- tested: tests/test_x.py::test_name -->, <!-- run --> or <!-- not run: <reason> --> on the "
        "line before each code block (docs/development.md, 'The docs'):\n" + "\n".join(unmarked)
    )


def test_every_tested_reference_names_an_existing_test():
    wrong = []
    for page, line, before, _, _ in ALL_BLOCKS:
        marker = MARKER.match(before)
        if not marker or not marker["tests"]:
            continue
        for reference in (r.strip() for r in marker["tests"].split(",")):
            parsed = REFERENCE.match(reference)
            if not parsed:
                wrong.append(f"{where(page, line)}: {reference!r} is not tests/<file>.py::<test function>")
            elif not (ROOT / parsed[1]).is_file():
                wrong.append(f"{where(page, line)}: {parsed[1]} does not exist")
            elif parsed[2] not in functions_in(ROOT / parsed[1]):
                wrong.append(f"{where(page, line)}: {parsed[1]} has no test function {parsed[2]}")
    assert wrong == []


def test_run_blocks_are_python_and_reasons_are_given():
    wrong = []
    for page, line, before, info, _ in ALL_BLOCKS:
        marker = MARKER.match(before)
        if marker and marker["run"] and info != "python":
            wrong.append(f"{where(page, line)}: a run block must be python, not {info or 'untyped'!r}")
        if marker and marker["reason"] is not None and len(marker["reason"].strip()) < 8:
            wrong.append(f"{where(page, line)}: say why it is not run ({marker['reason']!r})")
    assert wrong == []


def test_the_readmes_links_and_images_are_there():
    """README.md is outside the site, so mkdocs does not check it: its relative links (into docs/) must exist."""
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    relative = [t for t in targets if "://" not in t]
    assert len(relative) >= 10
    assert [t for t in relative if not (ROOT / t).exists()] == []


# Identical blocks (README's callback example is also docs/callback.md's) run once.
RUN_BLOCKS: dict[str, str] = {}
for _page, _line, _before, _, _code in ALL_BLOCKS:
    if _before == "<!-- run -->":
        RUN_BLOCKS.setdefault(_code, where(_page, _line))


@pytest.mark.slow
@pytest.mark.parametrize("code", list(RUN_BLOCKS), ids=list(RUN_BLOCKS.values()))
def test_run_blocks_run_as_written(code, tmp_path):
    """Each ``run`` block in a fresh process, in an empty folder, with W&B offline and its files kept there."""
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(tmp_path),
        "WANDB_DATA_DIR": str(tmp_path / "wandb-data"),
        "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"),
        "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"),
        "WANDB_SILENT": "true",
        "OMP_NUM_THREADS": "1",  # the suite shares 2 cores
    }
    (tmp_path / "block.py").write_text(code)
    done = subprocess.run([sys.executable, "block.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, f"{RUN_BLOCKS[code]}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


MKDOCS = shutil.which("mkdocs", path=str(Path(sys.executable).parent))


@pytest.mark.slow
@pytest.mark.skipif(MKDOCS is None, reason="mkdocs is not installed (make docs installs the docs extra and builds)")
def test_the_site_builds_strictly(tmp_path):
    """What `make docs` runs: a broken link, an anchor that is not there, a page missing from the navigation or an API
    name that does not resolve fails the build."""
    build = [MKDOCS, "build", "--strict", "--quiet", "--site-dir", str(tmp_path / "site")]
    done = subprocess.run(build, cwd=ROOT, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (tmp_path / "site" / "api" / "callback" / "index.html").read_text().count("PruningSettings") > 1
