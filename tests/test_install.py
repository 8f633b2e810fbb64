"""Installs work with the interpreter's bundled pip and `wheel` present (pyproject.toml's
build-system), editable and not: `import dsbs.tasks` then finds the `tasks/` folder.

With no build-system declared, pip 23 with `wheel` importable falls back to the legacy
`setup.py develop`, which loses setup.py's `tasks/` -> `dsbs.tasks` mapping. The venvs see the
suite's own site-packages (`--system-site-packages`) for the dependencies; dsbs itself is
installed with `--no-deps` from a copy of the tracked files. Needs the package index for the
isolated build's setuptools and for `wheel`.
"""
from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(600)


def _tracked_copy(dest: pathlib.Path) -> pathlib.Path:
  files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
                         ).stdout.decode().split("\0")
  for f in filter(None, files):
    if (REPO / f).is_file():
      (dest / f).parent.mkdir(parents=True, exist_ok=True)
      shutil.copy2(REPO / f, dest / f)
  return dest


def _run(args, cwd):
  r = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=400)
  assert r.returncode == 0, f"{' '.join(map(str, args))}:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
  return r


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(),
                    reason="needs a git checkout to copy the tracked files")
@pytest.mark.parametrize("editable", [True, False], ids=["editable", "regular"])
def test_install_with_bundled_pip_and_wheel_keeps_dsbs_tasks(tmp_path, editable):
  src = _tracked_copy(tmp_path / "src")
  venv = tmp_path / "venv"
  _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], tmp_path)
  py = str(venv / "bin" / "python")
  _run([py, "-m", "pip", "install", "-q", "wheel"], tmp_path)
  _run([py, "-m", "pip", "install", "-q", "--no-deps", *(["-e"] if editable else []), str(src)],
       tmp_path)
  out = _run([py, "-c", "import dsbs, dsbs.tasks, dsbs.experiment; "
                        "print(dsbs.__file__); print(dsbs.tasks.__file__)"], tmp_path).stdout
  dsbs_file, tasks_file = out.strip().splitlines()[-2:]
  if editable:
    assert dsbs_file == str(src / "dsbs" / "__init__.py")
    assert tasks_file == str(src / "tasks" / "__init__.py")
  else:
    assert dsbs_file.startswith(str(venv)) and tasks_file.startswith(str(venv))
    assert tasks_file.endswith("dsbs/tasks/__init__.py")
