"""TFDS builders for the released benchmarks (manual download) and for `arith`.

Registered names: `dsbs_anli1`, `dsbs_esnli`, `dsbs_cqa`, `dsbs_svamp` (manual_dir = the released
data dir) and `dsbs_arith` (generated). Each example is one canonical record: the text features
`id, input, label, teacher_label, rationale, parse_status` (a missing value is "") and `meta` as
a JSON string. Splits are `train`, `validation`, `test`; a split whose released file is missing
(anli1/esnli train in the partial copy) is skipped with a logged message.

Build:   python -m dsbs.data prepare --dataset=svamp --data_dir=<released> [--tfds_dir=<out>]
Read:    seqio.TfdsDataSource(tfds_name="dsbs_svamp:1.0.0", tfds_data_dir=<out>,
                              splits={"train": "train[:10%]"})
This is the only dsbs.data module that imports TensorFlow / TFDS.
"""
from __future__ import annotations

import json
import logging
from typing import Iterator

import tensorflow_datasets as tfds

from dsbs.data import benchmarks, datadir, released, synthetic
from dsbs.data.record import Example

TEXT_FIELDS = ("id", "input", "label", "teacher_label", "rationale", "parse_status", "meta")


def _features() -> tfds.features.FeaturesDict:
  return tfds.features.FeaturesDict({name: tfds.features.Text() for name in TEXT_FIELDS})


def to_feature_dict(ex: Example) -> dict[str, str]:
  """A canonical record as TFDS text features (None -> "", meta -> JSON)."""
  out = {name: getattr(ex, name) or "" for name in TEXT_FIELDS if name != "meta"}
  out["meta"] = json.dumps(ex.meta, ensure_ascii=False, sort_keys=True)
  return out


class _ReleasedBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Common body of the released-benchmark builders; subclasses set DATASET."""

  DATASET = ""
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Canonical dsbs records; parser and splits as of dsbs.data 1.0."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Download {released.RELEASE_URL}, unzip it, and pass the folder holding '<dataset>/' "
      "(anli1/, esnli/, cqa/, svamp/) as the manual dir: "
      "`tfds build --manual_dir=<folder>` or `python -m dsbs.data prepare --data_dir=<folder>`."
  )

  def _info(self) -> tfds.core.DatasetInfo:
    spec = benchmarks.get_spec(self.DATASET)
    return self.dataset_info_from_configs(
        description=spec.description + " With PaLM-540B chain-of-thought rationales, parsed by dsbs.",
        features=_features(),
        homepage="https://arxiv.org/abs/2305.02301",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    data_dir = str(dl_manager.manual_dir)
    have = released.available_splits(self.DATASET, data_dir)
    for split in benchmarks.SPLITS:
      if split not in have:
        logging.warning("%s: skipping split %r: its file is not in %s", self.name, split, data_dir)
    if not have:
      raise released.MissingSplitError(
          self.DATASET, "any", released.split_path(data_dir, self.DATASET, "test"))
    return {split: self._generate_examples(data_dir, split) for split in have}

  def _generate_examples(self, data_dir: str, split: str) -> Iterator[tuple[str, dict[str, str]]]:
    for ex in released.load_released(self.DATASET, split, data_dir):
      yield ex.id, to_feature_dict(ex)


class DsbsAnli1(_ReleasedBuilder):
  """ANLI round 1 with PaLM rationales."""

  DATASET = "anli1"


class DsbsEsnli(_ReleasedBuilder):
  """e-SNLI with PaLM rationales."""

  DATASET = "esnli"


class DsbsCqa(_ReleasedBuilder):
  """CommonsenseQA with PaLM rationales."""

  DATASET = "cqa"


class DsbsSvamp(_ReleasedBuilder):
  """SVAMP with PaLM rationales."""

  DATASET = "svamp"


class DsbsArith(tfds.core.GeneratorBasedBuilder):
  """The synthetic `arith` set with its programmatic teacher (default ArithConfig)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Default ArithConfig (seed 0, 5000/500/500)."}

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description="Synthetic multi-step arithmetic word problems with a noisy programmatic teacher.",
        features=_features(),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # generated, nothing to download
    return {split: self._generate_examples(split) for split in benchmarks.SPLITS}

  def _generate_examples(self, split: str) -> Iterator[tuple[str, dict[str, str]]]:
    for ex in synthetic.load_split(split):
      yield ex.id, to_feature_dict(ex)


BUILDERS = {"anli1": DsbsAnli1, "esnli": DsbsEsnli, "cqa": DsbsCqa, "svamp": DsbsSvamp,
            "arith": DsbsArith}


def tfds_name(dataset: str) -> str:
  """The registered TFDS name with version, e.g. "dsbs_svamp:1.0.0"."""
  builder = BUILDERS[dataset]
  return f"{builder.name}:{builder.VERSION}"


def prepare(dataset: str, *, tfds_dir: str | None = None, data_dir: str | None = None) -> str:
  """Builds the TFDS dataset into `tfds_dir` (TFDS default when None); returns its directory."""
  if dataset not in BUILDERS:
    raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(BUILDERS)}")
  builder = BUILDERS[dataset](data_dir=tfds_dir)
  config = None
  if dataset != "arith":
    config = tfds.download.DownloadConfig(manual_dir=datadir.resolve_data_dir(data_dir))
  builder.download_and_prepare(download_config=config)
  return str(builder.data_dir)
