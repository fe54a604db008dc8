"""Reward-model stage on the micro config, and the AUC / accuracy metrics."""
import json
import os

import numpy as np
import pytest

from hybrid_rl.eval import reward_metrics
from tests.helpers import run_module

MICRO = ["--config=configs/default.py:micro", "--config.log.progress=False",
         "--config.log.tensorboard=False", "--config.verifier.num_workers=1"]


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
  """A micro SFT policy and its data directory, shared by the stage tests."""
  root = tmp_path_factory.mktemp("rm_policy")
  data, sft = str(root / "data"), str(root / "sft")
  run_module("experiments.train", f"--workdir={sft}", *MICRO, f"--config.data.data_dir={data}")
  return sft, data


def test_auc_matches_pairwise_definition():
  rs = np.random.RandomState(0)
  scores, labels = rs.randn(50), (rs.rand(50) > 0.6).astype(float)
  scores[:3] = scores[3]  # ties
  pos, neg = scores[labels == 1], scores[labels == 0]
  ref = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
  assert reward_metrics.auc(scores, labels) == pytest.approx(ref)
  report = reward_metrics.classification_report(np.array([2.0, -1.0, 0.5, -3.0]),
                                                 np.array([1.0, 1.0, 0.0, 0.0]))
  assert report["accuracy"] == 0.5 and report["precision"] == 0.5 and report["recall"] == 0.5
  assert np.isnan(reward_metrics.auc(np.ones(3), np.ones(3)))


@pytest.mark.parametrize("loss", ["pointwise", "bradley_terry"])
def test_reward_model_stage_trains_on_policy_samples(policy, tmp_path, loss):
  sft, data = policy
  rm = str(tmp_path / "rm")
  args = [f"--workdir={rm}", *MICRO, f"--config.data.data_dir={data}",
          "--config.stage=reward_model", f"--config.reward_model.policy_from={sft}",
          f"--config.reward_model.loss={loss}", "--config.reward_model.samples_per_prompt=4",
          "--config.train.steps=3"]
  proc = run_module("experiments.train", *args, check=False)
  if loss == "bradley_terry" and proc.returncode != 0:
    # A micro policy may get no prompt both right and wrong: the stage must say so clearly.
    assert "no prompt has both a correct and an incorrect sample" in proc.stderr
    return
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.load(open(os.path.join(rm, "rm_eval.json")))
  assert 0.0 <= report["accuracy"] <= 1.0 and report["n"] > 0 and report["loss"] == loss
  # Per family: the held-out samples split by their problem's family.
  assert set(report["family"]) == {"easy", "hard"}
  assert sum(f["n"] for f in report["family"].values()) == report["n"]
  samples = np.load(os.path.join(rm, "rm_samples.npz"))
  assert sorted(set(samples["family"])) == ["easy", "hard"]
  assert samples["tokens"].shape[0] == samples["labels"].shape[0] == 150 * 4  # train[:50%] x 4
  meta = json.load(open(os.path.join(rm, "final", "model.json")))
  assert meta["model"]["num_labels"] == 1


def test_reward_model_stage_requires_a_policy(tmp_path):
  proc = run_module("experiments.train", f"--workdir={tmp_path / 'rm'}", *MICRO,
                    "--config.stage=reward_model", check=False)
  assert proc.returncode != 0 and "reward_model.policy_from" in proc.stderr


def test_grpo_with_hero_rewards_uses_the_reward_model_and_checkpoints_sigma_bar(policy, tmp_path):
  sft, data = policy
  rm, grpo = (str(tmp_path / n) for n in ("rm", "grpo"))
  common = [*MICRO, f"--config.data.data_dir={data}"]
  run_module("experiments.train", f"--workdir={rm}", *common, "--config.stage=reward_model",
             f"--config.reward_model.policy_from={sft}", "--config.train.steps=2")
  run_module("experiments.train", f"--workdir={grpo}", *common, "--config.stage=grpo",
             f"--config.init_from={sft}", "--config.reward.mode=hero",
             f"--config.reward.rm_from={rm}", "--config.train.steps=2")
  rows = [json.loads(l) for l in open(os.path.join(grpo, "metrics.jsonl"))]
  assert {"hero_weight_mean", "hero_sigma_bar", "rm_score_mean", "rule_reward_mean"} <= set(rows[-1])
  assert 0.4 <= rows[-1]["hero_weight_mean"] <= 3.0
  # HERO rewards live in [-alpha, alpha] u [1-beta, 1+beta]
  assert -0.1 - 1e-6 <= rows[-1]["reward_mean"] <= 1.1 + 1e-6
  from hybrid_rl.train import checkpoints
  manager = checkpoints.make_manager(os.path.join(grpo, "checkpoints"), save_every=1, keep=5)
  restored = manager.restore(manager.latest_step())
  manager.close()
  sigma_bar = float(np.asarray(restored["state"]["stats"]["sigma_bar"]))
  assert np.isfinite(sigma_bar) and sigma_bar == pytest.approx(rows[-1]["hero_sigma_bar"], rel=1e-5)


def test_reward_mode_without_a_reward_model_is_rejected(tmp_path):
  proc = run_module("experiments.train", f"--workdir={tmp_path / 'g'}", *MICRO,
                    "--config.stage=grpo", "--config.reward.mode=hero", check=False)
  assert proc.returncode != 0 and "config.reward.rm_from=''" in proc.stderr


def test_hero_grpo_reads_a_hugging_face_reward_model_held_in_compute_dtype(policy, tmp_path):
  """reward.rm_from takes a *ForSequenceClassification directory (the HERO pod preset's
  Skywork reward model is one); the stage holds it in the compute dtype on the mesh."""
  import jax  # pylint: disable=g-import-not-at-top
  from hybrid_rl.models import hf_io  # pylint: disable=g-import-not-at-top
  from hybrid_rl.train import grpo_stage  # pylint: disable=g-import-not-at-top
  from hybrid_rl.train import stage_io  # pylint: disable=g-import-not-at-top
  sft, data = policy
  policy_model, _ = stage_io.load_final(sft)
  hf_rm = str(tmp_path / "hf_rm")
  hf_io.save_hf(stage_io.with_head(policy_model, 1, seed=0), hf_rm)
  mesh = jax.make_mesh((1, 1, 1), ("data", "fsdp", "tensor"))
  _, params = grpo_stage.frozen_on_mesh(hf_rm, "bfloat16", mesh)
  leaves = jax.tree.leaves(params)
  assert {str(x.dtype) for x in leaves} == {"bfloat16"} and "score" in params
  assert all(isinstance(x, jax.Array) and x.sharding.mesh.shape == mesh.shape for x in leaves)
  proc = run_module("experiments.train", f"--workdir={tmp_path / 'grpo'}", *MICRO,
                    f"--config.data.data_dir={data}", "--config.stage=grpo",
                    f"--config.init_from={sft}", "--config.reward.mode=hero",
                    f"--config.reward.rm_from={hf_rm}", "--config.train.steps=1", check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = [json.loads(l) for l in open(tmp_path / "grpo" / "metrics.jsonl")]
  assert "rm_score_mean" in rows[-1] and np.isfinite(rows[-1]["rm_score_mean"])
  # An LM directory is refused as a reward model, before anything runs.
  hf_lm = str(tmp_path / "hf_lm")
  hf_io.save_hf(policy_model, hf_lm)
  proc = run_module("experiments.train", f"--workdir={tmp_path / 'grpo2'}", *MICRO,
                    f"--config.data.data_dir={data}", "--config.stage=grpo",
                    f"--config.init_from={sft}", "--config.reward.mode=hero",
                    f"--config.reward.rm_from={hf_lm}", "--config.train.steps=1", check=False)
  assert "is a policy (an LM head); expected a reward_model stage's workdir or a Hugging " \
         "Face *ForSequenceClassification directory" in proc.stderr
