"""dsbs.bench: the test_tiny config runs end to end and prints the JSON keys; FLOP counts are
right; the report; the peers' choice of hardware and interpreter."""
import json
import os
import subprocess
import sys

import jax
import pytest

from dsbs.bench import __main__ as cli
from dsbs.bench import report, roofline
from dsbs.bench.peers import PeerUnavailable
from dsbs.bench.peers import t5x as t5x_peer
from dsbs.model import get_config

pytestmark = pytest.mark.timeout(300)


# Runs `python -m dsbs.bench` where SeqIO and TensorFlow cannot be imported (as on an
# accelerator host with JAX alone): the benchmark's steps and decoders need neither.
WITHOUT_SEQIO = """
import importlib.abc, runpy, sys
class Block(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path, target=None):
    if name.split(".")[0] in ("seqio", "tensorflow", "tensorflow_datasets"):
      raise ImportError("blocked " + name)
sys.meta_path.insert(0, Block())
sys.argv = ["dsbs.bench"] + sys.argv[1:]
runpy.run_module("dsbs.bench", run_name="__main__")
"""


def test_tiny_config_prints_json_with_the_keys():
  proc = subprocess.run([sys.executable, "-c", WITHOUT_SEQIO, "--config=test_tiny", "--json"],
                        capture_output=True, text=True, timeout=280, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  for key in ("train_step_s", "train_tokens_per_s", "mfu", "decode_tokens_per_s",
              "beam_decode_tokens_per_s", "model_flops_per_step", "peak_flops"):
    assert isinstance(result[key], float) and result[key] > 0, key
  assert result["tokens_per_step"] == 4 * (16 + 8)
  assert result["memory_bytes_per_s"] > 1e9  # measured on CPU
  for kind in ("decode", "beam_decode"):  # the roofline floor is above what was measured
    assert 0 < result[f"{kind}_floor_fraction"] < 1, kind
  # the compiled step does about the analytic matmul work (XLA also counts elementwise ops)
  assert 0.8 < result["xla_flops_per_step"] / result["model_flops_per_step"] < 1.5


def test_markdown_lists_peers_and_unavailable_ones():
  r = {"config": "test_tiny", "date": "d", "device_kind": "cpu", "devices": 1, "cpu": "x",
       "cpu_count": 2, "jax": "0", "peak_flops": 1e11, "peak_source": "measured",
       "train_step_s": 1.0, "train_tokens_per_s": 10.0, "mfu": 0.5, "decode_tokens_per_s": 4.0,
       "beam_decode_tokens_per_s": 2.0, "train_speedup_vs_torch": 2.0,
       "torch": {"available": True, "train_step_s": 2.0, "train_tokens_per_s": 5.0, "mfu": 0.25,
                 "decode_tokens_per_s": 1.0, "beam_decode_tokens_per_s": 1.0},
       "t5x": {"available": False, "reason": "no t5x"}}
  md = report.markdown(r)
  assert "| dsbs | 1.000 | n/a | 10 | 50.0% | 4 | 2 |" in md
  assert "| torch | 2.000 | n/a | 5 | 25.0% | 1 | 1 |" in md
  assert "train speedup vs torch: 2.00x" in md and "t5x: unavailable (no t5x)" in md
  r.update(decode_floor_tokens_per_s=8.0, beam_decode_floor_tokens_per_s=4.0,
           decode_floor_fraction=0.5, beam_decode_floor_fraction=0.5, memory_bytes_per_s=5e10,
           memory_source="measured")
  md = report.markdown(r)
  assert "| dsbs | 1.000 | n/a | 10 | 50.0% | 4 (50%) | 2 (50%) |" in md
  assert "50.0 GB/s, measured): greedy 8, beam 4 new tokens/s" in md


def test_forward_flops_match_a_hand_count():
  m = get_config("bench_small")
  # per layer, per token: q,k,v,o 4*2*512*384; scores+values 2*2*L*384; gated MLP 3*2*512*1024
  enc = 128 * (4 * 2 * 512 * 384 + 2 * 2 * 128 * 384 + 3 * 2 * 512 * 1024)
  dec = 64 * (4 * 2 * 512 * 384 + 2 * 2 * 64 * 384 + 2 * 2 * 512 * 384 + 2 * 2 * 128 * 384
              + 3 * 2 * 512 * 1024) + 128 * 2 * 2 * 512 * 384
  want = 16 * (8 * enc + 8 * dec + 64 * 2 * 512 * 384)
  assert roofline.forward_flops(m, 16, 128, 64) == want
  assert roofline.train_flops(m, 16, 128, 64) == 3 * want


def test_decode_floor_matches_a_hand_count():
  m = get_config("bench_small")
  # memory-bound (infinite peak): bytes / bandwidth. Encoder pass: encoder layers (q,k,v,o +
  # gated MLP) and the decoder's cross-attention key/value kernels, float32.
  enc = 4 * (8 * (4 * 512 * 384 + 3 * 512 * 1024) + 8 * 2 * 512 * 384)
  # each step: decoder weights (self q,k,v,o, cross q,o, MLP) and the float32 logits kernel,
  # cross keys/values of 16 x 128 encodings, self keys/values of the positions so far
  weights = 4 * (8 * (6 * 512 * 384 + 3 * 512 * 1024) + 512 * 384)
  cross = 4 * 8 * 2 * 16 * 128 * 384
  steps = sum(weights + cross + 4 * 8 * 2 * 16 * pos * 384 for pos in range(1, 65))
  assert roofline.decode_floor_s(m, 16, 128, 64, 1, 1e30, 1e10) == pytest.approx(
      (enc + steps) / 1e10, rel=1e-12)
  # compute-bound (infinite bandwidth): the forward FLOPs of one new token at a time
  flops = (16 * 128 * (8 * (2 * (4 * 512 * 384 + 3 * 512 * 1024) + 4 * 128 * 384)
                       + 8 * 2 * 2 * 512 * 384)
           + sum(16 * (8 * (2 * (6 * 512 * 384 + 3 * 512 * 1024) + 4 * (128 + pos) * 384)
                       + 2 * 512 * 384) for pos in range(1, 65)))
  assert roofline.decode_floor_s(m, 16, 128, 64, 1, 1e9, 1e30) == pytest.approx(flops / 1e9,
                                                                           rel=1e-12)
  # beams multiply the sequences, not the shared cross-attention keys/values
  beam = roofline.decode_floor_s(m, 16, 128, 64, 4, 1e30, 1e10)
  extra = sum(3 * 4 * 8 * 2 * 16 * pos * 384 for pos in range(1, 65))
  assert beam == pytest.approx((enc + steps + extra) / 1e10, rel=1e-12)


def test_unknown_peer_is_an_error():
  with pytest.raises(SystemExit):
    cli.parse_args(["--peers=tensorflow"])


def test_torch_peer_runs_on_the_hardware_jax_uses(monkeypatch):
  torch_peer = pytest.importorskip("dsbs.bench.peers.torch")

  class FakeTorch:
    __version__ = "0"

    class cuda:  # pylint: disable=invalid-name
      available = False

      @classmethod
      def is_available(cls):
        return cls.available

  assert torch_peer.torch_device(FakeTorch) == "cpu"  # this suite runs JAX on CPU
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  with pytest.raises(PeerUnavailable, match="cannot run on this gpu"):
    torch_peer.torch_device(FakeTorch)  # a CPU-only torch is no side-by-side peer for a GPU
  FakeTorch.cuda.available = True
  assert torch_peer.torch_device(FakeTorch) == "cuda"
  monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
  with pytest.raises(PeerUnavailable):
    torch_peer.torch_device(FakeTorch)


def test_t5x_interpreter_comes_from_the_flag_or_the_environment(monkeypatch, tmp_path):
  """No machine-specific default: the flag, else $DSBS_T5X_PYTHON, else this interpreter only
  if it imports t5x; a named interpreter that cannot import t5x is reported, not used."""
  monkeypatch.delenv(t5x_peer.T5X_PYTHON_ENV, raising=False)
  has_t5x = t5x_peer.importlib.util.find_spec("t5x") is not None
  python, how = t5x_peer.t5x_python()
  assert (python == sys.executable) if has_t5x else (python is None and "--t5x_python" in how)
  missing = str(tmp_path / "no_python")
  assert t5x_peer.t5x_python(missing) == (None, f"--t5x_python: no such interpreter {missing}")
  monkeypatch.setenv(t5x_peer.T5X_PYTHON_ENV, missing)
  assert t5x_peer.t5x_python()[1] == f"${t5x_peer.T5X_PYTHON_ENV}: no such interpreter {missing}"
  fake = tmp_path / "python"  # an interpreter without t5x
  fake.write_text("#!/bin/sh\nexit 1\n")
  os.chmod(fake, 0o755)
  python, how = t5x_peer.t5x_python(str(fake))
  assert python is None and "cannot import t5x" in how
  result = t5x_peer.run(None, None, str(fake))
  assert result == {"available": False, "reason": how}
