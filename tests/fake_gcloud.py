"""A stand-in for the gcloud CLI, copied by tests/test_launch_tpu.py into a temporary dir.

It lives in ROOT/bin/gcloud and keeps everything under ROOT (its parent's parent):
  calls.jsonl     one JSON argv per call, in order
  state.json      the resources and the script of what happens next (see tests/test_launch_tpu.py)
  gcs/            gs://BUCKET/PATH is gcs/BUCKET/PATH (`storage cp`, `cat`, `ls`)
  workers/NAME/wN/  HOME of worker N of TPU NAME: `ssh NAME --worker=all --command=C` runs
                  `bash -c C` once per worker, in parallel, with wbin/ (fake python3, git, curl,
                  sudo) first on PATH; deleting NAME empties its disks
Nothing here reaches the network.
"""
import contextlib
import fcntl
import glob
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOT_FOUND = "ERROR: (gcloud.compute.tpus.{kind}.{verb}) NOT_FOUND: Resource '{name}' was not found"


@contextlib.contextmanager
def state():
  with open(ROOT / "state.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    st = json.loads((ROOT / "state.json").read_text())
    yield st
    (ROOT / "state.json.new").write_text(json.dumps(st, indent=1))
    os.replace(ROOT / "state.json.new", ROOT / "state.json")  # readers never see half a file


def flags(args):
  return {a.split("=", 1)[0]: a.split("=", 1)[1] for a in args if a.startswith("--") and "=" in a}


def full_name(kind, name):
  group = "queuedResources" if kind == "queued-resources" else "nodes"
  return f"projects/p/locations/z/{group}/{name}"


def render(kind, name, r):
  s = r["states"][0]
  if kind == "queued-resources":
    return {"name": full_name(kind, name), "state": {"state": s},
            "tpu": {"nodeSpec": [{"nodeId": name, "node": {"labels": r.get("labels", {}),
                                                         "acceleratorType": r.get("accel")}}]}}
  out = {"name": full_name(kind, name), "state": s, "labels": r.get("labels", {}),
         "acceleratorType": r.get("accel")}
  if r.get("qr"):
    out["queuedResource"] = full_name("queued-resources", r["qr"])
  return out


def resource(kind, verb, args):
  name = args[0] if args and not args[0].startswith("-") else None
  f = flags(args)
  with state() as st:
    table = st.setdefault(kind, {})
    if verb == "list":
      print(json.dumps([render(kind, n, r) for n, r in table.items()]))
      return 0
    if verb == "describe":
      if name not in table:
        print(NOT_FOUND.format(kind=kind, verb=verb, name=name), file=sys.stderr)
        return 1
      r = table[name]
      print(json.dumps(render(kind, name, r)))
      if len(r["states"]) > 1:
        r["states"].pop(0)
      return 0
    if verb == "create":
      race = st.pop("race_create", None)
      if race:  # someone else creates the name between our describe and our create
        table[name] = race
      if name in table:
        print(f"ERROR: (gcloud.compute.tpus.{kind}.create) ALREADY_EXISTS: {name} already exists",
              file=sys.stderr)
        return 1
      fail = st.pop("fail_create", None)
      if fail:
        print(fail, file=sys.stderr)
        return 1
      labels = dict(kv.split("=", 1) for kv in f.get("--labels", "").split(",") if kv)
      ready = "ACTIVE" if kind == "queued-resources" else "READY"
      table[name] = {"states": list(st.get("on_create", {}).get(kind, [ready])),
                     "labels": labels, "accel": f.get("--accelerator-type")}
      if kind == "queued-resources":
        st.setdefault("tpu-vm", {})[name] = {"states": ["READY"], "labels": labels,
                                             "accel": f.get("--accelerator-type"), "qr": name}
      return 0
    if verb == "delete":
      if name not in table:
        print(NOT_FOUND.format(kind=kind, verb=verb, name=name), file=sys.stderr)
        return 1
      del table[name]
      shutil.rmtree(ROOT / "workers" / name, ignore_errors=True)  # a new VM has empty disks
      if kind == "queued-resources":
        nodes = st.setdefault("tpu-vm", {})
        for n in [n for n, r in nodes.items() if r.get("qr") == name]:
          del nodes[n]
      return 0
  print(f"fake gcloud: unsupported {kind} {verb}", file=sys.stderr)
  return 2


def preempt(name):
  with state() as st:
    if name in st.get("tpu-vm", {}):
      st["tpu-vm"][name]["states"] = ["PREEMPTED"]
    if name in st.get("queued-resources", {}):
      st["queued-resources"][name]["states"] = ["SUSPENDED"]


def ssh(args):
  name, f = args[0], flags(args)
  command = f["--command"]
  assert f.get("--worker") == "all", args
  with state() as st:
    workers = st.get("workers", 1)
    script = st.get("ssh_runs", []).pop(0) if "dsbs-run" in command and st.get("ssh_runs") else {}
  if script.get("preempt"):
    preempt(name)
    print("Connection to worker closed by remote host.", file=sys.stderr)
    return 255
  if script.get("hang_preempted"):  # the VM goes away and ssh hangs until the launcher stops it
    preempt(name)
    time.sleep(120)
    return 255
  procs, hung_up = [], []

  def hang_up(signum, frame):  # like ssh going away: the remote sessions get SIGHUP
    hung_up.append(signum)
    for p in procs:
      p.send_signal(signal.SIGHUP)

  # Before any worker starts: a launcher stopped at any moment stops every worker it started.
  signal.signal(signal.SIGTERM, hang_up)
  signal.signal(signal.SIGINT, hang_up)
  for w in range(workers):
    if hung_up:
      break
    home = ROOT / "workers" / name / f"w{w}"
    home.mkdir(parents=True, exist_ok=True)
    env = {"PATH": f"{ROOT / 'wbin'}:{ROOT / 'bin'}:/usr/bin:/bin", "HOME": str(home),
           "FAKE_WORKER": str(w), "FAKE_ROOT": str(ROOT), "LANG": "C.UTF-8"}
    procs.append(subprocess.Popen(["bash", "-c", command], cwd=home, env=env))
  rcs = [p.wait() for p in procs]
  return 255 if hung_up else next((rc for rc in rcs if rc), 0)


def gcs_path(url):
  assert url.startswith("gs://"), url
  return ROOT / "gcs" / url[len("gs://"):]


def storage(args):
  verb, rest = args[0], [a for a in args[1:] if a == "-" or not a.startswith("-")]
  if verb == "cp":
    src, dst = rest
    data = sys.stdin.buffer.read() if src == "-" else (
        gcs_path(src).read_bytes() if src.startswith("gs://") else pathlib.Path(src).read_bytes())
    if dst == "-":
      sys.stdout.buffer.write(data)
    else:
      gcs_path(dst).parent.mkdir(parents=True, exist_ok=True)
      gcs_path(dst).write_bytes(data)
    return 0
  if verb == "cat":
    p = gcs_path(rest[0])
    if not p.exists():
      print(f"ERROR: {rest[0]} matched no objects", file=sys.stderr)
      return 1
    sys.stdout.buffer.write(p.read_bytes())
    return 0
  if verb == "ls":
    hits = sorted(glob.glob(str(gcs_path(rest[0]))))
    for h in hits:
      print("gs://" + str(pathlib.Path(h).relative_to(ROOT / "gcs")))
    return 0 if hits else 1
  print(f"fake gcloud: unsupported storage {verb}", file=sys.stderr)
  return 2


def main(argv):
  with open(ROOT / "calls.jsonl", "a") as f:
    f.write(json.dumps(argv) + "\n")
  if argv[:1] == ["storage"]:
    return storage(argv[1:])
  if argv[:2] == ["compute", "tpus"] and argv[2] in ("tpu-vm", "queued-resources"):
    if argv[3] == "ssh":
      return ssh(argv[4:])
    return resource(argv[2], argv[3], argv[4:])
  print(f"fake gcloud: unsupported {argv}", file=sys.stderr)
  return 2


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
