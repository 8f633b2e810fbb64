"""SeqIO preprocessors: source fields -> `inputs`, `targets`, `task_kind` for each task variant.

The task sources (`dsbs.tasks.sources`) yield string fields `id`, `input`, `label` (the label the
variant trains or is scored on: gold or teacher) and `rationale`. These preprocessors only format:

  label task      inputs "predict: <input>"   targets "<label>"                     kind 0
  rationale task  inputs "explain: <input>"   targets "<rationale>"                 kind 1
  single task     inputs "<input>"            targets "<label>"                     kind 2
  cot             inputs "<input>"            targets "<rationale> So the answer is <label>."
                                                                                    kind 2
(`prefix` is configurable; the defaults above are the paper's.) A CoT target with an empty
rationale is "So the answer is <label>."; `dsbs.seqio_ext.postprocessors.extract_cot_answer`
reads the label back out of generated text.
"""
from __future__ import annotations

import tensorflow as tf

LABEL_PREFIX = "predict: "
RATIONALE_PREFIX = "explain: "
COT_ANSWER_PHRASE = "So the answer is"
TARGETS = ("label", "rationale", "cot")


def cot_target(rationale: str | None, label: str) -> str:
  """The single-task CoT target string (Python twin of the TF formatting below)."""
  head = (rationale or "").strip()
  return (f"{head} " if head else "") + f"{COT_ANSWER_PHRASE} {label.strip()}."


def format_example(dataset: tf.data.Dataset, *, prefix: str, target: str,
                   task_kind: int) -> tf.data.Dataset:
  """Maps source fields to `id`, `inputs`, `targets` (strings) and int32 `task_kind`."""
  if target not in TARGETS:
    raise ValueError(f"target must be one of {TARGETS}, got {target!r}")

  def fmt(ex):
    if target == "label":
      targets = tf.strings.strip(ex["label"])
    elif target == "rationale":
      targets = tf.strings.strip(ex["rationale"])
    else:
      rationale = tf.strings.strip(ex["rationale"])
      head = tf.cond(tf.strings.length(rationale) > 0, lambda: rationale + " ",
                     lambda: tf.constant(""))
      targets = tf.strings.join(
          [head, COT_ANSWER_PHRASE, " ", tf.strings.strip(ex["label"]), "."])
    return {
        "id": ex["id"],
        "inputs": tf.strings.join([prefix, ex["input"]]),
        "targets": targets,
        "task_kind": tf.constant(task_kind, tf.int32),
    }

  return dataset.map(fmt, num_parallel_calls=tf.data.AUTOTUNE)
