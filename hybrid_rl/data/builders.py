"""TFDS builders: synthetic_math (generated), gsm8k and math (local JSONL via manual_dir).

They write ArrayRecord files and need no TensorFlow. All share one schema:
id, question, solution (worked, ending in \\boxed{}), answer (gold), family,
kind, level.

  builder = make_builder("synthetic_math", data_dir, seed=0)
  builder.download_and_prepare()
  source = builder.as_data_source()["train"]  # random access, len()

GSM8K / MATH read `manual_dir` (files named as in ../shared/data):
  builder = make_builder("gsm8k", data_dir, DIR)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=DIR))
Malformed rows are skipped, logged with their line numbers, and recorded in
`builder.info.metadata["skipped_rows"]`.
"""
import dataclasses
import hashlib
import logging
import os

import numpy as np
import tensorflow_datasets as tfds

from hybrid_rl import errors
from hybrid_rl.data import jsonl_sources
from hybrid_rl.data import synthetic_math

_FEATURES = dict(id=tfds.features.Text(), question=tfds.features.Text(),
                 solution=tfds.features.Text(), answer=tfds.features.Text(),
                 family=tfds.features.Text(), kind=tfds.features.Text(), level=np.int32)


def _info(builder, description: str) -> tfds.core.DatasetInfo:
  return tfds.core.DatasetInfo(builder=builder, description=description,
                               features=tfds.features.FeaturesDict(dict(_FEATURES)),
                               metadata=tfds.core.MetadataDict())


@dataclasses.dataclass
class SyntheticMathConfig(tfds.core.BuilderConfig):
  """Generation knobs; the config name encodes them so each setting caches apart."""
  name: str = ""
  seed: int = 0
  num_train: int = 4000
  num_validation: int = 400
  num_test: int = 400
  max_level: int = 3
  operand_scale: int = 9
  families: tuple[str, ...] = ("easy", "hard")
  direct_fraction: float = 0.0  # share of answer-only train solutions (synthetic_math.generate)
  hard_share: float = 0.5  # share of hard-family problems in every split (both families)
  chain_ops: int = 0  # operations per easy problem (0: the level's)
  hard_family: str = "solve"  # the hard family's kinds (synthetic_math.HARD_FAMILIES)

  def __post_init__(self):
    if not self.name:
      direct = f"_d{self.direct_fraction:g}" if self.direct_fraction else ""
      direct += f"_h{self.hard_share:g}" if self.hard_share != 0.5 else ""
      direct += f"_c{self.chain_ops}" if self.chain_ops else ""
      direct += f"_{self.hard_family}" if self.hard_family != "solve" else ""
      object.__setattr__(self, "name", f"s{self.seed}_n{self.num_train}-{self.num_validation}-{self.num_test}"
                   f"_l{self.max_level}_o{self.operand_scale}_{'-'.join(self.families)}{direct}")
    super().__post_init__() if hasattr(super(), "__post_init__") else None


class _OneLineBuild(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """TFDS announces a build in two bold lines of download sizes ("Unknown size" for data
  made locally); these builders say in one line what they build and where."""

  def _log_download_bytes(self) -> None:
    print(f"building {self.name} ({self.builder_config.name}) in {self.data_dir}", flush=True)

  def _log_download_done(self) -> None:
    pass


class SyntheticMath(_OneLineBuild, skip_registration=True):
  """Procedurally generated easy- and hard-to-verify math problems."""
  # 1.1.0: fixed hash shares (synthetic_math.HASH_FRACTIONS) and a train stream.
  # 1.2.0: answer forms the numeric rule accepts (no unreduced fractions, no \sqrt11).
  VERSION = tfds.core.Version("1.2.0")
  BUILDER_CONFIGS = [SyntheticMathConfig(name="default")]

  def _info(self):
    return _info(self, __doc__)

  def _split_generators(self, dl_manager):
    del dl_manager
    c = self.builder_config
    sizes = {"train": c.num_train, "validation": c.num_validation, "test": c.num_test}
    return {split: self._generate_examples(split, n, synthetic_math.HASH_FRACTIONS)
            for split, n in sizes.items()}

  def _generate_examples(self, split, num, fractions):
    c = self.builder_config
    for key, p in synthetic_math.generate(split, num, seed=c.seed, fractions_by_split=fractions,
                                          families=tuple(c.families), max_level=c.max_level,
                                          operand_scale=c.operand_scale,
                                          direct_fraction=c.direct_fraction,
                                          hard_share=c.hard_share, chain_ops=c.chain_ops,
                                          hard_family=c.hard_family):
      yield key, {"id": key, "question": p.question, "solution": p.solution,
                  "answer": p.answer, "family": p.family, "kind": p.kind, "level": p.level}


class _JsonlBuilder(_OneLineBuild, skip_registration=True):
  """Reads <manual_dir>/<file> per split; train loses the questions test holds."""
  # 1.1.0: train questions that are also test questions are dropped.
  VERSION = tfds.core.Version("1.1.0")
  SPLIT_FILES: dict[str, str] = {}
  PARSE_ROW = None

  def _split_generators(self, dl_manager):
    manual_dir = str(dl_manager.manual_dir)
    found = {split: os.path.join(manual_dir, f) for split, f in self.SPLIT_FILES.items()
             if os.path.exists(os.path.join(manual_dir, f))}
    if not found:
      raise FileNotFoundError(f"{self.name}: none of {sorted(self.SPLIT_FILES.values())} "
                              f"in manual_dir {manual_dir}")
    parsed = {split: jsonl_sources.read_jsonl(path, type(self).PARSE_ROW)
              for split, path in found.items()}
    self.info.metadata["skipped_rows"] = {
        split: [[line, reason] for line, reason in skipped]
        for split, (_, skipped) in parsed.items()}
    if "train" in parsed and "test" in parsed:
      kept, dropped = jsonl_sources.drop_test_overlap(parsed["train"][0], parsed["test"][0])
      if dropped and not kept:
        raise errors.ConfigError(
            f"config.data.manual_dir={manual_dir!r}: every train question of "
            f"{self.SPLIT_FILES['train']} ({len(dropped)}) is also a test question; expected "
            "a train file of other problems")
      parsed["train"] = (kept, parsed["train"][1])
      self.info.metadata["train_dropped_as_test"] = dropped
      if dropped:
        print(f"{self.name}: {len(dropped)} train question(s) are also test questions "
              f"(normalized text); dropped from train ({', '.join(dropped[:5])}"
              f"{', ...' if len(dropped) > 5 else ''})", flush=True)
    return {split: self._generate_examples(examples) for split, (examples, _) in parsed.items()}

  def _generate_examples(self, examples):
    for i, example in enumerate(examples):
      yield f"{i:06d}", example


class Gsm8k(_JsonlBuilder):
  """GSM8K grade-school word problems (gold: the '#### n' answer)."""
  MANUAL_DOWNLOAD_INSTRUCTIONS = "Place gsm8k_train.jsonl and gsm8k_test.jsonl in manual_dir."
  SPLIT_FILES = {"train": "gsm8k_train.jsonl", "test": "gsm8k_test.jsonl"}
  PARSE_ROW = staticmethod(jsonl_sources.parse_gsm8k_row)

  def _info(self):
    return _info(self, __doc__)


class Math(_JsonlBuilder):
  """MATH / MATH500 competition problems (gold: 'answer' or the last \\boxed{})."""
  MANUAL_DOWNLOAD_INSTRUCTIONS = "Place math500_test.jsonl (and optionally math_train.jsonl) in manual_dir."
  SPLIT_FILES = {"train": "math_train.jsonl", "test": "math500_test.jsonl"}
  PARSE_ROW = staticmethod(jsonl_sources.parse_math_row)

  def _info(self):
    return _info(self, __doc__)


BUILDERS = {"synthetic_math": SyntheticMath, "gsm8k": Gsm8k, "math": Math}
# The splits each dataset has (what config split specs may name).
SPLITS = {"synthetic_math": tuple(synthetic_math.HASH_FRACTIONS), "gsm8k": tuple(Gsm8k.SPLIT_FILES),
          "math": tuple(Math.SPLIT_FILES)}


class _QuietCustomConfig(logging.Filter):
  """Synthetic-math configs are made from the run's config, never registered, so
  TFDS's "Using custom data configuration" warning would repeat at every stage."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Using custom data configuration")


logging.getLogger("absl").addFilter(_QuietCustomConfig())


def source_digest(builder_cls, manual_dir: str) -> str:
  """sha256 (12 hex digits) of the source files a JSONL builder reads from manual_dir."""
  digest = hashlib.sha256()
  for split, filename in sorted(builder_cls.SPLIT_FILES.items()):
    path = os.path.join(manual_dir, filename)
    if os.path.exists(path):
      digest.update(f"{split}:{filename}\n".encode())
      with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
          digest.update(block)
  return digest.hexdigest()[:12]


def make_builder(name: str, data_dir: str, manual_dir: str | None = None,
                 **config) -> tfds.core.GeneratorBasedBuilder:
  """A builder writing ArrayRecord (TensorFlow-free). `config`: SyntheticMathConfig fields.

  A JSONL dataset is built once per content of its source files (the builder
  config is named src_<digest>), so editing or replacing them in manual_dir
  builds it again instead of reusing the old build.
  """
  if name not in BUILDERS:
    raise ValueError(f"unknown dataset {name!r} (choose {', '.join(BUILDERS)})")
  kwargs = dict(data_dir=data_dir, file_format="array_record")
  if name == "synthetic_math":
    kwargs["config"] = SyntheticMathConfig(**config)
  elif config:
    raise ValueError(f"dataset {name!r} takes no config fields, got {sorted(config)}")
  elif manual_dir is not None:
    digest = source_digest(BUILDERS[name], manual_dir)
    kwargs["config"] = tfds.core.BuilderConfig(name=f"src_{digest}")
  return BUILDERS[name](**kwargs)
