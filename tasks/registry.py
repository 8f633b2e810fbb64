"""SeqIO registration of the distilling step-by-step task family for one dataset.

Names (for dataset <ds>; every name also exists with the suffixes below):

  tasks     <ds>_label_gt     predict: x -> gold label                      task_kind 0
            <ds>_label_llm    predict: x -> teacher label (OK records)      task_kind 0
            <ds>_rationale    explain: x -> teacher rationale (OK records)  task_kind 1
            <ds>_cot          x -> "<rationale> So the answer is <label>."  task_kind 2
            <ds>_finetune     x -> gold label (standard finetuning)         task_kind 2
            <ds>_distill      x -> teacher label (standard distillation)    task_kind 2
  mixtures  <ds>_dsbs         label_gt + rationale, 1:1 (paper)
            <ds>_dsbs_llm     label_llm + rationale, 1:1

  suffixes, in this order:
    _pct<p>    train subset of p percent, p in fractions.FRACTIONS (nested; 100 has none)
    _rate<r>   mixtures only: fraction r of sampled examples from the label task, r in RATES
               (default 0.5 has none)
    _byte      seqio.ByteVocabulary; names without it use the default vocabulary: $DSBS_VOCAB at
               import, else the public T5 SentencePiece model (see dsbs.seqio_ext.vocab)
  e.g. anli1_dsbs_pct10_rate0.25_byte.

Off-grid fractions / rates and other vocabularies: `mixture(...)` (gin-configurable) registers
the name on demand and returns it. Validation and test of label_llm / distill / cot score against
the GOLD label (see sources.py); only train uses teacher labels.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
import threading
from typing import Sequence

import gin
import seqio

from dsbs.seqio_ext import metrics as metrics_lib
from dsbs.seqio_ext import postprocessors
from dsbs.seqio_ext import preprocessors
from dsbs.seqio_ext import vocab as vocab_lib
from dsbs.tasks import fractions as fractions_lib
from dsbs.tasks import sources

RATES = (0.1, 0.2, 0.25, 0.3, 0.4, 0.6, 0.7, 0.75, 0.8, 0.9)  # label rates registered on import
DEFAULT_RATE = 0.5
DEFAULT_VOCAB = vocab_lib.default_spec()  # $DSBS_VOCAB at import, else "t5"
EAGER_VOCABS = (None, "byte")  # None: the default vocabulary, names without suffix
TASK_VARIANTS = sources.VARIANTS
MIXTURES = {"dsbs": ("label_gt", "rationale"), "dsbs_llm": ("label_llm", "rationale")}
TASK_KIND = {"label_gt": 0, "label_llm": 0, "rationale": 1, "cot": 2, "finetune": 2,
             "distill": 2}
_PREFIX = {"label_gt": preprocessors.LABEL_PREFIX, "label_llm": preprocessors.LABEL_PREFIX,
           "rationale": preprocessors.RATIONALE_PREFIX, "cot": "", "finetune": "",
           "distill": ""}
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")

_lock = threading.RLock()


@dataclasses.dataclass(frozen=True)
class DatasetDef:
  """What the registry needs to know about a dataset.

  Attributes:
    name: dataset name, the prefix of every task name ([a-z][a-z0-9_]*).
    loader: split -> canonical records (called lazily, once per process and split).
    splits: the splits that exist.
    kind: label-space kind (see dsbs.seqio_ext.postprocessors.LABEL_KINDS); picks metric and parser.
    label_space: closed label set for classification, else None.
    validation_origin: where validation comes from when it is not a file of its own (said at
      the start of a run), else None.
  """
  name: str
  loader: sources.Loader
  splits: tuple[str, ...]
  kind: str
  label_space: tuple[str, ...] | None = None
  validation_origin: str | None = None

  def __post_init__(self):
    if not NAME_PATTERN.match(self.name):
      raise ValueError(f"dataset name {self.name!r} must match {NAME_PATTERN.pattern}")
    if self.kind not in postprocessors.LABEL_KINDS:
      raise ValueError(f"dataset {self.name!r}: kind {self.kind!r} not in "
                       f"{postprocessors.LABEL_KINDS}")
    bad = set(self.splits) - {"train", "validation", "test"}
    if bad or not self.splits:
      raise ValueError(f"dataset {self.name!r}: splits {self.splits} must be a non-empty subset "
                       "of train/validation/test")


_DATASETS: dict[str, DatasetDef] = {}


def datasets() -> dict[str, DatasetDef]:
  """Registered datasets by name."""
  return dict(_DATASETS)


def get_dataset_def(name: str) -> DatasetDef:
  if name not in _DATASETS:
    raise ValueError(f"unknown dataset {name!r}; registered: {sorted(_DATASETS)}")
  return _DATASETS[name]


# ---------------------------------------------------------------------------------------------
# Names.


def _check_rate(rate: float) -> float:
  rate = float(rate)
  if not 0.0 < rate < 1.0:
    raise ValueError(f"label_rate must be in (0, 1), got {rate}")
  if float(f"{rate:g}") != rate:  # the name must identify the rate exactly
    raise ValueError(f"label_rate {rate!r} has more than 6 significant digits")
  return rate


def rate_suffix(rate: float) -> str:
  rate = _check_rate(rate)
  return "" if rate == DEFAULT_RATE else f"_rate{rate:g}"


def vocab_suffix(vocab: str | None) -> str:
  """Name suffix of a vocabulary: "" for the default (None, or the spec $DSBS_VOCAB named at
  import), "_byte" for "byte" (always), "_t5" for "t5" when it is not the default, and
  "_vocab<8 hex of the spec>" for a SentencePiece path."""
  if vocab is None or (vocab == DEFAULT_VOCAB and vocab != "byte"):
    return ""
  if vocab in ("t5", "byte"):
    return "_" + vocab
  return "_vocab" + hashlib.sha1(vocab.encode("utf-8")).hexdigest()[:8]


def _vocab_spec(vocab: str | None) -> str:
  return DEFAULT_VOCAB if vocab is None else vocab.strip()


def task_name(dataset: str, variant: str, fraction: float = 100,
              vocab: str | None = None) -> str:
  if variant not in TASK_VARIANTS:
    raise ValueError(f"unknown task variant {variant!r}; expected one of {TASK_VARIANTS}")
  return f"{dataset}_{variant}{fractions_lib.fraction_suffix(fraction)}{vocab_suffix(vocab)}"


def mixture_name(dataset: str, method: str = "dsbs", fraction: float = 100,
                 label_rate: float = DEFAULT_RATE, vocab: str | None = None) -> str:
  if method not in MIXTURES:
    raise ValueError(f"unknown mixture {method!r}; expected one of {tuple(MIXTURES)}")
  return (f"{dataset}_{method}{fractions_lib.fraction_suffix(fraction)}{rate_suffix(label_rate)}"
          f"{vocab_suffix(vocab)}")


# ---------------------------------------------------------------------------------------------
# Registration.


PASSTHROUGH = ("task_kind", "id")  # extra features every dsbs example carries


def output_features(vocab: str | None = None) -> dict[str, seqio.Feature]:
  """`inputs` and `targets` in `vocab`.

  `task_kind` and `id` are deliberately not output features: seqio.Evaluator (and so T5X eval)
  measures every output feature as a sequence and feeds their lengths to the feature converter,
  which accepts only inputs/targets. Tasks pass extra features through anyway; `DsbsMixture`
  keeps them in mixtures.
  """
  voc = vocab_lib.get_vocabulary(_vocab_spec(vocab))
  return {
      "inputs": seqio.Feature(voc, add_eos=True, required=True),
      "targets": seqio.Feature(voc, add_eos=True, required=True),
  }


class DsbsMixture(seqio.Mixture):
  """A seqio.Mixture that keeps `task_kind` and `id` (plain mixtures keep output features only).

  The feature converter needs `task_kind` to weight the loss; T5X calls `get_dataset` without
  `passthrough_features`, so they are added here.
  """

  def get_dataset(self, *args, passthrough_features=None, **kwargs):  # pylint: disable=W0221
    keep = sorted(set(passthrough_features or ()) | set(PASSTHROUGH))
    return super().get_dataset(*args, passthrough_features=keep, **kwargs)


def register_task(defn: DatasetDef, variant: str, fraction: float = 100,
                  vocab: str | None = None) -> str:
  """Registers one task (idempotent) and returns its name."""
  name = task_name(defn.name, variant, fraction, vocab)
  with _lock:
    if name in seqio.TaskRegistry.names():
      return name
    labelled = variant != "rationale"
    seqio.TaskRegistry.add(
        name,
        source=sources.RecordSource(defn.name, defn.loader, variant, defn.splits, fraction),
        preprocessors=[
            functools.partial(preprocessors.format_example, prefix=_PREFIX[variant],
                              target="cot" if variant == "cot" else
                              ("rationale" if variant == "rationale" else "label"),
                              task_kind=TASK_KIND[variant]),
            seqio.preprocessors.tokenize,
            seqio.CacheDatasetPlaceholder(),
            seqio.preprocessors.append_eos_after_trim,
        ],
        output_features=output_features(vocab),
        postprocess_fn=(postprocessors.make_postprocessor(defn.kind, defn.label_space,
                                                          cot=variant == "cot")
                        if labelled else None),
        metric_fns=[metrics_lib.metric_for(defn.kind)] if labelled else [],
    )
  return name


def register_mixture(defn: DatasetDef, method: str = "dsbs", fraction: float = 100,
                     label_rate: float = DEFAULT_RATE, vocab: str | None = None) -> str:
  """Registers one label+rationale mixture and its tasks (idempotent); returns its name."""
  name = mixture_name(defn.name, method, fraction, label_rate, vocab)
  with _lock:
    if name in seqio.MixtureRegistry.names():
      return name
    label_variant, rationale_variant = MIXTURES[method]
    label_task = register_task(defn, label_variant, fraction, vocab)
    rationale_task = register_task(defn, rationale_variant, fraction, vocab)
    rate = _check_rate(label_rate)
    seqio.MixtureRegistry.add(name, [(label_task, rate), (rationale_task, 1.0 - rate)],
                              mixture_cls=DsbsMixture)
  return name


def register_family(defn: DatasetDef, *, vocabs: Sequence[str | None] = EAGER_VOCABS,
                    fractions: Sequence[float] = fractions_lib.FRACTIONS,
                    rates: Sequence[float] = RATES) -> list[str]:
  """Registers every task and mixture of a dataset over the grid; returns the names."""
  names = []
  for voc in vocabs:
    for frac in fractions:
      for variant in TASK_VARIANTS:
        names.append(register_task(defn, variant, frac, voc))
      for method in MIXTURES:
        for rate in (DEFAULT_RATE, *rates):
          names.append(register_mixture(defn, method, frac, rate, voc))
  return names


def _unregister_dataset(name: str) -> None:
  pattern = re.compile(rf"^{re.escape(name)}_(?:{'|'.join(TASK_VARIANTS + tuple(MIXTURES))})"
                       r"(?:_pct[0-9.]+)?(?:_rate[0-9.]+)?(?:_byte|_t5|_vocab[0-9a-f]{8})?$")
  for mix in [m for m in seqio.MixtureRegistry.names() if pattern.match(m)]:
    seqio.MixtureRegistry.remove(mix)
  for task in [t for t in seqio.TaskRegistry.names() if pattern.match(t)]:
    seqio.TaskRegistry.remove(task)


def add_dataset(defn: DatasetDef, *, replace: bool = False, **grid) -> list[str]:
  """Adds a dataset and registers its family; `replace=True` re-registers an existing name."""
  with _lock:
    if defn.name in _DATASETS:
      if not replace:
        raise ValueError(f"dataset {defn.name!r} is already registered; pass replace=True")
      _unregister_dataset(defn.name)
      sources.forget(defn.name)
    _DATASETS[defn.name] = defn
    return register_family(defn, **grid)


@gin.configurable(module="dsbs.tasks")
def mixture(dataset: str, method: str = "dsbs", fraction: float = 100,
            label_rate: float = DEFAULT_RATE, vocab: str | None = None) -> str:
  """Registers (if needed) and returns the SeqIO name for one experiment cell.

  Usable from gin: `MIXTURE_OR_TASK_NAME = @dsbs.tasks.mixture()` with
  `dsbs.tasks.mixture.dataset = 'anli1'`, `.fraction = 10`, `.label_rate = 0.25`, ...

  Args:
    dataset: a registered dataset.
    method: a mixture ("dsbs", "dsbs_llm") or a task variant ("finetune", "distill", "cot",
      "label_gt", "label_llm", "rationale").
    fraction: percent of train, any value in (0, 100].
    label_rate: share of label-task examples in a mixture, in (0, 1); tasks need the default.
    vocab: "t5", "byte" or a SentencePiece .model path; None: $DSBS_VOCAB at import, else "t5".

  Returns:
    The task or mixture name.
  """
  defn = get_dataset_def(dataset)
  voc = vocab.strip() if vocab else None
  vocab_lib.get_vocabulary(_vocab_spec(voc))  # fail now on a bad spec, not at first read
  if method in MIXTURES:
    return register_mixture(defn, method, fraction, label_rate, voc)
  if method in TASK_VARIANTS:
    if float(label_rate) != DEFAULT_RATE:
      raise ValueError(f"label_rate applies to mixtures {tuple(MIXTURES)}, not to {method!r}")
    return register_task(defn, method, fraction, voc)
  raise ValueError(f"unknown method {method!r}; expected one of "
                   f"{tuple(MIXTURES) + TASK_VARIANTS}")
