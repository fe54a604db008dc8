"""Reuse of finished stages: a stage directory started with other result-defining
settings is refused, with the differing fields named."""
import json

import pytest

from configs import default
from hybrid_rl.train import stage_runs


def _saved(config):
  return json.loads(json.dumps(config.to_dict(), default=str))


def test_mismatches_name_result_fields_and_skip_bookkeeping():
  base = stage_runs.derive(default.get_config("tiny"), {"stage": "grpo"})
  saved = _saved(base)
  assert stage_runs.config_mismatches(saved, base) == []
  changed = stage_runs.derive(base, {
      "train.steps": base.train.steps + 1, "optim.learning_rate": 0.5, "train.log_every": 3,
      "data.data_dir": "/elsewhere", "log.progress": not base.log.progress,
      "sampling.engine": "continuous", "sampling.slots": 8, "sampling.decode_steps": 4})
  diffs = stage_runs.config_mismatches(saved, changed)
  assert [d.split(":")[0] for d in diffs] == ["optim.learning_rate", "train.steps"]
  assert f"train.steps: {base.train.steps} -> {base.train.steps + 1}" in diffs


def test_fields_only_one_side_has_are_not_compared_and_the_eval_block_is():
  base = stage_runs.derive(default.get_config("tiny"), {"stage": "grpo"})
  saved = _saved(base)
  saved["train"]["field_of_an_older_version"] = 1
  del saved["optim"]["learning_rate"]
  changed = stage_runs.derive(base, {"optim.learning_rate": 0.5, "eval.batch_size": 7})
  assert stage_runs.config_mismatches(saved, changed) == []  # eval.batch_size: memory
  # A training stage's validation curve feeds the learning-speed tables.
  changed = stage_runs.derive(changed, {"eval.num_samples": 99})
  assert stage_runs.config_mismatches(saved, changed) == ["eval.num_samples: 4 -> 99"]
  # An eval stage compares its eval block and what it samples with, not training settings.
  as_eval = stage_runs.derive(changed, {"stage": "eval", "train.steps": 7,
                                        "sampling.max_new_tokens": 9})
  saved_eval = _saved(stage_runs.derive(base, {"stage": "eval"}))
  assert [d.split(":")[0] for d in stage_runs.config_mismatches(saved_eval, as_eval)] == [
      "eval.num_samples", "sampling.max_new_tokens"]


def test_check_reusable_refuses_a_directory_started_with_other_settings(tmp_path):
  base = stage_runs.derive(default.get_config("tiny"), {"stage": "sft", "seed": 1})
  stage_runs.check_reusable(base, str(tmp_path))  # nothing there yet
  (tmp_path / "config.json").write_text(json.dumps(_saved(base)))
  # Started, but no step finished: its settings are not locked.
  stage_runs.check_reusable(stage_runs.derive(base, {"seed": 2}), str(tmp_path))
  (tmp_path / "summary.json").write_text("{}")
  stage_runs.check_reusable(base, str(tmp_path))  # same settings: reusable
  with pytest.raises(stage_runs.StageMismatchError, match=r"seed: 1 -> 2") as e:
    stage_runs.check_reusable(stage_runs.derive(base, {"seed": 2}), str(tmp_path))
  assert str(tmp_path) in str(e.value) and "new --workdir" in str(e.value)
