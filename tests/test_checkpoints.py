"""Exact resume after SIGKILL, and fallback from a corrupt latest checkpoint."""
import glob
import os
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from configs import default
from hybrid_rl.train import checkpoints
from hybrid_rl.train import metrics as metrics_lib
from hybrid_rl.train import optim as optim_lib
from hybrid_rl.train import toy_stage
from tests.helpers import REPO, run_module, subprocess_env

STEPS = 24
ARGS = [f"--config.train.steps={STEPS}", "--config.train.checkpoint_every=4",
        "--config.train.keep_checkpoints=2", "--config.log.progress=False",
        "--config.log.tensorboard=False"]


def _final_state(workdir):
  config = default.get_config("toy")
  config.train.steps = STEPS
  optimizer = optim_lib.make_optimizer(config.optim, STEPS)
  template = toy_stage.init_state(config, optimizer)
  manager = checkpoints.make_manager(os.path.join(workdir, "checkpoints"),
                                     save_every=1, keep=10)
  step, state, _ = checkpoints.restore_latest(manager, template)
  manager.close()
  return step, state


def _assert_bit_identical(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_resume_after_sigkill_is_bit_exact(tmp_path):
  ref_dir, killed_dir = str(tmp_path / "ref"), str(tmp_path / "killed")
  run_module("experiments.train", f"--workdir={ref_dir}", *ARGS)

  proc = subprocess.Popen(
      [sys.executable, "-m", "experiments.train", f"--workdir={killed_dir}", *ARGS,
       "--config.toy.step_sleep_s=0.05"],
      cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE,
      stderr=subprocess.DEVNULL, text=True)
  for line in proc.stdout:
    if line.startswith("step 14 "):  # between checkpoints 12 and 16
      proc.send_signal(signal.SIGKILL)
      break
  proc.wait()
  assert proc.returncode == -signal.SIGKILL
  resumed = run_module("experiments.train", f"--workdir={killed_dir}", *ARGS)
  assert "resumed from step" in resumed.stdout

  ref_step, ref_state = _final_state(ref_dir)
  step, state = _final_state(killed_dir)
  assert ref_step == step == STEPS
  _assert_bit_identical(ref_state, state)
  # metrics.jsonl reads as one uninterrupted run
  ref_rows = metrics_lib.read_metrics(os.path.join(ref_dir, "metrics.jsonl"))
  rows = metrics_lib.read_metrics(os.path.join(killed_dir, "metrics.jsonl"))
  assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
  assert [r["loss"] for r in rows] == [r["loss"] for r in ref_rows]


def test_corrupt_latest_checkpoint_falls_back_to_previous(tmp_path):
  ref_dir, work_dir = str(tmp_path / "ref"), str(tmp_path / "work")
  run_module("experiments.train", f"--workdir={ref_dir}", *ARGS)
  run_module("experiments.train", f"--workdir={work_dir}", *ARGS)
  # Truncate every data file of the latest step.
  for path in glob.glob(os.path.join(work_dir, "checkpoints", str(STEPS), "state", "**", "d", "*"),
                        recursive=True):
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) // 2)

  proc = run_module("experiments.train", f"--workdir={work_dir}", *ARGS)
  assert f"checkpoint step {STEPS}" in proc.stdout and "unreadable" in proc.stdout
  assert f"resumed from step {STEPS - 4}" in proc.stdout
  assert os.path.isdir(os.path.join(work_dir, "corrupt_checkpoints", str(STEPS)))
  _, ref_state = _final_state(ref_dir)
  _, state = _final_state(work_dir)
  _assert_bit_identical(ref_state, state)


def test_restore_latest_on_empty_directory_returns_none(tmp_path):
  manager = checkpoints.make_manager(str(tmp_path / "ckpt"), save_every=1, keep=1)
  assert checkpoints.restore_latest(manager, {"x": np.zeros(3)}) is None
  manager.close()


def _flip_middle_bytes(step_dir, count=16):
  files = [p for p in glob.glob(os.path.join(step_dir, "**", "*"), recursive=True)
           if os.path.isfile(p)]
  largest = max(files, key=os.path.getsize)
  size = os.path.getsize(largest)
  with open(largest, "r+b") as f:
    f.seek(size // 2)
    data = f.read(count)
    f.seek(size // 2)
    f.write(bytes(b ^ 0xFF for b in data))


def test_flipped_bytes_that_orbax_reads_silently_fail_the_checksum(tmp_path):
  directory = str(tmp_path / "checkpoints")
  manager = checkpoints.make_manager(directory, save_every=1, keep=3, async_save=False)
  states = [{"w": jnp.arange(100_000, dtype=jnp.float32) * k, "step": jnp.int32(k)}
            for k in (1, 2)]
  for k, state in enumerate(states, start=1):
    checkpoints.save(manager, k, state, {"step": k}, force=True)
  _flip_middle_bytes(os.path.join(directory, "2"))
  # orbax alone reads the damaged step without an error, and gets other numbers:
  raw = manager.restore(2, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(jax.tree.map(ocp.utils.to_shape_dtype_struct, states[1]))))
  assert not np.array_equal(np.asarray(raw.state["w"]), np.asarray(states[1]["w"]))

  step, state, meta = checkpoints.restore_latest(manager, states[0])
  assert step == 1 and meta == {"step": 1}
  _assert_bit_identical(state, states[0])
  assert os.path.isdir(str(tmp_path / "corrupt_checkpoints" / "2"))
  manager.close()
