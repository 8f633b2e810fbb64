"""launch/tpu/ against a fake gcloud (tests/fake_gcloud.py, first on PATH): dry runs, ownership,
preemption recovery, quoting, the worker script (run with bash in per-worker sandboxes), cleanup;
and the sweep runner's tpu target (launch/tpu_target.py) on it, the run dirs in the fake's GCS.
Nothing reaches the network or a real gcloud."""
from __future__ import annotations

import io
import json
import os
import pathlib
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from dsbs import report
from launch import tpu  # pylint: disable=wrong-import-position

GIN = "gin_configs/exp.gin"
HOSTILE = ("'a b=c $(touch {pwned}) `touch {pwned}` ; touch {pwned} \"q\" \\'s'", "1=2 3")

# The workers' python3. The trainers (dsbs.train, t5x.train, t5x.eval) sleep and exit as
# trainer.json says for their worker; on success worker 0 writes what the real one leaves in the
# gs:// run dir (the fake's GCS): test metrics; checkpoints and validation scores; test scores.
PYTHON3 = f"""#!{sys.executable}
import ast, json, os, pathlib, sys, time
root, worker, args = pathlib.Path(os.environ["FAKE_ROOT"]), os.environ["FAKE_WORKER"], sys.argv[1:]
with open(root / "python3.jsonl", "a") as f:
  f.write(json.dumps({{"worker": worker, "argv": args, "cwd": os.getcwd(), "pid": os.getpid(),
                      "data_dir": os.environ.get("DSBS_DATA_DIR")}}) + "\\n")
if args[:1] != ["-m"] or args[1] not in ("dsbs.train", "t5x.train", "t5x.eval"):
  sys.exit(0)
spec = json.loads((root / "trainer.json").read_text()).get(worker, {{}})
print(f"fake trainer on worker {{worker}}", flush=True)
time.sleep(spec.get("sleep", 0))
if spec.get("rc", 0) or worker != "0":
  sys.exit(spec.get("rc", 0))
opt = dict(a.split("=", 1) for a in args if a.startswith("--") and "=" in a)
gcs = lambda url: root / "gcs" / url[len("gs://"):]
gin_str = ast.literal_eval
def jsonl(path, rows):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("".join(json.dumps(r) + "\\n" for r in rows))
if args[1] == "dsbs.train" and "--then_evaluate" in args:
  jsonl(gcs(opt["--model_dir"]) / {report.TEST_METRICS!r}, [{{"metrics": {{"accuracy": 5.0}}}}])
elif args[1] == "t5x.train" and "--gin.MODEL_DIR" in opt:
  run = gcs(gin_str(opt["--gin.MODEL_DIR"]))
  for step in (10, 20, 30):
    (run / f"checkpoint_{{step}}").mkdir(parents=True, exist_ok=True)
  jsonl(run / "inference_eval" / "t-metrics.jsonl",
        [{{"step": s, "accuracy": a}} for s, a in ((10, 40.0), (20, 60.0), (30, 55.0))])
elif args[1] == "t5x.eval" and "--gin.CHECKPOINT_PATH" in opt:
  step = int(gin_str(opt["--gin.CHECKPOINT_PATH"]).rsplit("_", 1)[1])
  jsonl(gcs(gin_str(opt["--gin.EVAL_OUTPUT_DIR"])) / "inference_eval" / "t-metrics.jsonl",
        [{{"step": step, "accuracy": 52.0}}])
"""
TOOLS = {
    "git": '#!/bin/bash\necho "git $*" >> "$FAKE_ROOT/tools.log"\n'
           '[ "$1" = clone ] && mkdir -p "${@: -1}/.git"\nexit 0\n',
    "curl": '#!/bin/bash\ncase "$*" in *agent-worker-number*) printf %s "$FAKE_WORKER";; '
            '*) exit 22;; esac\n',
    "sudo": "#!/bin/bash\nexit 1\n",
}


def _complete_rows(path: pathlib.Path) -> list:
  """The JSON lines of a log another process may be appending to (a partial last line is
  skipped: it is complete on the next read)."""
  if not path.exists():
    return []
  lines = path.read_text().split("\n")
  return [json.loads(l) for l in lines[:-1] if l.strip()]


class Fake:
  """The fake gcloud's files: state script, recorded calls, fake GCS."""

  def __init__(self, root: pathlib.Path):
    self.root = root
    for d in ("bin", "wbin", "gcs", "workers"):
      (root / d).mkdir(parents=True)
    gcloud = root / "bin" / "gcloud"
    gcloud.write_text(f"#!{sys.executable}\n" + (REPO / "tests" / "fake_gcloud.py").read_text())
    for name, text in {"python3": PYTHON3, **TOOLS}.items():
      (root / "wbin" / name).write_text(text)
    for p in [gcloud, *(root / "wbin").iterdir()]:
      p.chmod(0o755)
    self.state({})
    self.trainer({})

  def state(self, st: dict) -> None:
    tmp = self.root / "state.json.tmp"
    tmp.write_text(json.dumps(st))
    os.replace(tmp, self.root / "state.json")

  def read_state(self) -> dict:
    return json.loads((self.root / "state.json").read_text())  # replaced atomically by the fake

  def trainer(self, spec: dict) -> None:
    (self.root / "trainer.json").write_text(json.dumps({str(k): v for k, v in spec.items()}))

  def calls(self) -> list[list[str]]:
    return _complete_rows(self.root / "calls.jsonl")

  def verbs(self) -> list[str]:
    """Each call as 'KIND VERB' (tpu-vm create, storage cp, ...)."""
    return [" ".join(c[2:4]) if c[0] == "compute" else " ".join(c[:2]) for c in self.calls()]

  def trainer_runs(self, suffix: str = ".train") -> list[dict]:
    """The workers' python3 runs of `-m <module ending in suffix>`."""
    rows = _complete_rows(self.root / "python3.jsonl")
    return [r for r in rows if r["argv"][:1] == ["-m"] and r["argv"][1].endswith(suffix)]

  def gcs(self, url: str) -> pathlib.Path:
    return self.root / "gcs" / url[len("gs://"):]


@pytest.fixture
def fake(tmp_path, monkeypatch):
  f = Fake(tmp_path / "fake")
  monkeypatch.setenv("PATH", f"{f.root / 'bin'}:{os.environ['PATH']}")
  return f


def _git(repo, *args):
  env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
         "GIT_COMMITTER_EMAIL": "t@t"}
  return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                        text=True, env=env).stdout


def _checkout(r: pathlib.Path, gin_files) -> pathlib.Path:
  """A small committed checkout with the worker script and `gin_files`."""
  (r / "launch").mkdir(parents=True)
  (r / "gin_configs").mkdir()
  shutil.copy(REPO / "launch" / "worker.sh", r / "launch" / "worker.sh")
  for f in gin_files:
    (r / f).write_text("TRAIN_STEPS = 10\n")
  _git(r, "init", "-q")
  _git(r, "add", ".")
  _git(r, "commit", "-qm", "init")
  return r


@pytest.fixture
def repo(tmp_path):
  return _checkout(tmp_path / "repo", [GIN])


def _job(repo, **kw) -> tpu.TpuJob:
  base = dict(name="dsbs-t", zone="us-central2-b", accelerator="v4-32", model_dir="gs://b/run",
              gin_files=(GIN,), overrides=(("MIXTURE_OR_TASK_NAME", "'anli1_dsbs'"),),
              owner="alice", repo=str(repo), poll_s=0.1, log_sync_s=0.2, backoff_s=0,
              run_timeout_s=60, create_timeout_s=10)
  base.update(kw)
  return tpu.TpuJob(**base)


def _ours(job, state="READY", **extra) -> dict:
  return {"states": [state], "labels": job.all_labels(), "accel": job.accelerator, **extra}


def _remote_argv(command: str) -> list[str]:
  """The trainer argv inside a run command: what the remote shell hands to worker.sh after --."""
  argv = shlex.split(command)
  return argv[argv.index("--") + 1:]


# ---- the job ---------------------------------------------------------------------------------

@pytest.mark.parametrize("accelerator,runtime", [
    ("v4-32", "tpu-ubuntu2204-base"), ("v5litepod-64", "v2-alpha-tpuv5-lite"),
    ("v5p-128", "v2-alpha-tpuv5"), ("v6e-64", "v2-alpha-tpuv6e")])
def test_runtime_version_follows_the_generation(repo, accelerator, runtime):
  assert _job(repo, accelerator=accelerator).resolved_runtime() == runtime
  assert _job(repo, accelerator=accelerator, runtime_version="x").resolved_runtime() == "x"


@pytest.mark.parametrize("kw,field,text", [
    ({"accelerator": "v5e-64"}, "accelerator", "v5litepod-64"),
    ({"accelerator": "v9-8"}, "accelerator", "--runtime_version"),
    ({"name": "Bad_Name"}, "name", "lowercase"),
    ({"model_dir": "/local/dir"}, "model_dir", "gs://"),
    ({"model_dir": "gs://b/it's"}, "model_dir", "gs://"),
    ({"overrides": (("BAD KEY", "1"),)}, "gin", "gin binding key"),
    ({"overrides": (("MODEL_DIR", "'gs://x'"),)}, "gin", "--model_dir"),
    ({"env": (("OPENAI_API_KEY", "s"),)}, "env", "secret"),
    ({"labels": (("team", "ML Research"),)}, "label", "lowercase"),
    ({"labels": (("dsbs-run", "x"),)}, "label", "set by the launcher"),
    ({"provisioning": "preemptible"}, "provisioning", "spot"),
    ({"engine": "pax"}, "engine", "t5x"),
])
def test_bad_jobs_name_the_field(repo, kw, field, text):
  with pytest.raises(tpu.JobError) as e:
    _job(repo, **kw)
  assert e.value.field == field and text in str(e.value)


def test_overrides_are_opaque_gin_bindings(repo):
  job = _job(repo, engine="dsbs", overrides=(("DATASET", "'svamp'"), ("LABEL_RATE", "0.25"),
                                               ("dsbs.tasks.mixture.fraction", "12.5")))
  assert tpu.trainer_argv(job) == [
      "python3", "-m", "dsbs.train", f"--gin_file={GIN}", "--model_dir=gs://b/run",
      "--gin.DATASET='svamp'", "--gin.LABEL_RATE=0.25", "--gin.dsbs.tasks.mixture.fraction=12.5"]
  assert tpu.trainer_argv(_job(repo))[4:6] == ["--gin.MODEL_DIR='gs://b/run'",
                                               "--gin.MIXTURE_OR_TASK_NAME='anli1_dsbs'"]


# ---- dry runs --------------------------------------------------------------------------------

def _script_commands(text: str) -> list[str]:
  """The command lines of a dry run's script (heredoc bodies and comments left out)."""
  lines, out, skip = text.splitlines(), [], None
  for line in lines:
    if skip:
      skip = None if line == skip else skip
      continue
    if line.startswith("#"):
      continue
    if "<<'" in line:
      line, skip = line.split(" <<'")
      skip = skip.rstrip("'")
    out.append(line)
  return out


def test_dry_run_tpu_vm_prints_the_whole_job(repo, fake):
  out = io.StringIO()
  g = tpu.DryRun(out=out, log=io.StringIO())
  assert tpu.babysit(_job(repo, provisioning="reserved"), g) == 0
  assert fake.calls() == []  # nothing ran
  commands = _script_commands(out.getvalue())
  argvs = [shlex.split(c.split(" | ", 1)[1] if c.startswith("git ") else c) for c in commands]
  assert argvs == g.calls  # every gcloud command is printed, exactly
  kinds = [" ".join(a[1:5]) if a[1] == "compute" else " ".join(a[1:3]) for a in argvs]
  assert kinds == ["compute tpus tpu-vm describe", "compute tpus tpu-vm create",
                   "compute tpus tpu-vm describe", "storage cp", "compute tpus tpu-vm ssh",
                   "storage cp", "compute tpus tpu-vm ssh", "compute tpus tpu-vm delete"]
  create = argvs[1]
  assert "--accelerator-type=v4-32" in create and "--version=tpu-ubuntu2204-base" in create
  assert "--reserved" in create and "--zone=us-central2-b" in create
  assert "--labels=dsbs-owner=alice,dsbs-run=dsbs-t,dsbs-sweep=none" in create
  commit = _git(repo, "rev-parse", "HEAD").strip()
  assert commands[3] == (f"git -C {repo} archive --format=tar.gz {commit} | gcloud storage cp - "
                         f"gs://b/run/code/dsbs-{commit}.tar.gz")
  assert all("--worker=all" in a for a in argvs if "ssh" in a)
  record = out.getvalue().split("<<'DSBS_EOF'\n")[1].split("\nDSBS_EOF")[0]
  assert json.loads(record)["commit"] == commit
  run_cmd = argvs[6][-1][len("--command="):]
  assert _remote_argv(run_cmd) == tpu.trainer_argv(_job(repo))
  assert argvs[7][-1] == "--quiet"


def test_dry_run_queued_spot_resource(repo, fake):
  out = io.StringIO()
  g = tpu.DryRun(out=out, log=io.StringIO())
  job = _job(repo, accelerator="v5litepod-64", zone="us-west4-a", queued=True,
             provisioning="spot", sweep="rate-pct", create_timeout_s=7200)
  assert tpu.create(job, g) is True
  assert tpu.teardown(job, g, owned=True) is True
  assert fake.calls() == []
  qr_create = next(c for c in g.calls if c[4] == "create")
  assert qr_create[:6] == ["gcloud", "compute", "tpus", "queued-resources", "create", "dsbs-t"]
  for flag in ("--node-id=dsbs-t", "--accelerator-type=v5litepod-64", "--spot",
               "--runtime-version=v2-alpha-tpuv5-lite", "--valid-until-duration=7200s",
               "--labels=dsbs-owner=alice,dsbs-run=dsbs-t,dsbs-sweep=rate-pct"):
    assert flag in qr_create
  verbs = [c[4] for c in g.calls]
  assert verbs == ["describe", "create", "describe", "delete"]  # the wait polls describe
  assert g.calls[-1][-2:] == ["--force", "--quiet"]
  assert "until ACTIVE" in out.getvalue()


def test_cli_dry_run_runs_nothing_and_leaves_nothing(tmp_path, fake):
  tmp = tmp_path / "tmp"
  tmp.mkdir()
  proc = subprocess.run(
      [sys.executable, "-m", "launch.tpu", "babysit", "--dry_run", "--allow_dirty",
       "--name=dsbs-cli", "--zone=us-west4-a", "--accelerator=v5litepod-64", "--spot", "--queued",
       "--model_dir=gs://b/cli", "--gin_file=gin_configs/anli_770m.gin", "--data_dir=gs://b/d",
       "--gin=MIXTURE_OR_TASK_NAME='anli1_dsbs'", "--gin.RANDOM_SEED=1"],
      cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
      env={**os.environ, "TMPDIR": str(tmp)})
  assert proc.returncode == 0, proc.stderr
  assert fake.calls() == [] and list(tmp.iterdir()) == []
  assert "queued-resources create dsbs-cli" in proc.stdout
  assert "--env=DSBS_DATA_DIR=gs://b/d" in proc.stdout
  assert "--gin.MIXTURE_OR_TASK_NAME=" in proc.stdout.split(" --gin.RANDOM_SEED=1")[0]
  bad = subprocess.run([sys.executable, "-m", "launch.tpu", "create", "--dry_run", "--name=x",
                        "--zone=z", "--accelerator=v5e-8"], cwd=REPO, capture_output=True,
                       text=True, timeout=60, check=False)
  assert bad.returncode == 2 and "--accelerator" in bad.stderr and "Traceback" not in bad.stderr


# ---- create: state first, ownership ----------------------------------------------------------

def test_ready_vm_of_this_job_is_reused_and_never_deleted(repo, fake):
  job = _job(repo)
  fake.state({"tpu-vm": {"dsbs-t": _ours(job)}})
  assert tpu.babysit(job, tpu.Gcloud(log=io.StringIO())) == 0
  verbs = fake.verbs()
  assert "tpu-vm create" not in verbs and "tpu-vm delete" not in verbs
  assert verbs.count("tpu-vm ssh") == 2  # setup, run
  assert fake.read_state()["tpu-vm"]["dsbs-t"]["states"] == ["READY"]


def test_a_vm_this_job_did_not_create_is_neither_used_nor_deleted(repo, fake):
  job = _job(repo)
  fake.state({"tpu-vm": {"dsbs-t": {"states": ["READY"], "labels": {"team": "x"}}}})
  log = io.StringIO()
  assert tpu.babysit(job, tpu.Gcloud(log=log)) == tpu.EXIT_ERROR
  assert fake.verbs() == ["tpu-vm describe"]
  assert "not created by this launcher" in log.getvalue() and "--own" in log.getvalue()
  # The old script's fault: the name exists when create runs (a parallel launch).
  fake.state({"race_create": {"states": ["READY"], "labels": {"dsbs-run": "dsbs-t",
                                                              "dsbs-owner": "bob"}}})
  assert tpu.babysit(job, tpu.Gcloud(log=io.StringIO())) == tpu.EXIT_ERROR
  assert "tpu-vm delete" not in fake.verbs() and "dsbs-t" in fake.read_state()["tpu-vm"]
  # Told to own it: used, then deleted.
  fake.state({"tpu-vm": {"dsbs-t": {"states": ["READY"], "labels": {}}}})
  assert tpu.babysit(_job(repo, own=True), tpu.Gcloud(log=io.StringIO())) == 0
  assert "dsbs-t" not in fake.read_state()["tpu-vm"]


def test_dead_resources_are_replaced_and_queued_ones_waited_for(repo, fake):
  job = _job(repo, queued=True)
  fake.state({"queued-resources": {"dsbs-t": _ours(job, "FAILED")},
              "on_create": {"queued-resources": ["ACCEPTED", "WAITING_FOR_RESOURCES",
                                                 "PROVISIONING", "ACTIVE"]}})
  log = io.StringIO()
  assert tpu.create(job, tpu.Gcloud(log=log)) is True
  assert fake.verbs() == ["queued-resources describe", "queued-resources delete",
                          "queued-resources describe", "queued-resources create"] + \
      ["queued-resources describe"] * 4
  assert "--force" in fake.calls()[1]
  for state in ("ACCEPTED", "WAITING_FOR_RESOURCES", "PROVISIONING"):
    assert f"waiting for dsbs-t: {state}" in log.getvalue()
  # Stuck in the queue: a timeout, and babysit deletes what it asked for.
  fake.state({"on_create": {"queued-resources": ["WAITING_FOR_RESOURCES"]}})
  log = io.StringIO()
  assert tpu.babysit(_job(repo, queued=True, create_timeout_s=0.3), tpu.Gcloud(log=log)) == 1
  assert "still WAITING_FOR_RESOURCES" in log.getvalue()
  assert fake.verbs()[-1] == "queued-resources delete"
  assert fake.read_state()["queued-resources"] == {}


# ---- setup -----------------------------------------------------------------------------------

def test_setup_ships_the_commit_and_skips_when_the_marker_matches(repo, fake):
  job = _job(repo)
  fake.state({"tpu-vm": {"dsbs-t": _ours(job)}, "workers": 2})
  (repo / "untracked.txt").write_text("never shipped")
  code = tpu.setup(job, tpu.Gcloud(log=io.StringIO()))
  assert code.commit == code.id and not code.dirty
  with tarfile.open(fake.gcs(f"gs://b/run/code/dsbs-{code.id}.tar.gz")) as tar:
    assert sorted(tar.getnames()) == sorted(["gin_configs", GIN, "launch", "launch/worker.sh"])
  want = job.versions(code.id)
  for w in ("w0", "w1"):
    home = fake.root / "workers" / "dsbs-t" / w
    assert (home / ".dsbs_setup" / "versions").read_text().strip() == want
    assert (home / "dsbs" / GIN).exists() and not (home / "dsbs.new").exists()
  tools = (fake.root / "tools.log").read_text()
  assert tools.count("git clone") == 2
  assert tools.count(f"checkout --quiet --detach {tpu.T5X_REVISION}") == 2
  pips = lambda: [r["argv"] for r in map(json.loads, (fake.root / "python3.jsonl").read_text()
                                         .splitlines()) if r["argv"][1:3] == ["pip", "install"]]
  assert [p for p in pips() if f"jax[tpu]=={tpu.JAX_VERSION}" in p] and len(pips()) == 6
  tpu.setup(job, tpu.Gcloud(log=io.StringIO()))  # up to date: nothing installed again
  assert len(pips()) == 6 and (fake.root / "tools.log").read_text() == tools
  tpu.setup(_job(repo, jax_version="0.10.3"), tpu.Gcloud(log=io.StringIO()))  # only jax moves
  assert len(pips()) == 8 and pips()[-1][-3] == "jax[tpu]==0.10.3"
  assert (fake.root / "tools.log").read_text() == tools


def test_a_dirty_tree_is_refused_unless_allowed(repo, fake):
  (repo / GIN).write_text("TRAIN_STEPS = 20\n")
  (repo / "notes.txt").write_text("untracked")
  job = _job(repo)
  fake.state({"tpu-vm": {"dsbs-t": _ours(job)}})
  with pytest.raises(tpu.JobError) as e:
    tpu.setup(job, tpu.Gcloud(log=io.StringIO()))
  assert e.value.field == "allow_dirty" and GIN in str(e.value)
  assert fake.calls() == []
  code = tpu.setup(_job(repo, allow_dirty=True), tpu.Gcloud(log=io.StringIO()))
  assert code.dirty and code.id.startswith(code.commit[:12] + "-")
  assert _git(repo, "status", "--porcelain", "--untracked-files=no").strip() == f"M {GIN}"
  with tarfile.open(fake.gcs(f"gs://b/run/code/dsbs-{code.id}.tar.gz")) as tar:
    assert tar.extractfile(GIN).read() == b"TRAIN_STEPS = 20\n"
    assert "notes.txt" not in tar.getnames()
  (repo / "gin_configs" / "new.gin").write_text("")
  with pytest.raises(tpu.JobError, match="not committed"):
    tpu.setup(_job(repo, allow_dirty=True, gin_files=("gin_configs/new.gin",)), tpu.Gcloud())


# ---- run -------------------------------------------------------------------------------------

def test_run_is_one_command_on_every_worker_with_logs_and_a_record(repo, fake):
  job = _job(repo, env=(("DSBS_DATA_DIR", "gs://b/data"),), meta=(("cell", {"seed": 1}),))
  fake.state({"tpu-vm": {"dsbs-t": _ours(job)}, "workers": 3})
  g = tpu.Gcloud(log=io.StringIO())
  assert tpu.run(job, g, attempt="a1") == 3  # not set up: every worker refuses
  code = tpu.setup(job, g)
  assert tpu.run(job, g, attempt="a2") == 0
  ssh = [c for c in fake.calls() if c[2:4] == ["tpu-vm", "ssh"]]
  assert all("--worker=all" in c for c in ssh) and len(ssh) == 3
  runs = fake.trainer_runs()
  assert sorted(r["worker"] for r in runs) == ["0", "1", "2"]
  assert all(r["argv"] == tpu.trainer_argv(job)[1:] for r in runs)
  homes = {str(fake.root / "workers" / "dsbs-t" / f"w{w}" / "dsbs") for w in range(3)}
  assert {r["cwd"] for r in runs} == homes
  assert {r["data_dir"] for r in runs} == {"gs://b/data"}
  for w in range(3):
    log = fake.gcs(f"gs://b/run/logs/a2/worker-{w}.log").read_text()
    assert f"fake trainer on worker {w}" in log
  record = json.loads(fake.gcs("gs://b/run/launch_record.json").read_text())
  assert record["commit"] == code.commit and record["dirty"] is False
  assert record["overrides"] == [["MIXTURE_OR_TASK_NAME", "'anli1_dsbs'"]]
  assert (record["accelerator"], record["zone"], record["engine"], record["runtime_version"]) == \
      ("v4-32", "us-central2-b", "t5x", "tpu-ubuntu2204-base")
  assert record["versions"] == {"dsbs": code.id, "jax": tpu.JAX_VERSION, "t5x": tpu.T5X_REVISION}
  assert record["attempt"] == "a2" and record["meta"] == {"cell": {"seed": 1}}


def test_hostile_overrides_reach_the_trainer_intact(repo, fake, tmp_path):
  pwned = tmp_path / "pwned"
  value = HOSTILE[0].format(pwned=pwned)
  job = _job(repo, overrides=(("MIXTURE_OR_TASK_NAME", value), ("scope/fn.param", HOSTILE[1])),
             gin_files=(GIN,), env=(("NOTE", f"$(touch {pwned})"),))
  fake.state({"tpu-vm": {"dsbs-t": _ours(job)}, "workers": 2})
  g = tpu.Gcloud(log=io.StringIO())
  tpu.setup(job, g)
  assert tpu.run(job, g) == 0
  assert not pwned.exists()
  expected = tpu.trainer_argv(job)
  assert f"--gin.MIXTURE_OR_TASK_NAME={value}" in expected
  runs = fake.trainer_runs()
  assert len(runs) == 2 and all(r["argv"] == expected[1:] for r in runs)
  command = next(c for c in fake.calls() if c[2:4] == ["tpu-vm", "ssh"] and "dsbs-run" in c[-1])[-1]
  assert _remote_argv(command[len("--command="):]) == expected


def test_a_command_runs_instead_of_the_trainer_quoted_the_same_way(repo, fake, tmp_path, capsys):
  pwned = tmp_path / "pwned"
  command = ("python3", "-m", "t5x.eval", f"--gin_file={GIN}",
             f"--gin.EVAL_OUTPUT_DIR={HOSTILE[0].format(pwned=pwned)}", HOSTILE[1])
  job = _job(repo, gin_files=(), overrides=(), command=command, record="launch_record.x.json")
  fake.state({"tpu-vm": {"dsbs-t": _ours(job)}, "workers": 2})
  g = tpu.Gcloud(log=io.StringIO())
  tpu.setup(job, g)
  assert tpu.run(job, g) == 0
  assert not pwned.exists()
  runs = fake.trainer_runs(".eval")
  assert len(runs) == 2 and all(r["argv"] == list(command[1:]) for r in runs)
  record = json.loads(fake.gcs("gs://b/run/launch_record.x.json").read_text())
  assert record["trainer_argv"] == list(command) and not fake.gcs(
      "gs://b/run/launch_record.json").exists()
  with pytest.raises(tpu.JobError, match="replaces --gin_file and --gin"):
    _job(repo, command=command)
  # The CLI: a command after --, its own --gin.KEY=VALUE flags left as they are.
  flags = ["--name=dsbs-t", "--zone=z", "--accelerator=v4-8", "--model_dir=gs://b/run",
           "--allow_dirty", "--gin.IGNORED=1"]  # allow_dirty: this checkout, as it is now
  sigterm = signal.getsignal(signal.SIGTERM)
  try:
    assert tpu.main(["run", "--dry_run", *flags[:5], "--", *command]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines()
                if l.startswith("gcloud compute tpus tpu-vm ssh"))
    assert _remote_argv(shlex.split(line)[-1][len("--command="):]) == list(command)
    assert tpu.main(["run", "--dry_run", *flags, "--", *command]) == tpu.EXIT_USAGE
    assert "replaces --gin_file and --gin" in capsys.readouterr().err
  finally:
    signal.signal(signal.SIGTERM, sigterm)


def test_one_failing_worker_stops_the_others(repo, fake):
  job = _job(repo)
  fake.state({"tpu-vm": {"dsbs-t": _ours(job)}, "workers": 2})
  fake.trainer({0: {"sleep": 60}, 1: {"rc": 3}})
  g = tpu.Gcloud(log=io.StringIO())
  tpu.setup(job, g)
  start = time.monotonic()
  assert tpu.run(job, g, attempt="a") != 0
  assert time.monotonic() - start < 30  # worker 0 did not wait out its 60 s
  assert fake.gcs("gs://b/run/logs/a/FAILED-worker-1").read_text().strip() == "3"
  assert "another worker failed" in fake.gcs("gs://b/run/logs/a/worker-0.log").read_text()


def test_worker_frees_the_tpu_from_stale_processes(tmp_path):
  device, lock = tmp_path / "accel0", tmp_path / "libtpu_lockfile"
  device.write_text("")
  lock.write_text("")
  holder = subprocess.Popen(["bash", "-c", f"exec 3<{device}; exec sleep 60"])
  try:
    deadline = time.monotonic() + 10
    while not os.path.exists(f"/proc/{holder.pid}/fd/3"):
      assert time.monotonic() < deadline
      time.sleep(0.05)
    script = (f"source {REPO / 'launch' / 'worker.sh'}; TPU_DEVICES=('{tmp_path}/accel*'); "
              f"LIBTPU_LOCKFILE={lock}; WORKER=0; free_tpu")
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert holder.wait(timeout=10) == -signal.SIGTERM
    assert f"stopping stale processes holding the TPU: {holder.pid}" in proc.stderr
    assert not lock.exists()
  finally:
    holder.kill()


# ---- babysit ---------------------------------------------------------------------------------

def test_babysit_recreates_and_resumes_after_preemption(repo, fake):
  job = _job(repo, max_retries=2)
  fake.state({"ssh_runs": [{"preempt": True}, {"hang_preempted": True}, {}]})
  log = io.StringIO()
  assert tpu.babysit(job, tpu.Gcloud(log=log)) == 0
  verbs = [v.split()[1] for v in fake.verbs() if v.startswith("tpu-vm")]
  acts = [v for v in verbs if v != "describe"]  # describes: state checks and the run's watch
  attempt = ["create", "ssh", "ssh"]  # create, setup, run
  assert acts == attempt + ["delete"] + attempt + ["delete"] + attempt + ["delete"]
  assert verbs[:7] == ["describe", "create", "describe", "ssh", "ssh", "describe", "describe"]
  assert "dsbs-t" not in fake.read_state()["tpu-vm"]
  record = json.loads(fake.gcs("gs://b/run/launch_record.json").read_text())
  assert [p["reason"] for p in record["preemptions"]] == ["node dsbs-t is PREEMPTED"] * 2
  runs = {r["argv"][-2] for r in fake.trainer_runs()}
  assert runs == {"--gin.MODEL_DIR='gs://b/run'"}  # same model dir: resumes its checkpoint
  assert "recreating in 0 s (retry 2 of 2)" in log.getvalue()


def test_babysit_gives_up_after_max_retries_and_tears_down(repo, fake):
  fake.state({"ssh_runs": [{"preempt": True}] * 2})
  log = io.StringIO()
  job = _job(repo, max_retries=1, queued=True)
  assert tpu.babysit(job, tpu.Gcloud(log=log)) == tpu.EXIT_PREEMPTED
  assert "node dsbs-t is PREEMPTED; out of retries (1)" in log.getvalue()
  verbs = fake.verbs()
  assert verbs.count("queued-resources create") == 2  # the SUSPENDED one deleted, recreated
  assert verbs.count("queued-resources delete") == 2 and "tpu-vm delete" not in verbs
  assert fake.read_state()["queued-resources"] == {} and fake.read_state()["tpu-vm"] == {}


def test_babysit_does_not_retry_a_failing_trainer(repo, fake):
  fake.trainer({0: {"rc": 7}})
  assert tpu.babysit(_job(repo), tpu.Gcloud(log=io.StringIO())) != 0
  assert fake.verbs().count("tpu-vm create") == 1 and fake.read_state()["tpu-vm"] == {}


DRIVER = """
import sys
from launch import tpu
job = tpu.TpuJob(name="dsbs-t", zone="z", accelerator="v4-32", model_dir="gs://b/run",
                 gin_files=("gin_configs/exp.gin",), owner="alice", repo=sys.argv[1],
                 poll_s=0.1, log_sync_s=0.2, run_timeout_s=900)
sys.exit(tpu.babysit(job, tpu.Gcloud()))
"""
# The trainers outlive any wait of the test and the run's timeout outlives them: only the Ctrl-C
# ends the run, however slowly a loaded machine starts the fake workers.


@pytest.mark.parametrize("exists", [False, True])
def test_ctrl_c_tears_down_only_what_babysit_created(repo, fake, exists):
  job = _job(repo)
  fake.state({"tpu-vm": {"dsbs-t": _ours(job)}, "workers": 2} if exists else {"workers": 2})
  fake.trainer({0: {"sleep": 600}, 1: {"sleep": 600}})
  proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(repo)], cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  deadline = time.monotonic() + 60
  while len(fake.trainer_runs()) < 2:
    assert time.monotonic() < deadline and proc.poll() is None, proc.stdout.read()
    time.sleep(0.1)
  proc.send_signal(signal.SIGINT)
  out, _ = proc.communicate(timeout=60)
  assert proc.returncode == tpu.EXIT_INTERRUPTED, out
  deleted = "tpu-vm delete" in fake.verbs()
  assert deleted is (not exists), out
  assert ("dsbs-t" in fake.read_state()["tpu-vm"]) is exists


# ---- teardown, cleanup -----------------------------------------------------------------------

def test_teardown_subcommand_deletes_only_labelled_or_owned(repo, fake):
  job = _job(repo)
  g = tpu.Gcloud(log=io.StringIO())
  fake.state({"tpu-vm": {"dsbs-t": {"states": ["READY"], "labels": {}}}})
  assert tpu.teardown(job, g) is False and "dsbs-t" in fake.read_state()["tpu-vm"]
  assert tpu.teardown(_job(repo, keep=True, own=True), g) is False
  assert tpu.teardown(_job(repo, own=True), g) is True and fake.read_state()["tpu-vm"] == {}
  fake.state({"tpu-vm": {"dsbs-t": _ours(job)}})
  assert tpu.teardown(job, g) is True and fake.read_state()["tpu-vm"] == {}
  assert tpu.teardown(job, g) is False  # nothing left: no error
  fake.state({"tpu-vm": {"dsbs-t": _ours(job, qr="dsbs-t")},
              "queued-resources": {"dsbs-t": _ours(job, "ACTIVE")}})
  assert tpu.teardown(job, g) is True  # the node came from a queued resource: delete that
  assert fake.calls()[-1][2:4] == ["queued-resources", "delete"] and "--force" in fake.calls()[-1]
  assert fake.read_state()["tpu-vm"] == {} and fake.read_state()["queued-resources"] == {}


def test_cleanup_deletes_labelled_leftovers_after_confirmation(repo, fake):
  mine = {"dsbs-run": "a", "dsbs-sweep": "s1", "dsbs-owner": "alice"}
  fake.state({
      "tpu-vm": {"a": {"states": ["READY"], "labels": mine},
                 "b": {"states": ["PREEMPTED"], "labels": {**mine, "dsbs-run": "b"}},
                 "c": {"states": ["READY"], "labels": {**mine, "dsbs-sweep": "s2"}},
                 "d": {"states": ["READY"], "labels": {**mine, "dsbs-owner": "bob"}},
                 "e": {"states": ["READY"], "labels": {"team": "x"}},
                 "q": {"states": ["READY"], "labels": {**mine, "dsbs-run": "q"}, "qr": "q"}},
      "queued-resources": {"q": {"states": ["ACTIVE"], "labels": {**mine, "dsbs-run": "q"}}}})
  g, out = tpu.Gcloud(log=io.StringIO()), io.StringIO()
  assert tpu.cleanup(g, ["z"], sweep="s1", owner="alice", confirm=lambda _: "n", out=out) == 0
  assert "nothing deleted" in out.getvalue() and len(fake.read_state()["tpu-vm"]) == 6
  for name in ("a", "b", "q"):
    assert f" {name} " in out.getvalue()
  assert tpu.cleanup(g, ["z"], sweep="s1", owner="alice", yes=True, out=io.StringIO()) == 3
  st = fake.read_state()
  assert sorted(st["tpu-vm"]) == ["c", "d", "e"] and st["queued-resources"] == {}
  assert ["compute", "tpus", "queued-resources", "delete", "q", "--zone=z", "--force",
          "--quiet"] in fake.calls()
  proc = subprocess.run([sys.executable, "-m", "launch.tpu", "cleanup", "--zone=z",
                         "--all_owners"], cwd=REPO, input="y\n", capture_output=True, text=True,
                        timeout=60, check=False)
  assert proc.returncode == 0, proc.stderr
  assert sorted(fake.read_state()["tpu-vm"]) == ["e"]  # the unlabelled one stays


# ---- the sweep runner's tpu target -----------------------------------------------------------

SWEEP_GIN = ("gin_configs/default.gin", "gin_configs/anli_220m.gin", "gin_configs/eval.gin")
TPU_OPTIONS = {"zone": "us-central2-b", "accelerator": "v4-8", "owner": "alice", "poll_s": 0.1,
               "log_sync_s": 0.2, "backoff_s": 0, "run_timeout_s": 60, "create_timeout_s": 10,
               "max_retries": 2, "data_dir": "gs://b/data"}


class FakeGfile:
  """tf.io.gfile for gs:// paths on the fake's GCS: how the runner reads and writes run dirs
  (records, test metrics, the T5X checkpoint choice) through dsbs.fileio."""

  def __init__(self, gcs: pathlib.Path):
    self.gcs = gcs

  def _path(self, url: str) -> pathlib.Path:
    assert url.startswith("gs://"), url
    return self.gcs / url[len("gs://"):]

  def exists(self, url):
    return self._path(url).exists()

  def isdir(self, url):
    return self._path(url).is_dir()

  def listdir(self, url):
    return [p.name for p in self._path(url).iterdir()]

  def makedirs(self, url):
    self._path(url).mkdir(parents=True, exist_ok=True)

  def GFile(self, url, mode="r"):  # pylint: disable=invalid-name
    if "w" in mode:
      self._path(url).parent.mkdir(parents=True, exist_ok=True)
    return open(self._path(url), mode, encoding=None if "b" in mode else "utf-8")


@pytest.fixture
def tpu_sweep(tmp_path, fake, monkeypatch):
  """(write_definition(**changes) -> path, sweep dir): the tpu target ships a small committed
  checkout; run dirs live in the fake's GCS."""
  from dsbs import fileio  # pylint: disable=g-import-not-at-top
  from launch import targets, tpu_target  # pylint: disable=g-import-not-at-top
  checkout = _checkout(tmp_path / "checkout", SWEEP_GIN)
  monkeypatch.setitem(targets._TARGETS, "tpu",  # pylint: disable=protected-access
                      lambda sweep: tpu_target.TpuTarget(sweep, repo=str(checkout)))
  gfile = FakeGfile(fake.root / "gcs")
  monkeypatch.setattr(fileio, "_gfile", lambda: gfile)

  def write(**changes):
    config = {"name": "tpu-sweep", "target": "tpu", "run_root": "gs://b/sweeps",
              "gin": {"TRAIN_STEPS": 5}, "grid": {"dataset": "arith",
                                                  "method": ["finetune", "dsbs"]},
              "tpu": TPU_OPTIONS, **changes}
    path = tmp_path / "tpu_sweep.py"
    path.write_text(f"def get_config():\n  return {config!r}\n")
    return str(path)

  return write, str(tmp_path / "sweep")


def _sweep_cells(defn):
  from launch import definition  # pylint: disable=g-import-not-at-top
  sweep = definition.load(defn)
  return sweep, {c.name: c for c in sweep.cells}


def test_a_tpu_sweep_dry_run_prints_each_cells_gcloud_commands(tpu_sweep, fake, capsys):
  from launch import engines, sweep as sweep_lib, tpu_target  # pylint: disable=g-import-not-at-top
  write, sweep_dir = tpu_sweep
  defn = write()
  assert sweep_lib.main(["run", defn, f"--sweep_dir={sweep_dir}", "--dry_run"]) == 0
  out = capsys.readouterr().out
  assert fake.calls() == [] and not os.path.exists(sweep_dir)
  sweep, cells = _sweep_cells(defn)
  assert list(cells) == ["arith-finetune", "arith-dsbs"]
  scripts = out.split("\n# arith-")[1:]
  assert len(scripts) == 2
  for (name, cell), script in zip(cells.items(), scripts):
    run_dir = f"gs://b/sweeps/{name}"
    tpu_name = tpu_target.tpu_name("tpu-sweep", name, run_dir)
    lines = [l for l in script.splitlines() if l.startswith("gcloud ")]
    verbs = [" ".join(shlex.split(l)[3:5]) for l in lines if l.startswith("gcloud compute")]
    assert verbs == ["tpu-vm describe", "tpu-vm create", "tpu-vm describe", "tpu-vm ssh",
                     "tpu-vm ssh", "tpu-vm delete"]
    assert all(shlex.split(l)[5] == tpu_name for l in lines if l.startswith("gcloud compute"))
    assert "dsbs-sweep=tpu-sweep" in lines[1] and "--accelerator-type=v4-8" in lines[1]
    run = shlex.split(next(l for l in lines if "dsbs-run" in l and " ssh " in l))
    (train,) = engines.phases(sweep, cell, run_dir, "python3")
    assert _remote_argv(run[-1][len("--command="):]) == train.preview
    assert "# 8 gcloud calls, plus one describe every 0.1 s" in script
  assert sweep_lib.main(["run", defn, "--python=/usr/bin/python3.11", "--dry_run"]) == 2
  assert "--python: the tpu target runs python3" in capsys.readouterr().err


def _sweep_state(sweep_dir):
  return json.loads(pathlib.Path(sweep_dir, "state.json").read_text())["cells"]


def test_a_tpu_sweep_runs_every_cell_on_its_own_tpu_and_recovers_a_preemption(tpu_sweep, fake,
                                                                               capsys):
  from launch import engines, sweep as sweep_lib, tpu_target  # pylint: disable=g-import-not-at-top
  write, sweep_dir = tpu_sweep
  defn = write()
  fake.state({"workers": 2, "ssh_runs": [{"preempt": True}]})  # the first run is preempted
  assert sweep_lib.main(["run", defn, f"--sweep_dir={sweep_dir}", "--max_parallel=2"]) == 0
  assert {n: c["status"] for n, c in _sweep_state(sweep_dir).items()} == {
      "arith-finetune": "done", "arith-dsbs": "done"}
  sweep, cells = _sweep_cells(defn)
  creates, deletes = {}, {}
  for c in fake.calls():
    if c[2:3] == ["tpu-vm"] and c[3] in ("create", "delete"):
      (creates if c[3] == "create" else deletes).setdefault(c[4], []).append(c)
  names = {n: tpu_target.tpu_name("tpu-sweep", n, f"gs://b/sweeps/{n}") for n in cells}
  assert set(creates) == set(deletes) == set(names.values())
  assert sorted(len(v) for v in creates.values()) == [1, 2]  # one cell's TPU was recreated
  assert {n: len(v) for n, v in deletes.items()} == {n: len(v) for n, v in creates.items()}
  assert fake.read_state()["tpu-vm"] == {}
  for name, cell in cells.items():
    run_dir = f"gs://b/sweeps/{name}"
    (local,) = engines.phases(sweep, cell, run_dir, sys.executable)  # the local target's
    runs = [r for r in fake.trainer_runs() if f"--model_dir={run_dir}" in r["argv"]]
    assert sorted(r["worker"] for r in runs) == ["0", "1"]
    assert all(r["argv"] == local.argv()[1:] and r["data_dir"] == "gs://b/data" for r in runs)
    record = json.loads(fake.gcs(f"{run_dir}/run_record.json").read_text())
    assert record["status"] == "done" and record["target"]["tpu"] == names[name]
    assert record["target"]["accelerator"] == "v4-8" and record["target"]["zone"] == \
        "us-central2-b"
    preempted = len(creates[names[name]]) == 2
    assert len(record["phases"][0]["preemptions"]) == preempted
    launch_record = json.loads(fake.gcs(f"{run_dir}/launch_record.json").read_text())
    assert launch_record["meta"]["overrides"] == cell.overrides
    assert launch_record["trainer_argv"][0] == "python3"
    assert launch_record["labels"]["dsbs-sweep"] == "tpu-sweep"
    log = pathlib.Path(sweep_dir, "logs", f"{name}.log").read_text()
    assert f"+ gcloud compute tpus tpu-vm create {names[name]}" in log
    assert "fake trainer on worker 0" in log  # worker 0's output
  capsys.readouterr()
  assert sweep_lib.main(["status", sweep_dir]) == 0
  out = capsys.readouterr().out
  assert "2 cells; pending 0, running 0, done 2, failed 0" in out
  assert "arith-finetune  (attempt 1" in out and "arith-dsbs  (attempt 1" in out


def test_a_t5x_cell_tests_its_best_checkpoint_on_the_same_tpu(tpu_sweep, fake):
  from launch import sweep as sweep_lib  # pylint: disable=g-import-not-at-top
  write, sweep_dir = tpu_sweep
  defn = write(engine="t5x", gin_file="gin_configs/anli_220m.gin",
               grid={"dataset": "anli1", "method": "finetune"})
  fake.state({"workers": 2})
  assert sweep_lib.main(["run", defn, f"--sweep_dir={sweep_dir}"]) == 0
  (name,) = _sweep_state(sweep_dir)
  run_dir = f"gs://b/sweeps/{name}"
  evals = fake.trainer_runs(".eval")
  assert sorted(r["worker"] for r in evals) == ["0", "1"]
  assert all(f"--gin.CHECKPOINT_PATH='{run_dir}/checkpoint_20'" in r["argv"] for r in evals)
  assert evals[0]["argv"][:4] == ["-m", "t5x.eval", "--gin_file=gin_configs/eval.gin",
                                  "--gin.TRAIN_STEPS=5"]
  metrics = json.loads(fake.gcs(f"{run_dir}/{report.TEST_METRICS}").read_text())
  assert metrics["step"] == 20 and metrics["metrics"]["accuracy"] == 52.0
  verbs = fake.verbs()
  assert verbs.count("tpu-vm create") == verbs.count("tpu-vm delete") == 1
  assert verbs.count("tpu-vm ssh") == 3  # setup, train, test: one TPU, set up once
  assert verbs.index("tpu-vm delete") == len(verbs) - 1
  test_record = json.loads(fake.gcs(f"{run_dir}/launch_record.test.json").read_text())
  assert test_record["trainer_argv"][:3] == ["python3", "-m", "t5x.eval"]
  assert test_record["meta"]["phase"] == "test"
  record = json.loads(fake.gcs(f"{run_dir}/run_record.json").read_text())
  assert [p["name"] for p in record["phases"]] == ["train", "test"]


def test_ending_a_tpu_cell_stops_it_and_deletes_its_tpu(tpu_sweep, fake):
  from launch import definition, sweep as sweep_lib, targets  # pylint: disable=g-import-not-at-top
  write, sweep_dir = tpu_sweep
  sweep = definition.load(write(grid={"dataset": "arith", "method": "dsbs"}))
  fake.state({"workers": 2})
  fake.trainer({0: {"sleep": 60}, 1: {"sleep": 60}})
  runner = sweep_lib.Runner(sweep, sweep_dir, targets.make_target(sweep), out=io.StringIO())

  def second_ctrl_c():  # what the runner's signal handler does on a second Ctrl-C
    deadline = time.monotonic() + 60
    while len(fake.trainer_runs()) < 2 and time.monotonic() < deadline:
      time.sleep(0.1)
    runner._stop.set()  # pylint: disable=protected-access
    runner._terminate.set()  # pylint: disable=protected-access

  threading.Thread(target=second_ctrl_c, daemon=True).start()
  start = time.monotonic()
  assert runner.run() == 130
  assert time.monotonic() - start < 50  # the trainers' 60 s were cut short
  cell = _sweep_state(sweep_dir)["arith-dsbs"]
  assert cell["status"] == "interrupted" and "ended by the sweep runner" in cell["reason"]
  assert fake.verbs()[-1] == "tpu-vm delete" and fake.read_state()["tpu-vm"] == {}
  for run in fake.trainer_runs():  # the remote job was stopped, not left to run on
    with pytest.raises(ProcessLookupError):
      os.kill(run["pid"], 0)


@pytest.mark.parametrize("changes,field,text", [
    ({"tpu": {**TPU_OPTIONS, "spot": True}}, "tpu.spot", "unknown option"),
    ({"tpu": {**TPU_OPTIONS, "max_retries": "3"}}, "tpu.max_retries", "an integer"),
    ({"tpu": {"accelerator": "v4-8"}}, "tpu.zone", "required"),
    ({"tpu": {**TPU_OPTIONS, "provisioning": "preemptible"}}, "tpu.provisioning", "spot"),
    ({"tpu": {**TPU_OPTIONS, "accelerator": {"tiny": "v4-8"}}}, "tpu.accelerator",
     "student"),
    ({"tpu": {**TPU_OPTIONS, "env": {"HF_TOKEN": "x"}}}, "tpu.env", "secret"),
    ({"run_root": None}, "run_root", "gs://"),
    ({"run_root": "/tmp/runs"}, "run_root", "is local"),
    ({"python": "python3.11"}, "python", "python3"),
    ({"gin_file": "gin_configs/anli_770m.gin"}, "gin_file", "not a committed file"),
])
def test_bad_tpu_sweeps_are_refused_before_anything_runs(tpu_sweep, fake, capsys, changes, field,
                                                         text):
  from launch import sweep as sweep_lib  # pylint: disable=g-import-not-at-top
  write, sweep_dir = tpu_sweep
  defn = write(**{k: v for k, v in changes.items() if v is not None})
  if changes.get("run_root", "") is None:
    pathlib.Path(defn).write_text(pathlib.Path(defn).read_text().replace(
        "'run_root': 'gs://b/sweeps', ", ""))
  assert sweep_lib.main(["run", defn, f"--sweep_dir={sweep_dir}"]) == 2
  err = capsys.readouterr().err
  assert f"tpu_sweep.py: {field}: " in err and text in err, err
  assert fake.calls() == [] and not os.path.exists(sweep_dir)
