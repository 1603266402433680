"""Where dataset files are looked for, how they are downloaded, and the one error raised when they are not.

Search order: an explicit ``root`` (only that, so a typo is not silently replaced by other data); otherwise
``$LTH_DATA_DIR``, system folders such as the Debian package's, then the download cache. Each folder is tried
with the dataset's usual sub-folders first (e.g. ``<dir>/fashion_mnist``) and then as is.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
from collections.abc import Sequence
from pathlib import Path

ENV_VAR = "LTH_DATA_DIR"
TIMEOUT_S = 60


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are not on disk and could not be downloaded."""


class DatasetUnreadableError(FileNotFoundError):
    """A dataset file is in place but cannot be read: no permission, or a folder where the file should be.

    A ``FileNotFoundError`` so that callers handling missing data (``lth-train``: one line, exit 2) handle it too.
    """


class DownloadError(RuntimeError):
    """Every mirror failed, or a file's checksum did not match."""


def cache_dir(name: str) -> Path:
    """Default download folder: ``$XDG_CACHE_HOME/lth_wandb/<name>`` (``~/.cache`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lth_wandb" / name


def search_dirs(
    name: str, root: str | Path | None, subdirs: Sequence[str] = (), system_dirs: Sequence[str | Path] = ()
) -> list[Path]:
    """The folders to look in, in order (see the module docstring)."""
    if root is not None:
        bases = [Path(root).expanduser()]
    else:
        env = os.environ.get(ENV_VAR)
        bases = [Path(env).expanduser()] if env else []
        bases += [Path(d) for d in system_dirs] + [cache_dir(name)]
    return [folder for base in bases for folder in (*(base / sub for sub in subdirs), base)]


def locate(dirs: Sequence[Path], names: Sequence[str], suffixes: Sequence[str] = ("",)) -> dict[str, Path] | None:
    """The first folder holding every file in ``names`` (each with any of ``suffixes``), as name -> path.

    A file is preferred; failing that, anything else by that name (a folder, an unreadable entry) is returned so
    that reading it says what is wrong with it, rather than the dataset being reported missing.
    """
    for folder in dirs:
        found = {}
        for name in names:
            candidates = [folder / (name + s) for s in suffixes]
            path = next((c for c in candidates if c.is_file()), None)
            path = path or next((c for c in candidates if c.exists()), None)
            if path is None:
                break
            found[name] = path
        if len(found) == len(names):
            return found
    return None


def download(mirrors: Sequence[str], filename: str, dest_dir: Path, md5: str) -> Path:
    """Fetch ``filename`` from the first mirror that serves it with the expected MD5, into ``dest_dir``.

    The file is written under a temporary name and renamed only once its checksum matches, so an interrupted
    or corrupted download never looks like a complete file.

    Raises:
        DownloadError: with one line per mirror saying why it failed.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / filename
    failures = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + filename
        fd, tmp_name = tempfile.mkstemp(dir=dest_dir, prefix=f".{filename}.", suffix=".part")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
                shutil.copyfileobj(response, out)
            got = file_md5(tmp)
            if got != md5:
                raise DownloadError(f"MD5 {got} does not match the published {md5}")
            tmp.replace(target)
            return target
        except (OSError, DownloadError) as err:  # URLError and timeouts are OSErrors
            failures.append(f"{url}: {err}")
        finally:
            tmp.unlink(missing_ok=True)
    raise DownloadError("; ".join(failures))


def read_file(path: Path, what: str) -> bytes:
    """The bytes of a dataset file; ``what`` it should be (e.g. "an IDX file") goes into the error.

    Raises:
        DatasetUnreadableError: ``path`` is a folder, or cannot be read (permissions, I/O error).
    """
    try:
        return path.read_bytes()
    except IsADirectoryError as err:
        raise DatasetUnreadableError(
            f"{path} is a folder; expected {what} by that name. Hint: move the file into its place or point "
            "data.root at the folder that holds the data files."
        ) from err
    except OSError as err:
        raise DatasetUnreadableError(
            f"{path} cannot be read ({err.strerror or err}); expected {what} readable by this user. "
            f"Hint: check its owner and permissions (ls -l {path}); chmod a+r makes it readable."
        ) from err


def file_md5(path: Path) -> str:
    """Hex MD5 of a file, read in chunks. MD5 because that is the checksum the dataset authors publish."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def not_found(
    name: str,
    files: Sequence[str],
    dirs: Sequence[Path],
    download_dir: Path,
    debian: tuple[str, str] | None = None,
    reason: str | None = None,
) -> DatasetNotFoundError:
    """Build the single error that names every way to provide the data.

    Args:
        name: the dataset's registry name.
        files: the files that are needed.
        dirs: the folders that were searched.
        download_dir: where ``download=True`` would put the files.
        debian: ``(package, folder)`` when a Debian package provides the data.
        reason: why the download failed, when one was tried.
    """
    ways = [
        "point data.root=/path/to/folder (Python: root=...) at a folder holding them",
        f"set {ENV_VAR}=/path so that ${ENV_VAR}/{name} or ${ENV_VAR} itself holds them",
    ]
    if debian:
        ways.append(f"install the Debian package: apt-get install {debian[0]} (puts them in {debian[1]})")
    ways.append(f"when online, pass data.download=true (Python: download=True) to fetch them into {download_dir}")
    searched = ", ".join(str(d) for d in dirs) or f"nothing (no root, no ${ENV_VAR})"
    lines = [f"dataset {name!r}: could not find {list(files)}.", f"Searched: {searched}."]
    if reason:
        lines.append(f"Download failed: {reason}")
    lines += ["Provide the data in one of these ways:", *(f"  - {way}" for way in ways)]
    return DatasetNotFoundError("\n".join(lines))
