"""The README, played as a newcomer plays it: every command of its code blocks, in order.

The slow test copies the tracked files, makes a fresh venv with the interpreter's bundled pip
(`--system-site-packages`: the heavy dependencies come from this interpreter's site-packages;
dsbs itself, its build backend and any missing extra are installed by pip, which needs the
package index), and runs the main-job line twice (install and train; the second run finds the
finished run and evaluates it again), the install part of the test line, and every other
command with a tiny step count. Commands that need what a test machine lacks run against local
stand-ins (the fake teacher server for an LLM endpoint) or are skipped with the reason listed
in `SKIPS`; commands on the released benchmarks need the released data (conftest) and are
skipped without it.

The fast tests (run by default) check that every command of the README is one this script
knows how to play, and run the main-job command itself once with a tiny step count.
"""
from __future__ import annotations

import os
import pathlib
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time

import pytest

import conftest
import test_install

REPO = pathlib.Path(__file__).resolve().parent.parent
README = REPO / "README.md"
MAIN_JOB = "pip install -e . && python -m dsbs.train --then_evaluate --model_dir=/tmp/dsbs_main"
# Appended to every `python -m dsbs.train` of the README: a few steps, a short validation.
TINY_TRAIN = ("--gin.TRAIN_STEPS=4", "--gin.EVAL_PERIOD=2", "--gin.SAVING_PERIOD=2",
              "--gin.TrainConfig.eval_max_examples=8", "--gin.TrainConfig.log_period=2")
TINY_EVALUATE = ("--max_examples=8",)
TINY_TEACHER = ("--limit=2",)
# Lines the programs must not print on a CPU run (the native libraries' start-up and warnings).
NOISE = ("oneDNN custom operations", "Could not find cuda drivers", "cuInit",
         "cache_dataset_ops", "absl::InitializeLog", "directory is read only", "Deprecat",
         "Traceback")
# Commands not run here, and why.
SKIPS = (
    (r"^python -m pytest\b", "the test suite: this test runs inside it (its install part runs)"),
    (r"^python -m t5x\.", "T5X is installed from GitHub, and its experiments read gs://t5-data; "
                          "the T5X path is tested by tests/test_t5x_*.py where T5X is installed"),
    (r"--model_dir=gs://", "needs a gs:// bucket and gs://t5-data (the T5 vocabulary and the "
                           "pretrained checkpoint); its offline error is tested in "
                           "tests/test_cli_errors.py"),
)
_RELEASED = ("cqa", "svamp", "anli1", "esnli")


def readme_commands() -> list[tuple[list[str], bool]]:
  """(argv, in the background) for each command of the README's code blocks, in order."""
  text = README.read_text()
  commands = []
  for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.M | re.S):
    for line in re.sub(r"\\\n\s*", " ", block).splitlines():
      argv = shlex.split(line, comments=True)
      while argv:
        stop = next((i for i, a in enumerate(argv) if a in ("&&", "&")), len(argv))
        commands.append((argv[:stop], stop < len(argv) and argv[stop] == "&"))
        argv = argv[stop + 1:]
  return commands


def classify(argv: list[str]) -> tuple[str, str | None]:
  """How this script plays a command: (kind, the reason when it is skipped)."""
  line = " ".join(argv)
  for pattern, reason in SKIPS:
    if re.search(pattern, line):
      return "skip", reason
  if argv[:2] == ["pip", "install"]:
    return "pip", None
  if argv[:2] == ["python", "-m"] and len(argv) > 2:
    module = argv[2]
    if module in ("dsbs.train", "dsbs.evaluate", "dsbs.data", "dsbs.report", "launch.sweep"):
      return module, None
    if module == "dsbs.teacher" and argv[3:4] in (["generate"], ["fake-server"]):
      return f"dsbs.teacher {argv[3]}", None
  return "unknown", None


def _needs_released_data(argv: list[str]) -> bool:
  line = " ".join(argv)
  return any(re.search(rf"(DATASET=\"?'{d}'|--dataset={d}\b)", line) for d in _RELEASED)


def test_every_readme_command_is_played_or_skipped_with_a_reason():
  commands = readme_commands()
  assert [" ".join(a) for a, _ in commands[:2]] == MAIN_JOB.split(" && ")  # the first block
  unknown = [" ".join(argv) for argv, _ in commands if classify(argv)[0] == "unknown"]
  assert not unknown, f"README commands this test cannot play (teach classify()): {unknown}"
  kinds = {classify(argv)[0] for argv, _ in commands}
  assert {"pip", "dsbs.train", "dsbs.evaluate", "dsbs.teacher generate",
          "dsbs.teacher fake-server", "launch.sweep", "dsbs.report"} <= kinds


def _clean_env(**extra: str) -> dict[str, str]:
  """This environment as a newcomer's shell has it: no test paths, no log-level settings."""
  env = {k: v for k, v in os.environ.items()
         if k not in ("PYTHONPATH", "TF_CPP_MIN_LOG_LEVEL", "XLA_FLAGS", "DSBS_DATA_DIR")}
  env.update(extra)
  return env


def _assert_quiet(what: str, stderr: str) -> None:
  noisy = [line for line in stderr.splitlines() if any(n in line for n in NOISE)]
  assert not noisy, f"{what} printed: {noisy[:5]}"


@pytest.mark.timeout(900)
def test_readme_main_job_command(tmp_path):
  """The main-job command as the README writes it (this interpreter, dsbs installed), tiny."""
  argv = MAIN_JOB.split(" && ")[1].replace("/tmp/dsbs_main", str(tmp_path / "main")).split()
  env = _clean_env(PYTHONPATH=str(REPO), DSBS_COMPILATION_CACHE_DIR=str(tmp_path / "jax"))
  r = subprocess.run([sys.executable, *argv[1:], *TINY_TRAIN], cwd=tmp_path, env=env,
                     capture_output=True, text=True, timeout=840)
  assert r.returncode == 0, r.stderr[-3000:]
  _assert_quiet("the main job", r.stderr)
  assert '"accuracy"' in r.stdout and (tmp_path / "main/eval/test_greedy/metrics.json").exists()


class _Player:
  """Plays README commands in a fresh venv on a copy of the checkout."""

  def __init__(self, tmp: pathlib.Path):
    self.tmp = tmp
    self.src = test_install._tracked_copy(tmp / "src")  # pylint: disable=protected-access
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                   check=True, capture_output=True, timeout=300)
    self.env = _clean_env(PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
                          DSBS_COMPILATION_CACHE_DIR=str(tmp / "jax"),
                          TFDS_DATA_DIR=str(tmp / "tfds"), VIRTUAL_ENV=str(venv))
    self.data_dir = conftest.released_data_dir()
    if self.data_dir:
      self.env["DSBS_DATA_DIR"] = self.data_dir
    self.port = _free_port()
    self.background: list[subprocess.Popen] = []
    self.played: list[str] = []
    self.skipped: list[tuple[str, str]] = []

  def _map(self, argv: list[str]) -> list[str]:
    """/tmp paths into the test's dir; the teacher's port 8000 to a free one."""
    out = []
    for a in argv:
      a = re.sub(r"(?<![\w/])/tmp/", f"{self.tmp}/tmp/", a)
      a = re.sub(r"(localhost|127\.0\.0\.1):8000", f"127.0.0.1:{self.port}", a)
      a = a.replace("--port=8000", f"--port={self.port}")
      out.append(a)
    return out

  def play(self, argv: list[str], background: bool = False) -> subprocess.CompletedProcess | None:
    kind, reason = classify(argv)
    line = " ".join(argv)
    if kind == "skip":
      self.skipped.append((line, reason))
      return None
    if _needs_released_data(argv) and not self.data_dir:
      self.skipped.append((line, "needs the released data (conftest.released_data_dir)"))
      return None
    run = self._map(argv)
    if kind == "dsbs.train":
      run += TINY_TRAIN
    elif kind == "dsbs.evaluate":
      run += TINY_EVALUATE
    elif kind == "dsbs.teacher generate":
      run += TINY_TEACHER
      if not self.background:  # the README's example endpoint: the fake server stands in
        self.play(["python", "-m", "dsbs.teacher", "fake-server", "--port=8000"], True)
    elif kind == "launch.sweep" and run[3:4] == ["run"]:
      run[4] = self._tiny_sweep(run[4])
    (self.tmp / "tmp").mkdir(exist_ok=True)
    if background:
      self.close()  # one fake server on the port: the README's own command replaces ours
      proc = subprocess.Popen(run, cwd=self.src, env=self.env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
      self.background.append(proc)
      _wait_for_port(self.port, proc)
      self.played.append(line)
      return None
    r = subprocess.run(run, cwd=self.src, env=self.env, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, f"{line}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    if kind in ("dsbs.train", "dsbs.evaluate"):
      _assert_quiet(line, r.stderr)
    self.played.append(line)
    return r

  def _tiny_sweep(self, definition: str) -> str:
    """The sweep definition with a few steps per cell, one seed and one data fraction."""
    text = (self.src / definition).read_text()
    tiny = text
    for pattern, repl in ((r"^TRAIN_STEPS = \d+", "TRAIN_STEPS = 4"),
                          (r"^EVAL_PERIOD = \d+", "EVAL_PERIOD = 2"),
                          (r"^SEEDS = .*$", "SEEDS = [0]"),
                          (r'"TRAIN_STEPS": \d+', '"TRAIN_STEPS": 4'),
                          (r'"EVAL_PERIOD": \d+', '"EVAL_PERIOD": 2'),
                          (r'"SAVING_PERIOD": \d+', '"SAVING_PERIOD": 2'),
                          (r'"seed": \[[^\]]*\]', '"seed": [0]'),
                          (r'"fraction": \[([^,\]]+)[^\]]*\]', r'"fraction": [\1]')):
      tiny = re.sub(pattern, repl, tiny, flags=re.M)
    assert "4" in tiny and tiny != text, f"{definition}: no step count to shrink"
    path = self.tmp / f"tiny_{pathlib.Path(definition).name}"
    path.write_text(tiny)
    return str(path)

  def close(self) -> None:
    for proc in self.background:
      proc.terminate()
      proc.wait(timeout=30)
    self.background = []


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, timeout_s: float = 120.0) -> None:
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    assert proc.poll() is None, "the background command exited"
    with socket.socket() as s:
      if s.connect_ex(("127.0.0.1", port)) == 0:
        return
    time.sleep(0.5)
  raise AssertionError(f"nothing listens on port {port} after {timeout_s:.0f} s")


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(),
                    reason="needs a git checkout to copy the tracked files")
def test_readme_as_a_newcomer(tmp_path):
  player = _Player(tmp_path)
  try:
    commands = readme_commands()
    main_job = commands[:2]
    for argv, background in main_job:  # the README's first line
      player.play(argv, background)
    again = [player.play(argv, background) for argv, background in main_job]  # and again
    assert '"complete": true' in again[1].stdout
    assert "holds the finished run" in again[1].stderr and '"test"' in again[1].stdout
    for argv, background in commands[2:]:
      player.play(argv, background)
  finally:
    player.close()
  report = "\n".join([f"played: {c}" for c in player.played]
                     + [f"skipped: {c}  ({why})" for c, why in player.skipped])
  print(report)
  assert len(player.played) >= 8, report
