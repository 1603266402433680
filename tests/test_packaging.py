"""Ready to publish: the wheel and sdist build without a warning from setuptools, pass ``twine check --strict``, and
hold the configs, ``py.typed`` and the LICENSE; the installed wheel finds its configs (not the source tree's).
``make dist`` does the same build in an isolated environment."""

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = (ROOT / "pyproject.toml").read_text()


def listed_packages() -> set[str]:
    block = re.search(r"^packages = \[(.*?)\]", PYPROJECT, re.S | re.M).group(1)
    return set(re.findall(r'"([\w.]+)"', block))


def test_every_package_and_config_folder_is_listed():
    """setuptools warns about a folder it finds but was not told of (every config folder used to be one)."""
    code = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "lth_wandb").rglob("__init__.py")}
    folders = [p for p in (ROOT / "conf").rglob("*") if p.is_dir() and p.name != "__pycache__"]
    conf = {".".join(("lth_wandb", *p.relative_to(ROOT).parts)) for p in folders}
    assert listed_packages() == code | conf | {"lth_wandb", "lth_wandb.conf"}


def test_wheel_and_sdist_build_without_warnings_and_pass_twine(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source)
    ignore = shutil.ignore_patterns("__pycache__")
    for name in ("lth_wandb", "conf"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    # PYTHONDONTWRITEBYTECODE only makes setuptools say it skips byte-compiling.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    build = [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(tmp_path / "dist"), str(source)]
    done = subprocess.run(build, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    warnings = [line for line in (done.stdout + done.stderr).splitlines() if "warn" in line.lower()]
    assert warnings == []
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    (sdist,) = (tmp_path / "dist").glob("*.tar.gz")
    twine = [str(Path(sys.executable).parent / "twine"), "check", "--strict", str(wheel), str(sdist)]
    checked = subprocess.run(twine, capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    names = set(zipfile.ZipFile(wheel).namelist())
    assert "lth_wandb/py.typed" in names and any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    yamls = {f"lth_wandb/conf/{p.relative_to(ROOT / 'conf')}" for p in (ROOT / "conf").rglob("*.yaml")}
    assert yamls <= names

    site = tmp_path / "site"  # the wheel installed alone, first on the path: its configs, not the source tree's
    install = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target", str(site)]
    subprocess.run([*install, str(wheel)], check=True, capture_output=True, timeout=300)
    probe = "import lth_wandb.conf as c; print(c.__file__)"
    where = subprocess.run([sys.executable, "-c", probe], env={**env, "PYTHONPATH": str(site)}, capture_output=True,
                           text=True, cwd=tmp_path, check=True).stdout  # fmt: skip
    assert where.startswith(str(site))
    job = [sys.executable, "-m", "lth_wandb.train", "--cfg", "job", "pruning=snip", "model=conv2"]
    composed = subprocess.run(job, env={**env, "PYTHONPATH": str(site)}, capture_output=True, text=True, cwd=tmp_path)
    assert composed.returncode == 0, composed.stderr[-3000:]
    assert "criterion: snip" in composed.stdout and "lth_wandb.models.Conv2" in composed.stdout
