"""Value checks on a resolved ConfigDict, run before any model is built.

ml_collections already rejects unknown fields and wrong types on override;
this module rejects values that have the right type but no meaning (a negative
batch size, alpha outside (0, 1], an unknown schedule name, a non-finite
float, heads that do not divide, an unknown data family or split, a batch
that does not split into grad_accum_steps micro-batches) and, in
`check_paths`, paths that cannot be what they are meant to be (a missing
checkpoint, a text file named .gguf, an unfinished stage directory). Every
failure is one line that names the field and what is expected.

Rules are keyed by a field's leaf name (applied wherever that name occurs, so
config blocks added later are covered) or by its full dotted path.
"""
from typing import Any, Callable

import json
import math
import os
import re

import ml_collections

from hybrid_rl.adaptive import dynamic_sampling
from hybrid_rl.adaptive import successive_elimination as se
from hybrid_rl.algorithms import policy_gradient
from hybrid_rl.data import builders
from hybrid_rl.data import prompts
from hybrid_rl.data import synthetic_math
from hybrid_rl.errors import ConfigError
from hybrid_rl.models import hf_io
from hybrid_rl.models import transformer
from hybrid_rl.rewards import hero
from hybrid_rl.rewards import verifiers
from hybrid_rl.sampling import continuous
from hybrid_rl.sampling import rollouts
from hybrid_rl.train import distill_stage
from hybrid_rl.train import objectives
from hybrid_rl.train import optim
from hybrid_rl.train import stage_io
from hybrid_rl.train import stage_runs


MIN_VOCAB_SIZE = 258  # 256 byte tokens + <pad> and <eos> (data/tokenizer.py)


def _positive(v):
  return v > 0


def _non_negative(v):
  return v >= 0


def _unit_open_closed(v):  # (0, 1]
  return 0 < v <= 1


def _one_of(*choices):
  check = lambda v: v in choices
  return check, f"must be one of {', '.join(map(repr, choices))}"


# leaf name -> (check, requirement)
_LEAF_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seed": (lambda v: 0 <= v < 2**32, "must be in [0, 2^32)"),
    "round_size": (_positive, "must be > 0"),
    "max_rounds": (_positive, "must be > 0"),
    "num_train": (_positive, "must be > 0"),
    "num_validation": (_positive, "must be > 0"),
    "num_test": (_positive, "must be > 0"),
    "num_heads": (_positive, "must be > 0"),
    "num_kv_heads": (_positive, "must be > 0"),
    "head_dim": (_positive, "must be > 0"),
    "intermediate_size": (_positive, "must be > 0"),
    "max_position_embeddings": (_positive, "must be > 0"),
    "batch_size": (_positive, "must be > 0"),
    "chunks": (_positive, "must be > 0"),
    "prompt_batch_size": (_positive, "must be > 0"),
    "micro_batch_size": (_positive, "must be > 0"),
    "eval_batch_size": (_positive, "must be > 0"),
    "steps": (_non_negative, "must be >= 0"),
    "num_samples": (_positive, "must be > 0"),
    "group_size": (_positive, "must be > 0"),
    "max_new_tokens": (_positive, "must be > 0"),
    "max_prompt_len": (_positive, "must be > 0"),
    "checkpoint_every": (_positive, "must be > 0"),
    "keep_checkpoints": (_positive, "must be > 0"),
    "log_every": (_positive, "must be > 0"),
    "learning_rate": (_non_negative, "must be >= 0"),
    "warmup_steps": (_non_negative, "must be >= 0"),
    "weight_decay": (_non_negative, "must be >= 0"),
    "grad_clip_norm": (_non_negative, "must be >= 0 (0 disables clipping)"),
    "b1": (lambda v: 0 <= v < 1, "must be in [0, 1)"),
    "b2": (lambda v: 0 <= v < 1, "must be in [0, 1)"),
    "eps": (_positive, "must be > 0"),
    "direct_fraction": (lambda v: 0 <= v < 1, "must be in [0, 1)"),
    "hard_share": (lambda v: 0 < v < 1, "must be in (0, 1); data.synthetic.families picks one family"),
    "chain_ops": (_non_negative, "must be >= 0 (0: the level's)"),
    "temperature": (_non_negative, "must be >= 0 (0 is greedy)"),
    "top_p": (_unit_open_closed, "must be in (0, 1]"),
    "top_k": (_non_negative, "must be >= 0 (0 disables top-k)"),
    "alpha": (_unit_open_closed, "must be in (0, 1]"),
    "beta": (_unit_open_closed, "must be in (0, 1]"),
    "epsilon_low": (_non_negative, "must be >= 0"),
    "epsilon_high": (_non_negative, "must be >= 0"),
    "kl_coef": (_non_negative, "must be >= 0"),
    "timeout_s": (_positive, "must be > 0"),
    "num_workers": (_positive, "must be > 0"),
    "dim": (_positive, "must be > 0"),
    "noise": (_non_negative, "must be >= 0"),
    "step_sleep_s": (_non_negative, "must be >= 0"),
    "num_seeds": (_positive, "must be > 0"),
    "seed_processes": (_positive, "must be > 0 (1: seeds one after the other)"),
    "grad_accum_steps": (_positive, "must be > 0"),
    "micro_batch_rows": (_non_negative, "must be >= 0 (0: no cap)"),
    "rm_batch_rows": (_positive, "must be > 0"),
    "attention_chunk": (_non_negative, "must be >= 0 (0: attention over all queries at once)"),
    "logits_chunk": (_non_negative, "must be >= 0 (0: all response positions at once)"),
    "trim_multiple": (_non_negative, "must be >= 0 (0 keeps the padded width)"),
    "epochs": (_positive, "must be > 0"),
    "max_consecutive_skips": (_non_negative, "must be >= 0 (0 never stops)"),
    "minibatches": (_positive, "must be > 0"),
    "hidden_size": (_positive, "must be > 0"),
    "num_layers": (_positive, "must be > 0"),
    "vocab_size": (lambda v: v >= MIN_VOCAB_SIZE, f"must be >= {MIN_VOCAB_SIZE} (a trained "
                   "tokenizer holds the 256 bytes and its special tokens before any merge)"),
    "every": (_non_negative, "must be >= 0 (0 disables)"),
    "samples_per_prompt": (_positive, "must be > 0"),
    "max_examples": (_positive, "must be > 0"),
}

# full dotted path -> (check, requirement); the choices are the owning modules'.
_PATH_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "optim.schedule": _one_of(*optim.SCHEDULES),
    "data.name": _one_of(*builders.BUILDERS),
    "data.prompt_style": _one_of(*prompts.STYLES),
    "rl.verifier": _one_of(*verifiers.VERIFIERS),
    "rl.std_mode": _one_of(*policy_gradient.STD_MODES),
    "rl.pg.kl_estimator": _one_of(*policy_gradient.KL_ESTIMATORS),
    "rl.pg.aggregation": _one_of(*policy_gradient.AGGREGATIONS),
    "rl.pg.importance_level": _one_of(*policy_gradient.IMPORTANCE_LEVELS),
    "rl.advantage": _one_of(*policy_gradient.ESTIMATORS),
    "rl.dynamic.max_batches": (_positive, "must be > 0 (prompt batches drawn per step)"),
    "sampling.engine": _one_of(*rollouts.ENGINES),
    "sampling.slots": (_non_negative, "must be >= 0 (0: every request of a call at once)"),
    "sampling.decode_steps": (_positive, "must be > 0 (decode steps per host check)"),
    "sampling.read_buckets": (_positive, "must be > 0 (cache lengths compiled)"),
    "sampling.active_buckets": (_positive, "must be > 0 (slot counts compiled)"),
    "sampling.kv_layout": _one_of(*continuous.KV_LAYOUTS),
    "sampling.page_size": (_positive, "must be > 0 (tokens per KV page)"),
    "log.samples_every": (_non_negative, "must be >= 0 (0: no rollouts in samples.jsonl)"),
    "log.samples_rows": (_positive, "must be > 0 (responses written per logged step)"),
    "model.param_dtype": _one_of(*transformer.DTYPES),
    "model.remat": _one_of(*transformer.REMAT_POLICIES),
    "model.decode_attention": _one_of(*transformer.DECODE_ATTENTION),
    "model.train_attention": _one_of(*transformer.TRAIN_ATTENTION),
    "model.compute_dtype": _one_of(*transformer.DTYPES),
    "data.synthetic.max_level": (lambda v: 1 <= v <= 3, "must be in 1..3"),
    "data.synthetic.hard_family": _one_of(*synthetic_math.HARD_FAMILIES),
    "reward_model.loss": _one_of(*objectives.REWARD_LOSSES),
    "rl.sampling": _one_of(*se.MODES, dynamic_sampling.MODE),
    "reward.mode": _one_of(*hero.REWARD_MODES),
    "reward.dense_range": _one_of(*hero.DENSE_RANGES),
    "reward.placement": _one_of(*hero.PLACEMENTS),
    "reward_model.holdout_fraction": (lambda v: 0 < v < 1, "must be in (0, 1)"),
    "distill.rollouts": _one_of(*distill_stage.ROLLOUT_KINDS),
    "distill.kind": _one_of(*objectives.DISTILL_LOSSES),
    "distill.opd_clip_epsilon": (lambda v: 0 <= v < 1, "must be in [0, 1) (0 disables)"),
    "pretrained.sampled_k": (_positive, "must be > 0 (responses per problem at T=1)"),
    "pretrained.bootstrap": (lambda v: v >= 100, "must be >= 100 (bootstrap resamples)"),
    "parallel.mesh_shape": (lambda v: isinstance(v, (tuple, list)) and len(v) == 3 and all(
        isinstance(x, int) and not isinstance(x, bool) for x in v),
                            "expected three integers (data, fsdp, tensor), e.g. (-1, 1, 1)"),
}


def _leaves(config: ml_collections.ConfigDict, prefix: str = ""):
  for key, value in config.items():
    path = f"{prefix}{key}"
    if isinstance(value, ml_collections.ConfigDict):
      yield from _leaves(value, path + ".")
    else:
      yield path, key, value


def _group_size(config: ml_collections.ConfigDict) -> int:
  """Responses per prompt in a GRPO update: sampling.num_samples, or rl.ada.n under
  Reinforce-Ada sampling."""
  fixed = config.rl.get("sampling", "fixed") in ("fixed", dynamic_sampling.MODE)
  return config.sampling.num_samples if fixed else config.rl.ada.n


def _cross_field_checks(config: ml_collections.ConfigDict) -> None:
  data = config.get("data")
  if data is not None and data.get("name") in ("gsm8k", "math") and not data.get("manual_dir"):
    raise ConfigError(f"config.data.manual_dir='': dataset {data.name!r} reads local JSONL files; "
                      "set it to their directory (e.g. ../shared/data)")
  reward = config.get("reward")
  if reward is not None and reward.mode != "verifier" and not reward.rm_from:
    raise ConfigError(f"config.reward.rm_from='': reward mode {reward.mode!r} needs a reward "
                      "model (a reward_model stage workdir)")
  if config.get("sampling") is not None and config.get("rl") is not None:
    if _group_size(config) * config.train.batch_size % config.rl.minibatches:
      raise ConfigError(f"config.rl.minibatches={config.rl.minibatches}: must divide "
                        "train.batch_size x sampling.num_samples")


def _switch_checks(config: ml_collections.ConfigDict) -> None:
  """Combinations in which a switch would silently do nothing."""
  reward, rl = config.get("reward"), config.get("rl")
  if (config.get("stage") == "grpo" and rl is not None and config.get("sampling") is not None
      and _group_size(config) < 2):
    fixed = rl.get("sampling", "fixed") in ("fixed", dynamic_sampling.MODE)
    field = "sampling.num_samples" if fixed else "rl.ada.n"
    raise ConfigError(f"config.{field}={_group_size(config)}: GRPO's baseline is the mean of a "
                      "prompt's group, so with one response every advantage is 0 and nothing "
                      "trains; use >= 2")
  if (reward is not None and rl is not None and reward.mode == "hero"
      and reward.variance_weighting and reward.placement == "reward"
      and rl.std_mode == "group"):
    raise ConfigError("config.reward.placement='reward' with rl.std_mode='group': the variance "
                      "weight is constant within a group, so group std normalization cancels it; "
                      "use reward.placement=advantage, or rl.std_mode=none or batch")
  stage, train, evaluation = config.get("stage"), config.get("train"), config.get("eval")
  # Single stages other than grpo neither sort rows by length nor evaluate while training.
  if stage in ("sft", "reward_model", "distill", "eval"):
    if train is not None and train.get("length_sorted"):
      raise ConfigError(f"config.train.length_sorted=True with stage={stage!r}: only grpo "
                        "stages sort rows by length (set it False)")
    if evaluation is not None and evaluation.get("every"):
      raise ConfigError(f"config.eval.every={evaluation.every} with stage={stage!r}: only grpo "
                        "stages evaluate while they train (set it 0; --config.stage=eval "
                        "evaluates a finished stage)")
  distill = config.get("distill")
  if distill is not None and distill.get("opd_clip_epsilon") and distill.kind != "opd_pg":
    raise ConfigError(f"config.distill.opd_clip_epsilon={distill.opd_clip_epsilon} with "
                      f"distill.kind={distill.kind!r}: the ratio clip applies to opd_pg only "
                      "(set it to 0)")


def _dataclass_checks(config: ml_collections.ConfigDict) -> None:
  """The settings objects the stages build from config blocks, built here first so that
  their own checks (one place for each rule) fail before any model is built."""
  rl = config.get("rl")
  if rl is not None and "ada" in rl and rl.get("sampling", "fixed") in se.MODES:
    try:
      se.AdaConfig(mode=rl.get("sampling", "fixed"), **rl.ada.to_dict())
    except (TypeError, ValueError) as e:
      raise ConfigError(f"config.rl.ada: {e}") from e


def _stage_checks(config: ml_collections.ConfigDict) -> None:
  """What a stage needs that no single field says."""
  stage, rl, reward = config.get("stage"), config.get("rl"), config.get("reward")
  if (stage == "grpo" and rl is not None
      and rl.get("sampling", "fixed") in ("ada_pos", "ada_balance")
      and reward is not None and reward.mode != "verifier"):
    raise ConfigError(f"config.rl.sampling={rl.sampling!r} with reward.mode={reward.mode!r}: "
                      "Reinforce-Ada's rounds use verifier rewards only for now (dynamic "
                      "sampling composes with reward-model rewards)")
  if stage == "grpo" and rl is not None and rl.get("advantage", "grpo") != "grpo":
    if rl.get("sampling", "fixed") in ("ada_pos", "ada_balance"):
      raise ConfigError(f"config.rl.advantage={rl.advantage!r} with rl.sampling={rl.sampling!r}: "
                        "Reinforce-Ada's advantages take its pool's statistics as baseline; "
                        "use rl.advantage=grpo (or rl.sampling=fixed or dynamic)")
    if rl.std_mode != "none":
      raise ConfigError(f"config.rl.advantage={rl.advantage!r} with rl.std_mode="
                        f"{rl.std_mode!r}: {rl.advantage} has its own baseline and scale; set "
                        "rl.std_mode=none")
  train = config.get("train")
  if (stage == "grpo" and train is not None and train.get("length_sorted")
      and train.micro_batch_rows <= 0):
    raise ConfigError("config.train.length_sorted=True with micro_batch_rows=0: set the "
                      "rows of each length-sorted micro-batch (e.g. 8)")
  distill = config.get("distill")
  if stage == "distill" and distill is not None:
    allowed = distill_stage.KINDS_BY_ROLLOUTS[distill.rollouts]
    if distill.kind not in allowed:
      raise ConfigError(f"config.distill.kind={distill.kind!r} with rollouts="
                        f"{distill.rollouts!r}: choose {', '.join(allowed)}")
    if not distill.teacher_from:
      raise ConfigError("config.distill.teacher_from='': set the teacher (a stage workdir, HF "
                        "directory or .gguf file)")


_SPLIT = re.compile(r"^(\w+)(\[[^\[\]]*\])?$")


def _families(text: str) -> list[str]:
  return [f for f in text.split(",") if f]


def _read_splits(config: ml_collections.ConfigDict) -> list[tuple[str, str]]:
  """(field, split spec) of every split the config's stage reads."""
  data = config.data
  splits = [("data.train_split", data.get("train_split"))]
  stage, evaluation = config.get("stage"), config.get("eval")
  # Single stages that never evaluate leave eval.split unread (experiments do read it).
  no_eval = stage in ("toy", "sft", "reward_model", "distill") or (
      stage == "grpo" and evaluation is not None and not evaluation.get("every"))
  if evaluation is not None and not no_eval:
    splits.append(("eval.split", evaluation.get("split")))
  if config.get("reward_model") is not None:
    splits.append(("reward_model.split", config.reward_model.get("split")))
  return splits


def _data_checks(config: ml_collections.ConfigDict) -> None:
  data = config.get("data")
  if data is None or data.get("name") not in builders.SPLITS:
    return
  synthetic = data.name == "synthetic_math"
  available = (_families(data.synthetic.families) if synthetic else [data.name])
  if synthetic:
    unknown = [f for f in available if f not in synthetic_math.FAMILIES]
    if unknown or not available:
      raise ConfigError(f"config.data.synthetic.families={data.synthetic.families!r}: expected a "
                        f"comma list of {', '.join(synthetic_math.FAMILIES)}")
  wanted = _families(data.get("train_families", ""))
  if any(f not in available for f in wanted):
    raise ConfigError(f"config.data.train_families={data.train_families!r}: expected a comma list "
                      f"of the dataset's families ({', '.join(available)})")
  for path, split in _read_splits(config):
    match = _SPLIT.match(split or "")
    if not match or match.group(1) not in builders.SPLITS[data.name]:
      raise ConfigError(f"config.{path}={split!r}: expected a split of {data.name} "
                        f"({', '.join(builders.SPLITS[data.name])}), optionally sliced as in "
                        "train[:50%]")


def _model_checks(config: ml_collections.ConfigDict) -> None:
  model = config.get("model")
  if model is None or "num_heads" not in model:
    return
  if model.num_heads % model.num_kv_heads:
    raise ConfigError(f"config.model.num_heads={model.num_heads}: must be a multiple of "
                      f"model.num_kv_heads={model.num_kv_heads}")
  data, sampling = config.get("data"), config.get("sampling")
  # A stage that builds config.model (experiment scripts carry their own model blocks).
  builds = config.get("stage") in ("sft", "grpo", "distill", "reward_model")
  if builds and not config.get("init_from") and data is not None and sampling is not None:
    needed = data.max_prompt_len + sampling.max_new_tokens
    if needed > model.max_position_embeddings:
      raise ConfigError(f"config.data.max_prompt_len={data.max_prompt_len} + sampling."
                        f"max_new_tokens={sampling.max_new_tokens} = {needed}: must be <= "
                        f"model.max_position_embeddings={model.max_position_embeddings}")


def _accumulation_checks(config: ml_collections.ConfigDict) -> None:
  """The rows of one update must split into train.grad_accum_steps micro-batches."""
  train = config.get("train")
  if train is None or "grad_accum_steps" not in train:
    return
  rows, what = train.batch_size, "train.batch_size"
  stage, rl = config.get("stage"), config.get("rl")
  if stage == "grpo" and rl is not None:
    rows = train.batch_size * _group_size(config) // rl.minibatches
    what = "train.batch_size x group size / rl.minibatches"
  elif stage == "distill":
    rows = train.batch_size * config.sampling.num_samples
    what = "train.batch_size x sampling.num_samples"
  if rows % train.grad_accum_steps:
    raise ConfigError(f"config.train.grad_accum_steps={train.grad_accum_steps}: must divide "
                      f"the {rows} rows of an update ({what})")


def _exported_num_labels(path: str) -> int | None:
  """The head of a finished stage's export (0: LM head, a policy; > 0: a scalar head, a
  reward model), or None for a checkpoint that is not a stage export."""
  meta = stage_io.export_meta_path(path)
  if meta:
    with open(meta) as f:
      return int(json.load(f)["model"].get("num_labels", 0))
  hf_config = os.path.join(os.path.expanduser(path), "config.json")
  if os.path.isfile(hf_config):  # a Hugging Face directory: its head is in its architecture
    with open(hf_config) as f:
      archs = (json.load(f) or {}).get("architectures") or []
    if any(a in hf_io.SUPPORTED_ARCHITECTURES for a in archs):
      return 1 if any(a.endswith("ForSequenceClassification") for a in archs) else 0
  return None


def _role_checks(config: ml_collections.ConfigDict) -> None:
  """A chained stage's checkpoint has the head its role needs: policy stages start from
  and distill from LM heads, a reward comes from a scalar head."""
  wants_policy = ["distill.teacher_from"]
  if config.get("stage") in ("sft", "grpo", "distill", "eval"):
    wants_policy.append("init_from")
  for field in wants_policy:
    value = stage_runs.config_field(config, field)
    if value and (_exported_num_labels(value) or 0) > 0:
      raise ConfigError(f"config.{field}={value!r}: is a reward model (a scalar head); a "
                        f"{config.get('stage')} stage needs a policy (a stage with an LM head)")
  rm = stage_runs.config_field(config, "reward.rm_from")
  if rm and _exported_num_labels(rm) == 0 and (config.get("reward") or {}).get("mode") != "verifier":
    raise ConfigError(f"config.reward.rm_from={rm!r}: is a policy (an LM head); expected a "
                      "reward_model stage's workdir or a Hugging Face "
                      "*ForSequenceClassification directory")


def check_paths(config: ml_collections.ConfigDict) -> None:
  """The files a config names exist and are what they should be (user-given paths only:
  experiment scripts fill stage paths in as their stages finish)."""
  for field in stage_runs.UPSTREAM_FIELDS:
    value = stage_runs.config_field(config, field)
    if value:
      problem = stage_io.checkpoint_problem(value)
      if problem:
        raise ConfigError(f"config.{field}={value!r}: {problem}")
  _role_checks(config)
  tokenizer = stage_runs.config_field(config, "tokenizer.path")
  if tokenizer and not os.path.exists(os.path.expanduser(tokenizer)):
    raise ConfigError(f"config.tokenizer.path={tokenizer!r}: does not exist (expected a "
                      "tokenizer.json, a .gguf file or a Hugging Face directory; '' trains one)")
  if tokenizer:
    problem = _tokenizer_problem(os.path.expanduser(tokenizer))
    if problem:
      raise ConfigError(f"config.tokenizer.path={tokenizer!r}: {problem}")
  data = config.get("data")
  sizes = None
  if data is not None and data.get("name") in ("gsm8k", "math") and data.get("manual_dir"):
    from hybrid_rl.data import jsonl_sources  # pylint: disable=g-import-not-at-top
    builder = builders.BUILDERS[data.name]
    files = sorted(builder.SPLIT_FILES.values())
    folder = os.path.expanduser(data.manual_dir)
    if not os.path.isdir(folder) or not any(os.path.exists(os.path.join(folder, f))
                                            for f in files):
      raise ConfigError(f"config.data.manual_dir={data.manual_dir!r}: expected a directory "
                        f"holding {' or '.join(files)}")
    sizes = {}
    for split, name in builder.SPLIT_FILES.items():
      path = os.path.join(folder, name)
      if os.path.exists(path):
        sizes[split] = jsonl_sources.count_valid_rows(path, builder.PARSE_ROW)
        if not sizes[split]:
          raise ConfigError(f"config.data.manual_dir={data.manual_dir!r}: {name} holds no valid "
                            f"row (expected JSON objects with the {data.name} fields)")
  elif data is not None and data.get("name") == "synthetic_math":
    s = data.synthetic
    sizes = {"train": s.num_train, "validation": s.num_validation, "test": s.num_test}
  if sizes:
    _empty_slice_checks(config, sizes)


def _empty_slice_checks(config: ml_collections.ConfigDict, sizes: dict[str, int]) -> None:
  """Every split a stage reads selects at least one example."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  class _Info:  # what ReadInstruction.to_absolute reads of a split
    def __init__(self, n):
      self.num_examples = n
  for path, spec in _read_splits(config):
    try:
      parts = tfds.core.ReadInstruction.from_spec(spec).to_absolute(
          {k: _Info(v) for k, v in sizes.items()})
    except (ValueError, AssertionError, KeyError) as e:
      raise ConfigError(f"config.{path}={spec!r}: {str(e).splitlines()[0][:200]}") from e
    count = sum(len(range(sizes[p.splitname])[slice(p.from_, p.to)]) for p in parts)
    if not count:
      raise ConfigError(f"config.{path}={spec!r}: selects no example of the "
                        f"{sizes[parts[0].splitname]} in that split")


def _tokenizer_problem(path: str) -> str | None:
  """Why `path` is not a tokenizer (a cheap look: a tokenizer.json is parsed, nothing else)."""
  if path.endswith(".json") and os.path.isfile(path):
    from tokenizers import Tokenizer  # pylint: disable=g-import-not-at-top
    try:
      Tokenizer.from_file(path)
    except Exception as e:  # pylint: disable=broad-except
      return f"is not a tokenizer.json ({str(e).splitlines()[0][:120]})"
  if os.path.isdir(path) and not any(os.path.exists(os.path.join(path, f)) for f in
                                     ("tokenizer.json", "tokenizer_config.json")):
    return "is a directory without tokenizer.json or tokenizer_config.json"
  return None


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first field whose value is invalid."""
  for path, leaf, value in _leaves(config):
    if isinstance(value, float) and not math.isfinite(value):
      raise ConfigError(f"config.{path}={value!r}: must be a finite number")
    rule = _PATH_RULES.get(path) or _LEAF_RULES.get(leaf)
    if rule is None or value is None:
      continue
    check, requirement = rule
    try:
      ok = check(value)
    except TypeError:
      ok = False
    if not ok:
      raise ConfigError(f"config.{path}={value!r}: {requirement}")
  _cross_field_checks(config)
  _switch_checks(config)
  _dataclass_checks(config)
  _stage_checks(config)
  _data_checks(config)
  _model_checks(config)
  _accumulation_checks(config)
