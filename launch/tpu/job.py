"""The job: `TpuJob` (one training job on one TPU VM or queued resource, validated on
construction), the launcher's constants (runtime versions, pinned JAX and T5X, resource states,
exit statuses) and its errors."""
from __future__ import annotations

import dataclasses
import getpass
import json
import os
import re
from typing import Any

# The repository root: this file is launch/tpu/job.py.
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Runtime (software) version per TPU generation, for JAX: the Cloud TPU "TPU software versions"
# page (https://cloud.google.com/tpu/docs/runtimes, "PyTorch and JAX"): v6e (Trillium)
# v2-alpha-tpuv6e, v5p v2-alpha-tpuv5, v5e v2-alpha-tpuv5-lite, v4 and older tpu-ubuntu2204-base.
# The key is the accelerator type's prefix (`v5litepod-64` is a v5e slice). --runtime_version
# overrides it.
RUNTIME_VERSIONS = {
    "v2": "tpu-ubuntu2204-base",
    "v3": "tpu-ubuntu2204-base",
    "v4": "tpu-ubuntu2204-base",
    "v5litepod": "v2-alpha-tpuv5-lite",
    "v5p": "v2-alpha-tpuv5",
    "v6e": "v2-alpha-tpuv6e",
}
# The versions this project's T5X tests and benchmarks ran with (README, "Benchmarks").
JAX_VERSION = "0.10.2"
T5X_REVISION = "cc342d419ec3e3e9c4bf1df33c82330cafdc1e16"

PROVISIONING = ("spot", "reserved", "on-demand")
ENGINES = ("t5x", "dsbs")
NODE, QUEUED = "tpu-vm", "queued-resources"  # the gcloud command groups
# Node states (TPU API v2 Node.State) and queued-resource states (QueuedResourceState.State).
NODE_OK = frozenset({"READY"})
NODE_PENDING = frozenset({"CREATING", "STARTING", "RESTARTING", "REPAIRING", "REIMAGING",
                          "UNHIDING", "DELETING"})
NODE_DEAD = frozenset({"PREEMPTED", "TERMINATED", "FAILED", "STOPPED", "STOPPING", "HIDING",
                       "HIDDEN", "UNKNOWN"})
QUEUED_OK = frozenset({"ACTIVE"})
QUEUED_PENDING = frozenset({"CREATING", "ACCEPTED", "WAITING_FOR_RESOURCES", "PROVISIONING",
                            "DELETING"})
QUEUED_DEAD = frozenset({"FAILED", "SUSPENDING", "SUSPENDED"})

EXIT_ERROR, EXIT_USAGE, EXIT_PREEMPTED, EXIT_INTERRUPTED = 1, 2, 75, 130
WORKER_SCRIPT = "launch/worker.sh"  # shipped in the archive; runs on every worker
RECORD = "launch_record.json"
_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
_GIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*(/[A-Za-z_][A-Za-z0-9_.]*)*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL", re.IGNORECASE)
_MODEL_DIR = re.compile(r"^gs://[a-z0-9][-a-z0-9_.]*(/[A-Za-z0-9._=+@-]+)*/?$")


class JobError(ValueError):
  """A job that cannot run as given; `field` names the TpuJob field (the CLI flag)."""

  def __init__(self, field: str, message: str):
    super().__init__(f"--{field}: {message}")
    self.field, self.message = field, message


class LaunchError(RuntimeError):
  """gcloud or a worker failed. `created`: the failing step had asked for a new resource."""

  def __init__(self, message: str, created: bool = False):
    super().__init__(message)
    self.created = created


class Preempted(LaunchError):
  """The resource went away (preempted, suspended, deleted) while the job ran."""


# ---- The job ----------------------------------------------------------------------------------

def default_owner() -> str:
  try:
    user = getpass.getuser()
  except (KeyError, OSError):  # no passwd entry, no $USER
    user = "unknown"
  return (re.sub(r"[^a-z0-9_-]", "-", user.lower())[:63]) or "unknown"


@dataclasses.dataclass(frozen=True)
class TpuJob:
  """One training job on one TPU VM or queued resource; validated on construction."""
  name: str  # the TPU node (and queued resource) name; also the `dsbs-run` label
  zone: str
  accelerator: str = ""  # --accelerator-type: v4-32, v5litepod-64, v5p-128, v6e-64, ...
  model_dir: str = ""  # gs:// run dir (checkpoints, logs/, code/, launch_record.json)
  project: str | None = None  # None: gcloud's configured project
  runtime_version: str | None = None  # None: RUNTIME_VERSIONS by generation
  provisioning: str = "on-demand"  # spot | reserved | on-demand
  queued: bool = False  # a queued resource instead of a direct TPU VM create
  engine: str = "t5x"  # t5x: python3 -m t5x.train; dsbs: python3 -m dsbs.train
  gin_files: tuple[str, ...] = ()  # relative to the repository root, committed
  overrides: tuple[tuple[str, str], ...] = ()  # (gin KEY, gin literal) -> --gin.KEY=VALUE
  # An argv to run on every worker instead of the engine's trainer (`python3 -m t5x.eval ...`),
  # from the shipped checkout's root; replaces gin_files and overrides.
  command: tuple[str, ...] = ()
  env: tuple[tuple[str, str], ...] = ()  # non-secret variables exported on every worker
  labels: tuple[tuple[str, str], ...] = ()  # extra labels (the dsbs-* ones are added)
  sweep: str | None = None  # the `dsbs-sweep` label
  owner: str = dataclasses.field(default_factory=default_owner)  # the `dsbs-owner` label
  meta: tuple[tuple[str, Any], ...] = ()  # JSON-able facts for the run record (a sweep cell)
  own: bool = False  # treat an existing resource of this name as ours: reuse it, delete it
  keep: bool = False  # never delete (debugging); teardown prints the delete command
  allow_dirty: bool = False  # ship uncommitted changes to tracked files
  jax_version: str = JAX_VERSION
  t5x_revision: str = T5X_REVISION  # a T5X commit; "none" skips T5X (engine dsbs only)
  max_retries: int = 3  # babysit: recreations after preemption
  backoff_s: float = 60.0  # babysit: first wait before recreating; doubles each retry
  max_backoff_s: float = 1800.0
  poll_s: float = 30.0  # state polls: queued-resource wait, preemption watch during run
  create_timeout_s: float = 6 * 3600.0  # waiting for a resource to become READY/ACTIVE
  setup_timeout_s: float = 3600.0
  run_timeout_s: float = 72 * 3600.0  # per worker (`timeout`); 0: none
  log_sync_s: float = 30.0  # how often each worker copies its log to the model dir
  repo: str = REPO  # the git checkout whose commit ships
  record: str = RECORD  # the run record's file name in model_dir

  def __post_init__(self):
    if not _NAME.match(self.name or ""):
      raise JobError("name", f"{self.name!r}: lowercase letters, digits and '-', starting with "
                     "a letter, at most 63 characters")
    if not self.zone:
      raise JobError("zone", "required, e.g. us-central2-b (v4), us-west4-a (v5e)")
    if self.accelerator:
      self.resolved_runtime()  # raises for an unknown generation without --runtime_version
    if self.model_dir and not _MODEL_DIR.match(self.model_dir):
      raise JobError("model_dir", f"{self.model_dir!r}: a gs://BUCKET/path the workers can write "
                     "(letters, digits and ._=+@- in the path)")
    if self.provisioning not in PROVISIONING:
      raise JobError("provisioning", f"{self.provisioning!r} not in {PROVISIONING}")
    if self.engine not in ENGINES:
      raise JobError("engine", f"{self.engine!r} not in {ENGINES}")
    for f in self.gin_files:
      if not f or os.path.isabs(f) or ".." in f.split("/"):
        raise JobError("gin_file", f"{f!r}: a path relative to the repository root")
    if self.command and (self.gin_files or self.overrides):
      raise JobError("command", "a command replaces --gin_file and --gin: give one or the other")
    if self.command and not all(isinstance(a, str) and a for a in self.command):
      raise JobError("command", f"{self.command!r}: an argv of non-empty strings")
    for key, _ in self.overrides:
      if not _GIN_KEY.match(key):
        raise JobError("gin", f"{key!r} is not a gin binding key (MACRO or scope/fn.param)")
      if key == "MODEL_DIR":
        raise JobError("gin", "MODEL_DIR comes from --model_dir")
    for key, _ in self.env:
      if not _ENV_NAME.match(key):
        raise JobError("env", f"{key!r} is not an environment variable name")
      if _SECRET_NAME.search(key):
        raise JobError("env", f"{key} looks like a secret: it would be printed and recorded; "
                       "give the workers their secrets another way (service account, metadata)")
    for key, value in self.all_labels().items():
      if not _LABEL_KEY.match(key) or not _LABEL_VALUE.match(value):
        raise JobError("label", f"{key}={value}: labels are lowercase letters, digits, '_' and "
                       "'-', at most 63 characters")
    if any(k.startswith("dsbs-") for k, _ in self.labels):
      raise JobError("label", "the dsbs-* labels are set by the launcher")
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*\.json$", self.record):
      raise JobError("record", f"{self.record!r}: a file name ending in .json")
    if self.max_retries < 0:
      raise JobError("max_retries", "must be >= 0")
    if self.t5x_revision == "none" and self.engine == "t5x":
      raise JobError("t5x_revision", "the t5x engine needs T5X")
    try:
      json.dumps(dict(self.meta))
    except (TypeError, ValueError) as e:
      raise JobError("meta", f"not JSON-serialisable: {e}") from None

  @property
  def kind(self) -> str:
    return QUEUED if self.queued else NODE

  def resolved_runtime(self) -> str:
    if self.runtime_version:
      return self.runtime_version
    m = re.match(r"^(v\d+[a-z]*)-\d+$", self.accelerator)
    if m and m.group(1) == "v5e":
      raise JobError("accelerator", f"{self.accelerator!r}: v5e slices are named "
                     f"v5litepod-N (e.g. v5litepod-{self.accelerator.split('-')[1]})")
    if not m or m.group(1) not in RUNTIME_VERSIONS:
      raise JobError("accelerator", f"{self.accelerator!r}: no default runtime for this "
                     f"generation (known: {sorted(RUNTIME_VERSIONS)}); pass --runtime_version")
    return RUNTIME_VERSIONS[m.group(1)]

  def all_labels(self) -> dict[str, str]:
    return {**dict(self.labels), "dsbs-run": self.name, "dsbs-sweep": self.sweep or "none",
            "dsbs-owner": self.owner}

  def location(self) -> list[str]:
    return [f"--zone={self.zone}"] + ([f"--project={self.project}"] if self.project else [])

  def versions(self, code_id: str) -> str:
    """What a set-up worker's marker holds."""
    return f"dsbs={code_id} jax={self.jax_version} t5x={self.t5x_revision}"

  def require(self, *fields: str) -> None:
    for f in fields:
      if not getattr(self, f):
        raise JobError(f.rstrip("s"), "required for this step")
