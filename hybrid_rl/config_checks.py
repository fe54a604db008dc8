"""Value checks on a resolved ConfigDict, run before any model is built.

ml_collections already rejects unknown fields and wrong types on override;
this module rejects values that have the right type but no meaning (a negative
batch size, alpha outside (0, 1], an unknown schedule name). Every failure is
one line that names the field.

Rules are keyed by a field's leaf name (applied wherever that name occurs, so
config blocks added later are covered) or by its full dotted path.
"""
from typing import Any, Callable

import ml_collections


class ConfigError(ValueError):
  """A config field holds an invalid value."""


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
    "grad_accum_steps": (_positive, "must be > 0"),
    "trim_multiple": (_non_negative, "must be >= 0 (0 keeps the padded width)"),
    "epochs": (_positive, "must be > 0"),
    "minibatches": (_positive, "must be > 0"),
    "hidden_size": (_positive, "must be > 0"),
    "num_layers": (_positive, "must be > 0"),
    "vocab_size": (_positive, "must be > 0"),
    "every": (_non_negative, "must be >= 0 (0 disables)"),
    "samples_per_prompt": (_positive, "must be > 0"),
    "max_examples": (_positive, "must be > 0"),
}

# full dotted path -> (check, requirement)
_PATH_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "optim.schedule": _one_of("constant", "cosine"),
    "data.name": _one_of("synthetic_math", "gsm8k", "math"),
    "data.prompt_style": _one_of("plain", "chat"),
    "rl.verifier": _one_of("equivalence", "strict"),
    "rl.std_mode": _one_of("group", "batch", "none"),
    "rl.pg.kl_estimator": _one_of("k1", "k2", "k3"),
    "rl.pg.aggregation": _one_of("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"),
    "model.param_dtype": _one_of("float32", "bfloat16"),
    "model.compute_dtype": _one_of("float32", "bfloat16"),
    "data.synthetic.max_level": (lambda v: 1 <= v <= 3, "must be in 1..3"),
    "reward_model.loss": _one_of("pointwise", "bradley_terry"),
    "rl.sampling": _one_of("fixed", "ada_pos", "ada_balance"),
    "reward.mode": _one_of("verifier", "rm", "naive_sum", "hero"),
    "reward.dense_range": _one_of("none", "neg", "pos", "both"),
    "reward.placement": _one_of("advantage", "reward"),
    "reward_model.holdout_fraction": (lambda v: 0 < v < 1, "must be in (0, 1)"),
}


def _leaves(config: ml_collections.ConfigDict, prefix: str = ""):
  for key, value in config.items():
    path = f"{prefix}{key}"
    if isinstance(value, ml_collections.ConfigDict):
      yield from _leaves(value, path + ".")
    else:
      yield path, key, value


def _cross_field_checks(config: ml_collections.ConfigDict) -> None:
  data = config.get("data")
  if data is not None and data.get("name") in ("gsm8k", "math") and not data.get("manual_dir"):
    raise ConfigError(f"config.data.manual_dir='': dataset {data.name!r} reads local JSONL files; "
                      "set it to their directory (e.g. ../shared/data)")
  reward = config.get("reward")
  if reward is not None and reward.mode != "verifier" and not reward.rm_from:
    raise ConfigError(f"config.reward.rm_from='': reward mode {reward.mode!r} needs a reward "
                      "model (a reward_model stage workdir)")
  sampling = config.get("sampling")
  if sampling is not None and config.get("rl") is not None:
    group = sampling.num_samples if config.rl.get("sampling", "fixed") == "fixed" else config.rl.ada.n
    if group * config.train.batch_size % config.rl.minibatches:
      raise ConfigError(f"config.rl.minibatches={config.rl.minibatches}: must divide "
                        "train.batch_size x sampling.num_samples")


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first field whose value is invalid."""
  for path, leaf, value in _leaves(config):
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
