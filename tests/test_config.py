"""Command-line configs: overrides apply; bad overrides fail with one line naming the field."""
import json
import os

import pytest

from configs import default
from configs import quickstart
from hybrid_rl import config_checks
from hybrid_rl import errors
from tests.helpers import run_module


def test_override_applied_and_config_written(tmp_path):
  workdir = str(tmp_path / "run")
  proc = run_module("experiments.train", f"--workdir={workdir}",
                    "--config=configs/default.py:toy", "--config.train.steps=3",
                    "--config.optim.learning_rate=3e-6", "--config.log.progress=False")
  written = json.load(open(os.path.join(workdir, "config.json")))
  assert written["optim"]["learning_rate"] == 3e-6
  assert written["train"]["steps"] == 3
  # The screen says where the config went; the config itself is in config.json only.
  assert proc.stdout.splitlines()[0] == (
      f"workdir: {workdir} (resolved config in {os.path.join(workdir, 'config.json')})")
  assert '"learning_rate"' not in proc.stdout
  summary = json.load(open(os.path.join(workdir, "summary.json")))
  assert summary["steps"] == 3


@pytest.mark.parametrize("override,expected", [
    ("--config.optim.lr=1", "unknown config field config.optim.lr"),
    ("--config.nosuchblock.x=1", "unknown config field config.nosuchblock.x"),
    ("--config.train.batch_size=abc", "--config.train.batch_size=abc"),
    ("--config.train.batch_size=-4", "config.train.batch_size=-4: must be > 0"),
    ("--config.optim.schedule=linear", "config.optim.schedule='linear': must be one of"),
    ("--config.stage=nonsense", "config.stage='nonsense': unknown stage"),
])
def test_bad_override_fails_with_one_line(tmp_path, override, expected):
  workdir = tmp_path / "run"
  proc = run_module("experiments.train", f"--workdir={workdir}", override, check=False)
  assert proc.returncode != 0
  fatal = [l for l in proc.stderr.splitlines() if l.startswith("FATAL")]
  assert len(fatal) == 1 and expected in fatal[0], proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
  assert not (workdir / "checkpoints").exists()  # failed before anything was built


def test_validate_rules_by_leaf_and_path():
  config = default.get_config("toy")
  config_checks.validate(config)  # the preset itself is valid
  with config.unlocked():
    config.hero = {"alpha": 1.5}
  with pytest.raises(errors.ConfigError, match=r"config\.hero\.alpha=1\.5: must be in \(0, 1\]"):
    config_checks.validate(config)
  config.hero.alpha = 0.1
  config_checks.validate(config)


@pytest.mark.parametrize("overrides,expected", [
    ({"reward.mode": "hero", "reward.rm_from": "/rm", "reward.placement": "reward"},
     "config.reward.placement='reward' with rl.std_mode='group'"),
    ({"rl.sampling": "ada_balance", "rl.ada.n": 3},
     "config.rl.ada: n=3 with ada_balance: n must be even"),
    ({"rl.ada.threshold": 5.0}, "config.rl.ada: threshold=5.0: must be in [0, 1)"),
    ({"rl.sampling": "ada_pos", "rl.ada.round_size": 2, "rl.ada.n": 4},
     "config.rl.ada: round_size M=2 must be >= n=4"),
    ({"distill.kind": "fkl_full", "distill.opd_clip_epsilon": 0.2},
     "config.distill.opd_clip_epsilon=0.2 with distill.kind='fkl_full'"),
    # The micro preset is an sft stage: it neither evaluates while training nor sorts rows.
    ({"eval.every": 2}, "config.eval.every=2 with stage='sft': only grpo stages evaluate"),
    ({"train.length_sorted": True},
     "config.train.length_sorted=True with stage='sft': only grpo stages sort rows by length"),
])
def test_switches_that_would_do_nothing_are_refused(overrides, expected):
  config = default.get_config("micro")
  config_checks.validate(config)
  for path, value in overrides.items():
    *blocks, leaf = path.split(".")
    target = config
    for block in blocks:
      target = target[block]
    target[leaf] = value
  with pytest.raises(errors.ConfigError) as e:
    config_checks.validate(config)
  assert expected in str(e.value)


@pytest.mark.parametrize("stage,overrides,expected", [
    ("distill", {"distill.rollouts": "teacher", "distill.kind": "opd_pg", "distill.teacher_from": "/t"},
     "config.distill.kind='opd_pg' with rollouts='teacher': choose fkl_sampled, fkl_full, fkl_topk"),
    ("distill", {"distill.teacher_from": ""}, "config.distill.teacher_from='': set the teacher"),
    ("grpo", {"rl.sampling": "ada_pos", "reward.mode": "hero", "reward.rm_from": "/rm"},
     "config.rl.sampling='ada_pos' with reward.mode='hero'"),
    ("grpo", {"train.length_sorted": True, "train.micro_batch_rows": 0},
     "config.train.length_sorted=True with micro_batch_rows=0"),
    ("grpo", {"rl.advantage": "rloo", "rl.sampling": "ada_balance", "rl.std_mode": "none"},
     "config.rl.advantage='rloo' with rl.sampling='ada_balance': Reinforce-Ada's advantages"),
    ("grpo", {"rl.advantage": "reinforce_pp", "rl.std_mode": "group"},
     "config.rl.advantage='reinforce_pp' with rl.std_mode='group': reinforce_pp has its own "
     "baseline and scale; set rl.std_mode=none"),
])
def test_what_a_stage_needs_is_checked_before_it_starts(stage, overrides, expected):
  config = default.get_config("micro")
  config.stage = stage
  for path, value in overrides.items():
    block, leaf = path.split(".")
    config[block][leaf] = value
  with pytest.raises(errors.ConfigError) as e:
    config_checks.validate(config)
  assert expected in str(e.value)
  config.stage = "sft"  # the same blocks mean nothing to another stage
  if "train.length_sorted" in overrides:  # ... and a switch that does nothing is refused
    with pytest.raises(errors.ConfigError, match="only grpo stages sort rows by length"):
      config_checks.validate(config)
  else:
    config_checks.validate(config)


def test_switch_combinations_that_act_are_accepted():
  config = default.get_config("micro")
  config.reward.update(mode="hero", rm_from="/rm", placement="reward")
  config.rl.std_mode = "none"  # the weight survives without group std normalization
  config.rl.update(sampling="ada_pos")
  config.rl.ada.n = 3  # odd n is fine without the balance condition
  config.distill.update(kind="opd_pg", opd_clip_epsilon=0.2)
  config_checks.validate(config)
  # Dynamic sampling composes with HERO rewards, and with every advantage and ratio.
  config.rl.update(sampling="dynamic", advantage="rloo")
  config.rl.pg.importance_level = "sequence"
  config_checks.validate(config)


def test_unknown_preset_is_named():
  with pytest.raises(ValueError, match="unknown preset 'huge'"):
    default.get_config("huge")


@pytest.mark.parametrize("spec", [
    "default:toy", "default:tiny", "default:tiny_teacher", "default:tiny_rm", "default:micro",
    "quickstart:default", "quickstart:micro", "quickstart:full", "smollm2_gsm8k:gpu", "smollm2_onestep:cpu",
    "smollm2_onestep:gpu", "smollm2_onestep:micro", "reinforce_ada:tiny",
    "reinforce_ada:micro", "reinforce_ada:pod", "hero:tiny", "hero:micro", "hero:pod",
    "sparse_to_dense:tiny", "sparse_to_dense:micro", "sparse_to_dense:pod",
    "sparse_to_dense:pod_llama"])
def test_every_preset_is_valid(spec):
  import importlib
  module, preset = spec.split(":")
  config = importlib.import_module(f"configs.{module}").get_config(preset)
  if module == "smollm2_gsm8k":
    config.data.manual_dir = "/data"  # the one field the user must supply
  config_checks.validate(config)


def _percent_range(split: str) -> tuple[float, float]:
  """"train[40%:60%]" -> (40, 60); "train" -> (0, 100)."""
  if "[" not in split:
    return 0.0, 100.0
  lo, hi = split[split.index("[") + 1:-1].split(":")
  return float(lo.rstrip("%") or 0), float(hi.rstrip("%") or 100)


@pytest.mark.parametrize("preset", ["default", "full", "micro"])
def test_quickstart_sparse_to_dense_labelled_prompts_are_unseen_by_the_student_sft(preset):
  config = quickstart.get_config(preset)
  s2d = config.sparse_to_dense
  role = quickstart.shared_cold_start(config)
  for sft in (s2d.student_sft, s2d.teacher_sft):
    sft_lo, sft_hi = _percent_range(sft.split)
    for block in ("teacher_grpo", "fkl", "opd", "student_grpo"):
      lo, hi = _percent_range(s2d[block].split)
      assert lo >= sft_hi or hi <= sft_lo, (preset, block, s2d[block].split)
  # default and full distil the shared SFT run (the teacher) into a micro-sized
  # student trained as long; micro shares the run as the student.
  assert role == {"default": "teacher", "micro": "student", "full": "teacher"}[preset]
  assert s2d[f"{role}_sft"].split == config.sft.split
  if role == "teacher":
    assert s2d.student_model.to_dict() == default.model_block("micro").to_dict()
    assert s2d.student_sft.steps == config.sft.steps


@pytest.mark.parametrize("preset", ["default", "full"])
def test_quickstart_rl_stages_give_curves_of_five_points_or_more(preset):
  config = quickstart.get_config(preset)
  s = config.sparse_to_dense
  for block, steps in [(config, config.grpo.steps), (config.hero, config.hero.grpo.steps),
                       (config.reinforce_ada, config.reinforce_ada.grpo.steps),
                       (s, s.teacher_grpo.steps), (s, s.student_grpo.steps)]:
    assert block.train.log_every == 1
    assert steps // block.eval.every >= 5, (steps, block.eval.every)
