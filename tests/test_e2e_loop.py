"""The vertical slice on a micro config: SFT -> GRPO -> eval, resume, and eval arithmetic."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from hybrid_rl.eval import accuracy
from tests.helpers import REPO, run_module, subprocess_env

MICRO = ["--config=configs/default.py:micro", "--config.log.progress=False",
         "--config.log.tensorboard=False", "--config.verifier.num_workers=1"]


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("e2e")
  workdir = str(root / "sft")
  run_module("experiments.train", f"--workdir={workdir}", *MICRO,
             f"--config.data.data_dir={root / 'data'}")
  return workdir


def _grpo_args(sft_dir, workdir, steps=4, samples_every=10):
  data = os.path.join(os.path.dirname(sft_dir), "data")
  return [f"--workdir={workdir}", *MICRO, "--config.stage=grpo", f"--config.init_from={sft_dir}",
          f"--config.data.data_dir={data}", f"--config.train.steps={steps}",
          "--config.train.checkpoint_every=2", f"--config.log.samples_every={samples_every}"]


def _rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(l) for l in f]
  # No timings or memory figures: they describe the process, not the result.
  return [{k: v for k, v in r.items() if not k.startswith(("seconds", "held_bytes"))}
          for r in rows]


def test_sft_writes_final_checkpoint(sft_dir):
  assert os.path.exists(os.path.join(sft_dir, "final", "model.json"))
  summary = json.load(open(os.path.join(sft_dir, "summary.json")))
  assert summary["stage"] == "sft" and summary["steps"] == 4


def test_grpo_runs_and_logs_throughput_then_eval_reads_its_output(sft_dir, tmp_path):
  grpo = str(tmp_path / "grpo")
  run_module("experiments.train", *_grpo_args(sft_dir, grpo, steps=2))
  rows = _rows(grpo)
  assert [r["step"] for r in rows] == [1, 2]
  for key in ("reward_mean", "accuracy", "zero_adv_fraction", "samples", "tokens_generated",
              "loss", "clip_fraction", "samples_total"):
    assert key in rows[-1], key
  assert rows[-1]["samples"] == 8 * 4  # prompts x G
  assert rows[-1]["samples_total"] == 2 * 32
  # Real tokens trained on: every response token plus at least one prompt token a row.
  assert rows[-1]["tokens_generated"] + 32 <= rows[-1]["tokens_trained"]
  ev = str(tmp_path / "eval")
  run_module("experiments.train", f"--workdir={ev}", *MICRO, "--config.stage=eval",
             f"--config.init_from={grpo}",
             f"--config.data.data_dir={os.path.join(os.path.dirname(sft_dir), 'data')}")
  result = json.load(open(os.path.join(ev, "eval.json")))
  assert result["overall"]["n"] == 16 and result["k"] == 2
  assert set(result["family"]) == {"easy", "hard"}
  assert open(os.path.join(ev, "eval.md")).read().startswith("### synthetic_math / validation")
  # Every response on disk, with the verdicts the accuracy was computed from.
  samples = [json.loads(l) for l in open(os.path.join(ev, "samples.jsonl"))]
  assert len(samples) == 16 * 2 and [s["sample"] for s in samples[:4]] == [0, 1, 0, 1]
  assert {"id", "prompt", "response", "gold", "extracted", "strict", "oracle", "length",
          "finished"} <= set(samples[0])
  per_example = [samples[2 * i]["oracle"] + samples[2 * i + 1]["oracle"] for i in range(16)]
  assert per_example == result["correct_per_example"]
  assert np.mean([s["oracle"] for s in samples]) == pytest.approx(result["overall"]["avg@k"])
  # micro: max_new_tokens=24; a response that did not stop is 24 tokens long.
  assert all(s["length"] <= 24 and (s["finished"] or s["length"] == 24) for s in samples)
  assert len({s["id"] for s in samples}) == 16
  # The GRPO stage's rollouts at step 1 (log.samples_every=10, samples_rows=4).
  rollouts = [json.loads(l) for l in open(os.path.join(grpo, "samples.jsonl"))]
  assert [(r["step"], r["row"]) for r in rollouts] == [(1, i) for i in range(4)]
  assert all(r["prompt"] and {"rule", "oracle", "reward", "advantage"} <= set(r)
             for r in rollouts)


def test_killed_grpo_run_resumes_to_the_same_metrics(sft_dir, tmp_path):
  ref, killed = str(tmp_path / "ref"), str(tmp_path / "killed")
  run_module("experiments.train", *_grpo_args(sft_dir, ref))
  proc = subprocess.Popen([sys.executable, "-m", "experiments.train",
                           *_grpo_args(sft_dir, killed, samples_every=1)],
                          cwd=REPO, env=subprocess_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  metrics = os.path.join(killed, "metrics.jsonl")
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    if os.path.exists(metrics) and sum(1 for _ in open(metrics)) >= 3:
      proc.send_signal(signal.SIGKILL)
      break
    time.sleep(0.05)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL, "run finished before it could be killed"
  run_module("experiments.train", *_grpo_args(sft_dir, killed, samples_every=1))
  ref_rows, rows = _rows(ref), _rows(killed)
  assert [r["step"] for r in rows] == [1, 2, 3, 4]
  # Rollouts written before the kill for steps after the checkpoint are written once.
  logged = [json.loads(l)["step"] for l in open(os.path.join(killed, "samples.jsonl"))]
  assert logged == sorted(logged) and logged == [s for s in (1, 2, 3, 4) for _ in range(4)]
  for a, b in zip(ref_rows, rows):
    assert a.keys() == b.keys()
    for k in a:
      assert a[k] == pytest.approx(b[k], rel=1e-6, abs=1e-7), (a["step"], k)


def test_eval_summary_matches_hand_computation():
  examples = [{"family": "easy", "level": 1}, {"family": "easy", "level": 2},
              {"family": "hard", "level": 1}]
  correct = np.array([[1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]], bool)
  result = accuracy.summarize(correct, examples, k=4)
  assert result["overall"]["avg@k"] == pytest.approx(3 / 12)
  assert result["overall"]["pass@k"] == pytest.approx(2 / 3)
  assert result["family"]["easy"]["avg@k"] == pytest.approx(2 / 8)
  assert result["family"]["hard"]["pass@k"] == 1.0
  assert result["level"]["2"]["avg@k"] == 0.0
  # pass@k from n > k samples: 1 - C(n-c, k) / C(n, k)
  assert accuracy.pass_at_k(4, 2, 1) == pytest.approx(0.5)
  assert accuracy.pass_at_k(5, 1, 2) == pytest.approx(1 - 6 / 10)


def test_strict_vs_oracle_counts_per_family():
  examples = [{"family": "easy"}, {"family": "hard"}, {"family": "hard"}]
  oracle = np.array([[1, 0], [1, 1], [1, 0]], bool)
  strict = np.array([[1, 0], [1, 0], [0, 1]], bool)  # the last: strict accepts a wrong one
  out = accuracy.strict_vs_oracle(strict, oracle, examples)
  assert out["easy"] == {"precision": 1.0, "recall": 1.0, "n_correct": 1}
  assert out["hard"] == {"precision": 0.5, "recall": pytest.approx(1 / 3), "n_correct": 3}
  none = accuracy.strict_vs_oracle(np.zeros((1, 2), bool), np.zeros((1, 2), bool), examples[:1])
  assert none["easy"] == {"precision": None, "recall": None, "n_correct": 0}


def test_a_run_that_only_skips_steps_stops_with_one_line_and_keeps_its_checkpoints(tmp_path):
  """lr=1e30: the first update blows the weights up (finite), every later loss is
  non-finite and skipped; two in a row stop the run before it exports anything."""
  data = str(tmp_path / "data")
  workdir = tmp_path / "diverged"
  proc = run_module("experiments.train", f"--workdir={workdir}", *MICRO,
                    f"--config.data.data_dir={data}", "--config.optim.learning_rate=1e30",
                    "--config.optim.warmup_steps=0", "--config.optim.schedule=constant",
                    "--config.train.max_consecutive_skips=2", check=False)
  assert proc.returncode != 0
  fatal = [l for l in proc.stderr.splitlines() if l.startswith("FATAL")]
  assert len(fatal) == 1 and "2 consecutive steps (up to step 3)" in fatal[0], proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
  assert "NaN or Inf" not in proc.stdout + proc.stderr  # TensorBoard's per-value warnings
  assert os.path.isdir(workdir / "checkpoints" / "2")  # finished work stays
  assert not (workdir / "final").exists() and not (workdir / "summary.json").exists()
  # Without the stop, the summary counts the skipped steps.
  counted = tmp_path / "counted"
  run_module("experiments.train", f"--workdir={counted}", *MICRO, f"--config.data.data_dir={data}",
             "--config.optim.learning_rate=1e30", "--config.optim.warmup_steps=0",
             "--config.optim.schedule=constant", "--config.train.max_consecutive_skips=0")
  summary = json.load(open(counted / "summary.json"))
  assert summary["skipped_steps"] == 3 and summary["steps"] == 1


def test_length_sorted_grpo_step_takes_the_same_update(sft_dir, tmp_path):
  """train.length_sorted: rows sorted by length into trimmed micro-batches; the first
  step (same rollouts) logs the same loss and gradient as the one jitted step."""
  runs = {}
  for flag in ("False", "True"):
    workdir = str(tmp_path / flag)
    run_module("experiments.train", *_grpo_args(sft_dir, workdir, steps=1),
               "--config.train.micro_batch_rows=2", f"--config.train.length_sorted={flag}")
    runs[flag] = _rows(workdir)[0]
  for key in ("loss", "grad_norm", "reward_mean", "clip_fraction", "tokens_generated"):
    assert runs["True"][key] == pytest.approx(runs["False"][key], rel=1e-4, abs=1e-6), key


def test_grpo_with_a_kl_reference_runs_several_steps(sft_dir, tmp_path):
  """The reference keeps its own buffers: the train step donates the state's."""
  workdir = str(tmp_path / "kl")
  run_module("experiments.train", *_grpo_args(sft_dir, workdir, steps=3),
             "--config.rl.pg.kl_coef=0.01")
  rows = _rows(workdir)
  assert [r["step"] for r in rows] == [1, 2, 3]
  assert rows[0]["kl_ref"] == pytest.approx(0.0, abs=1e-6)  # the policy is the reference
  assert all(np.isfinite(r["kl_ref"]) and r["kl_ref"] >= 0 for r in rows)


def test_reinforce_ada_masks_truncated_responses(sft_dir, tmp_path):
  """max_new_tokens=2 truncates every response: with rl.mask_truncated no token counts."""
  workdir = str(tmp_path / "ada_truncated")
  run_module("experiments.train", *_grpo_args(sft_dir, workdir, steps=1),
             "--config.rl.sampling=ada_pos", "--config.rl.ada.n=2", "--config.rl.ada.round_size=2",
             "--config.rl.ada.max_rounds=1", "--config.sampling.max_new_tokens=2",
             "--config.rl.mask_truncated=True")
  row = _rows(workdir)[0]
  assert row["truncated_fraction"] == 1.0
  assert row["loss"] == 0.0 and row["grad_norm"] == 0.0


@pytest.mark.parametrize("mode", ["ada_pos", "ada_balance"])
def test_grpo_with_reinforce_ada_sampling(sft_dir, tmp_path, mode):
  workdir = str(tmp_path / mode)
  run_module("experiments.train", *_grpo_args(sft_dir, workdir, steps=2),
             f"--config.rl.sampling={mode}", "--config.rl.ada.n=2",
             "--config.rl.ada.round_size=4", "--config.rl.ada.max_rounds=3")
  rows = _rows(workdir)
  last = rows[-1]
  assert 1.0 <= last["ada_rounds_mean"] <= 3.0
  assert 8 * 4 <= last["samples"] <= 8 * 4 * 3  # at least one round of M for each of 8 prompts
  assert last["samples_total"] == pytest.approx(sum(r["samples"] for r in rows))


def test_eval_gives_the_same_greedy_responses_with_either_engine(sft_dir, tmp_path):
  """Through the CLI: the continuous engine with 8 slots (32 requests, each slot reused)
  writes the static sampler's greedy responses and verdicts."""
  data = os.path.join(os.path.dirname(sft_dir), "data")
  results = {}
  for engine in ("static", "continuous"):
    ev = str(tmp_path / engine)
    run_module("experiments.train", f"--workdir={ev}", *MICRO, "--config.stage=eval",
               f"--config.init_from={sft_dir}", f"--config.data.data_dir={data}",
               "--config.eval.temperature=0.0", f"--config.sampling.engine={engine}",
               "--config.sampling.slots=8", "--config.sampling.decode_steps=5")
    samples = [json.loads(l) for l in open(os.path.join(ev, "samples.jsonl"))]
    results[engine] = (samples, json.load(open(os.path.join(ev, "eval.json"))))
  (static, static_eval), (cont, cont_eval) = results["static"], results["continuous"]
  assert len(static) == 32
  for key in ("response", "length", "finished", "strict", "oracle"):
    assert [s[key] for s in static] == [s[key] for s in cont], key
  assert static_eval["correct_per_example"] == cont_eval["correct_per_example"]
  assert static_eval["overall"] == cont_eval["overall"]


def test_grpo_with_reinforce_ada_rounds_on_the_continuous_engine(sft_dir, tmp_path):
  """Reinforce-Ada submits each round's requests to the continuous engine."""
  workdir = str(tmp_path / "ada_continuous")
  run_module("experiments.train", *_grpo_args(sft_dir, workdir, steps=1),
             "--config.rl.sampling=ada_balance", "--config.rl.ada.n=2",
             "--config.rl.ada.round_size=4", "--config.rl.ada.max_rounds=2",
             "--config.sampling.engine=continuous", "--config.sampling.slots=12")
  row = _rows(workdir)[0]
  assert 8 * 4 <= row["samples"] <= 8 * 4 * 2 and np.isfinite(row["loss"])


def test_grpo_with_dynamic_sampling_gspo_and_rloo(sft_dir, tmp_path):
  """The switches run through experiments.train together: batches drawn until every group
  has signal (or the cap), each one paid for, and the data position moving by them."""
  workdir = str(tmp_path / "dynamic")
  args = [*_grpo_args(sft_dir, workdir, steps=3), "--config.rl.sampling=dynamic",
          "--config.rl.dynamic.max_batches=3", "--config.sampling.num_samples=2",
          "--config.rl.pg.importance_level=sequence",
          "--config.rl.pg.aggregation=seq_mean_token_mean", "--config.rl.advantage=rloo",
          "--config.rl.std_mode=none"]
  run_module("experiments.train", *args)
  rows = _rows(workdir)
  assert [r["step"] for r in rows] == [1, 2, 3]
  for r in rows:
    assert 1 <= r["dynamic_batches"] <= 3
    assert r["samples"] == r["dynamic_batches"] * 8 * 2  # every batch drawn is paid for
    # Groups without signal are dropped; the only zero-advantage groups left are fillers.
    assert r["zero_adv_fraction"] <= r["dynamic_zero_adv_before"] + 1e-6
    assert r["zero_adv_fraction"] == pytest.approx(r["dynamic_filled_fraction"])
  summary = json.load(open(os.path.join(workdir, "summary.json")))
  assert summary["labelled_prompts"] == sum(r["dynamic_batches"] for r in rows) * 8


@pytest.mark.parametrize("rollouts,kind,metric", [("student", "opd_pg", "opd_reward"),
                                                  ("teacher", "fkl_full", "loss"),
                                                  ("student", "rkl_full", "loss")])
def test_distill_stage_with_teacher_equal_to_student_has_zero_signal(sft_dir, tmp_path, rollouts,
                                                                     kind, metric):
  """At a sampling temperature other than 1, student, teacher and sampler must all be
  taken at it: otherwise opd_pg sees a teacher-sampler gap and a ratio != 1."""
  data = os.path.join(os.path.dirname(sft_dir), "data")
  workdir = str(tmp_path / kind)
  clip = ["--config.distill.opd_clip_epsilon=0.2"] if kind == "opd_pg" else []
  run_module("experiments.train", f"--workdir={workdir}", *MICRO, "--config.stage=distill",
             f"--config.init_from={sft_dir}", f"--config.distill.teacher_from={sft_dir}",
             f"--config.distill.rollouts={rollouts}", f"--config.distill.kind={kind}",
             f"--config.data.data_dir={data}", "--config.train.steps=2",
             "--config.sampling.temperature=0.7", *clip)
  rows = _rows(workdir)
  assert len(rows) == 2
  assert abs(rows[0][metric]) < 1e-5 and rows[0]["grad_norm"] < 1e-4
  if kind == "opd_pg":
    assert abs(rows[0]["ratio_mean"] - 1.0) < 1e-5
  assert rows[0]["samples"] == 8 * 4  # micro: 8 prompts x 4 samples
  summary = json.load(open(os.path.join(workdir, "summary.json")))
  assert summary["labelled_prompts"] == 0 and summary["samples_total"] == 2 * rows[0]["samples"]


def test_distill_stage_rejects_a_loss_that_does_not_fit_the_rollouts(sft_dir, tmp_path):
  proc = run_module("experiments.train", f"--workdir={tmp_path / 'bad'}", *MICRO,
                    "--config.stage=distill", f"--config.init_from={sft_dir}",
                    f"--config.distill.teacher_from={sft_dir}", "--config.distill.rollouts=teacher",
                    "--config.distill.kind=opd_pg", check=False)
  assert proc.returncode != 0 and "Traceback" not in proc.stderr
  assert "config.distill.kind='opd_pg' with rollouts='teacher'" in proc.stderr
