"""Two processes on localhost (jax.distributed, gloo CPU collectives) against one.

GRPO steps of the micro config with an entropy bonus, so that the update is
not zero while the untrained policy earns no reward. Each process samples,
decodes and verifies its half of the global batch; the final parameters must
equal those of one process with two devices and the same global batch, and a
two-process checkpoint must resume in a single process.
"""
import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np

from tests import helpers

GRPO_ARGS = [
    "--config=configs/default.py:micro", "--config.stage=grpo", "--config.train.batch_size=4",
    "--config.sampling.num_samples=2", "--config.rl.pg.entropy_coef=0.01",
    "--config.optim.schedule=constant", "--config.optim.warmup_steps=0",
    "--config.verifier.num_workers=1", "--config.log.progress=False",
    "--config.log.tensorboard=False", "--config.train.checkpoint_every=1",
]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _train(workdir: str, steps: int, *, processes: int = 1, devices: int = 1,
           extra: tuple[str, ...] = ()) -> None:
  args = [*GRPO_ARGS, f"--workdir={workdir}", f"--config.train.steps={steps}", *extra]
  xla = f"--xla_force_host_platform_device_count={devices}"
  if processes == 1:
    helpers.run_module("experiments.train", *args, XLA_FLAGS=xla)
    return
  address = f"localhost:{_free_port()}"
  procs = [subprocess.Popen(
      [sys.executable, "-m", "experiments.train", *args,
       f"--config.distributed.coordinator_address={address}",
       f"--config.distributed.num_processes={processes}", f"--config.distributed.process_id={i}"],
      env=helpers.subprocess_env(XLA_FLAGS=xla), cwd=helpers.REPO, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True) for i in range(processes)]
  outputs = [p.communicate(timeout=600)[0] for p in procs]
  for i, (p, out) in enumerate(zip(procs, outputs)):
    assert p.returncode == 0, f"process {i}:\n{out[-3000:]}"


def _final_params(workdir: str) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  from hybrid_rl.train import stage_io, steps  # pylint: disable=g-import-not-at-top
  model, _ = stage_io.load_final(workdir)
  flat, _ = jax.tree_util.tree_flatten_with_path(steps.params_of(model))
  return {jax.tree_util.keystr(k): np.asarray(v) for k, v in flat}


def _metrics(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  # No timings or memory figures (a device holds another share with another layout).
  return [{k: v for k, v in r.items() if not k.startswith(("seconds", "held_bytes"))}
          for r in rows]


def test_two_processes_match_one_and_resume_on_one(tmp_path):
  single, multi = str(tmp_path / "single"), str(tmp_path / "multi")
  _train(single, 3, devices=2)
  _train(multi, 3, processes=2, devices=1)

  one, two = _final_params(single), _final_params(multi)
  assert one.keys() == two.keys()
  for name in one:
    np.testing.assert_allclose(two[name], one[name], atol=1e-6, err_msg=name)
  rows_one, rows_two = _metrics(single), _metrics(multi)
  assert rows_one == rows_two
  assert all(r["grad_norm"] > 0 and r["samples"] == 8 for r in rows_one)
  # Only the main process logged: one row per step.
  assert [r["step"] for r in rows_two] == [1, 2, 3]

  # The two-process run interrupted after step 2 resumes on one process and one device.
  for done in ("final", "summary.json", os.path.join("checkpoints", "3")):
    path = os.path.join(multi, done)
    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
  _train(multi, 3, processes=1, devices=1)
  two = _final_params(multi)
  for name in one:
    np.testing.assert_allclose(two[name], one[name], atol=1e-5, err_msg=name)
  assert [r["step"] for r in _metrics(multi)] == [1, 2, 3]


def test_two_processes_match_one_with_the_continuous_engine(tmp_path):
  """Each process's scheduler keys its requests by their global rows: two processes
  sample, and so train, exactly what one process with the whole batch does."""
  single, multi = str(tmp_path / "single"), str(tmp_path / "multi")
  engine = ["--config.sampling.engine=continuous", "--config.sampling.slots=3"]
  _train(single, 2, devices=2, extra=engine)
  _train(multi, 2, processes=2, devices=1, extra=engine)
  one, two = _final_params(single), _final_params(multi)
  for name in one:
    np.testing.assert_allclose(two[name], one[name], atol=1e-6, err_msg=name)
  rows_one, rows_two = _metrics(single), _metrics(multi)
  assert rows_one == rows_two and all(r["tokens_generated"] > 0 for r in rows_one)


def test_two_processes_run_hero_rewards_and_reinforce_ada_rounds(tmp_path):
  """The host-side parts with per-process models: the reward model scores each
  process's rows, Reinforce-Ada samples each process's prompts in its own rounds, the
  continuous engine each process's rows on its own devices."""
  policy, rm = str(tmp_path / "policy"), str(tmp_path / "rm")
  _train(policy, 1)
  data = f"--config.data.data_dir={os.path.join(policy, 'data')}"
  helpers.run_module("experiments.train", *GRPO_ARGS, "--config.stage=reward_model",
                     f"--config.init_from={policy}", f"--config.reward_model.policy_from={policy}",
                     "--config.reward_model.samples_per_prompt=2", "--config.train.steps=2",
                     data, f"--workdir={rm}")
  for name, extra in (("hero", ["--config.reward.mode=hero", f"--config.reward.rm_from={rm}"]),
                      ("ada", ["--config.rl.sampling=ada_balance"]),
                      ("continuous", ["--config.sampling.engine=continuous",
                                      "--config.sampling.slots=3"])):
    workdir = str(tmp_path / name)
    _train(workdir, 2, processes=2, extra=[f"--config.init_from={policy}", data, *extra])
    rows = _metrics(workdir)
    assert [r["step"] for r in rows] == [1, 2]
    if name == "hero":
      # sigma_bar is a statistic of the global batch (replicated, finite).
      assert np.isfinite(rows[-1]["hero_sigma_bar"]) and rows[-1]["rm_score_mean"] != 0
    elif name == "ada":
      assert rows[-1]["samples"] >= 4 * 4  # every prompt of both processes got >= one round
    else:  # each process's 4 requests on its own 3 slots, with a replica of the policy
      assert rows[-1]["samples"] == 8 and rows[-1]["tokens_generated"] > 0


LOCAL_REPLICA_SCRIPT = r"""
import json, sys
import jax, ml_collections, numpy as np
from flax import nnx
from hybrid_rl.models import transformer
from hybrid_rl.parallel import distributed, sharding

distributed.initialize(ml_collections.ConfigDict(dict(
    coordinator_address=sys.argv[1], num_processes=2, process_id=int(sys.argv[2]),
    timeout_s=120)))
cfg = transformer.ModelConfig(vocab_size=64, hidden_size=16, intermediate_size=32,
                              num_layers=2, num_heads=4, num_kv_heads=2, head_dim=4)
_, params = nnx.split(transformer.Transformer(cfg, rngs=nnx.Rngs(0)))
expected = jax.tree.map(np.asarray, params)
mesh = distributed.make_mesh((1, 4, 1))  # fsdp over both processes' devices
params = distributed.put_global(params, sharding.param_shardings(params, mesh))
local, local_mesh = distributed.local_replica(params, mesh)
leaves, expected_leaves = jax.tree.leaves(local), jax.tree.leaves(expected)
print("RESULT" + json.dumps(dict(
    equal=all(np.array_equal(np.asarray(a), b) for a, b in zip(leaves, expected_leaves)),
    own_devices=all(a.is_fully_addressable and
                    {d.process_index for d in a.sharding.device_set} == {jax.process_index()}
                    for a in leaves),
    split=any(len(a.sharding.device_set) == 2 and not a.sharding.is_fully_replicated
              for a in leaves),
    mesh_devices=[d.id for d in local_mesh.devices.flat])))
"""


def test_local_replica_is_a_whole_copy_on_the_process_own_devices(tmp_path):
  """distributed.local_replica: parameters fsdp-split over two processes' four devices
  become, on each process, the whole values split over its own two devices."""
  script = tmp_path / "replica.py"
  script.write_text(LOCAL_REPLICA_SCRIPT)
  address = f"localhost:{_free_port()}"
  procs = [subprocess.Popen(
      [sys.executable, str(script), address, str(i)],
      env=helpers.subprocess_env(XLA_FLAGS="--xla_force_host_platform_device_count=2",
                                 JAX_PLATFORMS="cpu"),
      cwd=helpers.REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)]
  outputs = [p.communicate(timeout=300)[0] for p in procs]
  results = []
  for i, (p, out) in enumerate(zip(procs, outputs)):
    assert p.returncode == 0, f"process {i}:\n{out[-3000:]}"
    results.append(json.loads(out.split("RESULT")[-1].strip().splitlines()[0]))
  for r in results:
    assert r["equal"] and r["own_devices"] and r["split"], r
  assert not set(results[0]["mesh_devices"]) & set(results[1]["mesh_devices"])
