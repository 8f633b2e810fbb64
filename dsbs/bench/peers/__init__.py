"""The benchmark's peers: the same model, batch and decoding workload on another engine.

An in-process peer module (`torch`) defines `Peer(bc)` with `step()`, `run_greedy()`,
`run_beam()` and `version`, and raises `PeerUnavailable` where it cannot run side by side with
dsbs; `t5x` runs in a side interpreter (see its module).
"""


class PeerUnavailable(Exception):
  """A peer that cannot run on the hardware dsbs runs on."""
