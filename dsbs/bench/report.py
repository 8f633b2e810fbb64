"""The benchmark's report: the README table (markdown) and the flat summary."""
from __future__ import annotations

from typing import Any


def _fmt(v: float | None, spec: str) -> str:
  return "n/a" if v is None else format(v, spec)


def _decode_cell(v: dict[str, Any], kind: str) -> str:
  frac = v.get(f"{kind}_floor_fraction")
  if not frac:
    return _fmt(v.get(f"{kind}_tokens_per_s"), ".0f")
  return f"{v[f'{kind}_tokens_per_s']:.0f} ({100 * frac:.{0 if frac >= 0.01 else 2}f}%)"


def markdown(r: dict[str, Any]) -> str:
  """The README table: one row per engine, ratios against dsbs."""
  lines = [f"`python -m dsbs.bench --config={r['config']}` on {r['date']}, {r['device_kind']} x"
           f"{r['devices']} ({r['cpu']}, {r['cpu_count']} cores), jax {r['jax']}; peak "
           f"{_fmt(r.get('peak_flops') and r['peak_flops'] / 1e9, '.1f')} GFLOP/s "
           f"({r.get('peak_source')}).", "",
           "| engine | train step (s), median | best | train tokens/s | MFU | greedy new tokens/s "
           "| beam new tokens/s |", "|---|---|---|---|---|---|---|"]
  rows = [("dsbs", r)] + [(k, r[k]) for k in ("torch", "t5x") if r.get(k, {}).get("available")]
  for name, v in rows:
    lines.append(f"| {name} | {v['train_step_s']:.3f} | {_fmt(v.get('train_step_min_s'), '.3f')} "
                 f"| {v['train_tokens_per_s']:.0f} | "
                 f"{_fmt(v.get('mfu') and 100 * v['mfu'], '.1f')}% | "
                 f"{_decode_cell(v, 'decode')} | {_decode_cell(v, 'beam_decode')} |")
  if r.get("decode_floor_tokens_per_s"):
    lines += ["", f"Decoding floor (the roofline at that peak and "
              f"{r['memory_bytes_per_s'] / 1e9:.1f} GB/s, {r.get('memory_source')}): greedy "
              f"{r['decode_floor_tokens_per_s']:.0f}, beam "
              f"{r['beam_decode_floor_tokens_per_s']:.0f} new tokens/s; the percentages in "
              "brackets are of that floor."]
  ratios = [f"{k.replace('_', ' ')}: {r[k]:.2f}x" for k in sorted(r) if "speedup_vs_" in k]
  if ratios:
    lines += ["", "dsbs speed-up (higher is better): " + "; ".join(ratios) + "."]
  for k in ("torch", "t5x"):
    if k in r and not r[k].get("available"):
      lines.append(f"{k}: unavailable ({r[k].get('reason')}).")
  return "\n".join(lines)


def scalars(r: dict[str, Any]) -> dict[str, Any]:
  """The result's top-level scalars (what the default output prints below the table)."""
  return {k: v for k, v in r.items() if not isinstance(v, (dict, list))}
