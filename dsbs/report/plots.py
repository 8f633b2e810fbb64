"""The report's figures (matplotlib, Agg): the test metric against % of train data, the student,
the label rate or a (a line per method, 95% intervals as error bars), and the validation curves
that show whether the step budget converged."""
from __future__ import annotations

import os
from typing import Any, Sequence

from dsbs.report.groups import (METHOD_ORDER, Group, fmt, slug, split_panels, title,
                                value_key)


def _plt():
  """matplotlib with the Agg backend (imported when plotting: it is slow to import)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _save(plt, fig, out_dir: str, name: str, rect=(0.0, 0.0, 1.0, 1.0)) -> str:
  fig.tight_layout(rect=rect)
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, name)
  fig.savefig(path)
  plt.close(fig)
  return path


def _wrap(text: str, width: int) -> str:
  """A figure title in lines of at most `width` characters, broken between its ' · ' parts."""
  lines: list[str] = []
  for part in text.split(" · "):
    if lines and len(lines[-1]) + 3 + len(part) <= width:
      lines[-1] += " · " + part
    else:
      lines.append(part)
  return "\n".join(lines)


def method_colour(method: Any) -> str:
  """One colour per method in every figure (matplotlib's default cycle, by METHOD_ORDER)."""
  i = METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER) + sum(
      map(ord, str(method))) % 5
  return f"C{i % 10}"


def _errorbars(members: Sequence[Group]) -> tuple[list[float], list[list[float]]]:
  means = [g.mean for g in members]
  lower = [g.mean - g.low if g.low is not None else 0.0 for g in members]
  upper = [g.high - g.mean if g.high is not None else 0.0 for g in members]
  return means, [lower, upper]


def plot_panels(groups: Sequence[Group], x_axis: str, out_dir: str, metric: str) -> list[str]:
  """One PNG per panel with >= 2 values of `x_axis`: the metric against it, a line per method,
  95% intervals as error bars. Returns the files written."""
  written = []
  for rest, members in split_panels(groups, ("method", x_axis)):
    xs = sorted({g.axes.get(x_axis) for g in members if x_axis in g.axes}, key=value_key)
    if len(xs) < 2:
      continue
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    numeric = all(isinstance(x, (int, float)) for x in xs)
    methods = sorted({g.axes.get("method") for g in members}, key=value_key)
    log_x = numeric and x_axis == "fraction"
    span = (float(xs[-1]) - float(xs[0])) if numeric else float(len(xs) - 1)
    for i, m in enumerate(methods):
      line = sorted((g for g in members if g.axes.get("method") == m and x_axis in g.axes),
                    key=lambda g: value_key(g.axes[x_axis]))
      if not line:
        continue
      dodge = 0.025 * (i - (len(methods) - 1) / 2)  # side by side: error bars stay readable
      pos = [(g.axes[x_axis] * 2 ** dodge if log_x else g.axes[x_axis] + dodge * span)
             if numeric else xs.index(g.axes[x_axis]) + dodge * 2.4 for g in line]
      means, err = _errorbars(line)
      ax.errorbar(pos, means, yerr=err, marker="o", capsize=4, linewidth=1.8,
                  label=str(m), color=method_colour(m))
    if log_x:
      ax.set_xscale("log", base=2)
    if numeric:
      ax.set_xticks(xs)
      ax.set_xticklabels([fmt(x) for x in xs])
    else:
      ax.set_xticks(range(len(xs)))
      ax.set_xticklabels([str(x) for x in xs])
    ax.minorticks_off()
    label = {"fraction": "% of train data", "label_rate": "label rate (share of label "
             "examples)", "alpha": "a (weight of the label loss)", "student": "student"}
    ax.set_xlabel(label.get(x_axis, x_axis))
    ax.set_ylabel(f"test {metric} (%), 95% CI")
    if metric == "accuracy":  # a percentage: bars reaching past 0 or 100 are cut at the frame
      low, high = ax.get_ylim()
      ax.set_ylim(max(low, 0.0), min(high, 100.0))
    ax.set_title(_wrap(title(rest), 60), fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(title="method", fontsize=9)
    written.append(_save(plt, fig, out_dir, f"{metric}_vs_{x_axis}-{slug(rest)}.png"))
  return written


def plot_curves(curves: Sequence[tuple[dict[str, Any], list[tuple[int, float]]]], out_dir: str,
                metric: str) -> list[str]:
  """The validation curves: one PNG per panel (all axes but method, fraction and seed), a
  subplot per fraction, a line per method: the mean over seeds at each evaluated step, shaded
  from the lowest to the highest seed. `curves` holds (cell overrides, [(step, value), ...]).
  Returns the files written."""
  panels: dict[str, tuple[dict[str, Any], list]] = {}
  for overrides, points in curves:
    if not points:
      continue
    rest = {k: v for k, v in overrides.items() if k not in ("method", "fraction", "seed")}
    panels.setdefault(slug(rest), (rest, []))[1].append((overrides, points))
  written = []
  for key, (rest, members) in sorted(panels.items()):
    legend: dict[Any, tuple[Any, str]] = {}  # method -> its first line: one entry per method
    fractions = sorted({o.get("fraction") for o, _ in members}, key=value_key)
    plt = _plt()
    fig, axes = plt.subplots(1, len(fractions), figsize=(3.2 * len(fractions) + 2.0, 3.6),
                             dpi=110, sharey=True, squeeze=False)
    for ax, frac in zip(axes[0], fractions):
      methods = sorted({o.get("method") for o, _ in members if o.get("fraction") == frac},
                       key=value_key)
      for m in methods:
        by_step: dict[int, list[float]] = {}
        for o, points in members:
          if o.get("fraction") == frac and o.get("method") == m:
            for step, value in points:
              by_step.setdefault(step, []).append(value)
        steps = sorted(by_step)
        mean = [sum(by_step[s]) / len(by_step[s]) for s in steps]
        seeds = max(len(v) for v in by_step.values())
        (line,) = ax.plot(steps, mean, marker=".", linewidth=1.6, color=method_colour(m))
        legend.setdefault(m, (line, f"{m} (n={seeds})"))
        if seeds > 1:
          ax.fill_between(steps, [min(by_step[s]) for s in steps],
                          [max(by_step[s]) for s in steps], color=method_colour(m), alpha=0.15)
      ax.set_title("all data" if frac is None else f"{fmt(frac)}% of train data", fontsize=10)
      ax.set_xlabel("training step")
      ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel(f"validation {metric} (%)")
    ordered = [legend[m] for m in sorted(legend, key=value_key)]
    fig.legend([h for h, _ in ordered], [lab for _, lab in ordered], loc="center right",
               fontsize=8, title="mean; band:\nseeds' range", title_fontsize=8)
    width_in = 3.2 * len(fractions) + 2.0
    fig.suptitle(_wrap(title(rest), int(11 * width_in)), fontsize=10)
    written.append(_save(plt, fig, out_dir, f"validation_{metric}_curves-{key}.png",
                         rect=(0.0, 0.0, 1.0 - 1.5 / (3.2 * len(fractions) + 2.0), 1.0)))
  return written
