"""A workdir keeps its finished work: the export is swapped in whole, settings of memory may
change on resume, one run holds a workdir, children die with their parent, a refused
experiment writes nothing, a stage trained from an export that changed is refused, and
stop signals and failed writes are one line."""
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import default
from tests.helpers import REPO, run_module, run_script_result, subprocess_env

MICRO = ["--config=configs/default.py:micro", "--config.log.progress=False"]
TIMEOUT = 240


def _copy(finished, tmp_path):
  workdir, data = finished
  shutil.copytree(workdir, tmp_path / "run")
  return tmp_path / "run", data


def _train(workdir, data, *args, **kwargs):
  return run_module("experiments.train", f"--workdir={workdir}", *MICRO,
                    f"--config.data.data_dir={data}", *args, check=False, timeout=TIMEOUT,
                    **kwargs)


def _one_fatal_line(proc) -> str:
  assert proc.returncode != 0, proc.stdout[-2000:]
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert len(lines) == 1 and lines[0].startswith("FATAL"), proc.stderr[-3000:]
  return lines[0]


def _stats(folder) -> dict:
  return {os.path.relpath(os.path.join(d, f), folder): (os.stat(os.path.join(d, f)).st_ino,
                                                        os.stat(os.path.join(d, f)).st_mtime_ns)
          for d, _, files in os.walk(folder) for f in files}


def test_a_finished_stage_rerun_leaves_its_export_untouched(finished, tmp_path):
  workdir, data = _copy(finished, tmp_path)
  before = _stats(workdir / "final")
  proc = _train(workdir, data)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "resumed from step 4" in proc.stdout
  assert _stats(workdir / "final") == before  # not one file of final/ rewritten


def test_an_export_killed_midway_leaves_the_previous_one_whole(tmp_path, monkeypatch):
  from hybrid_rl.train import stage_io  # pylint: disable=g-import-not-at-top
  from hybrid_rl.train import steps  # pylint: disable=g-import-not-at-top
  from tests.train_fixtures import tiny_model  # pylint: disable=g-import-not-at-top
  model = tiny_model()
  params = steps.params_of(model)
  stage_io.export_final(str(tmp_path), model.cfg, params, "tok.json")
  saved = stage_io.load_final(str(tmp_path))[0]
  changed = jax.tree.map(lambda x: x + 1.0, params)

  class Killed(BaseException):
    pass

  def killed_save(self, path, *args, **kwargs):
    os.makedirs(path)  # a part of the new export is on disk
    raise Killed()
  monkeypatch.setattr(stage_io.ocp.StandardCheckpointer, "save", killed_save)
  with pytest.raises(Killed):
    stage_io.export_final(str(tmp_path), model.cfg, changed, "tok.json")
  # The finished stage still reads as finished, with the weights it had.
  assert stage_io.is_finished(str(tmp_path))
  again = stage_io.load_final(str(tmp_path))[0]
  for a, b in zip(jax.tree.leaves(steps.params_of(saved)), jax.tree.leaves(steps.params_of(again))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  monkeypatch.undo()
  stage_io.export_final(str(tmp_path), model.cfg, changed, "tok.json")  # the next try swaps in
  assert not os.path.exists(tmp_path / "final.partial")
  loaded = steps.params_of(stage_io.load_final(str(tmp_path))[0])
  for a, b in zip(jax.tree.leaves(changed), jax.tree.leaves(loaded)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_memory_settings_change_on_resume_and_leftover_saves_are_removed(finished, tmp_path):
  workdir, data = _copy(finished, tmp_path)
  shutil.rmtree(workdir / "final")  # interrupted after step 4's checkpoint
  os.remove(workdir / "summary.json")
  shutil.rmtree(workdir / "checkpoints" / "4")
  leftover = workdir / "checkpoints" / "4.orbax-checkpoint-tmp-1796440395"
  leftover.mkdir()  # a save a kill left unfinished
  proc = _train(workdir, data, "--config.train.grad_accum_steps=2", "--config.sampling.chunks=3",
                "--config.train.micro_batch_rows=2", "--config.model.remat=full")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "resumed from step 2" in proc.stdout
  assert not leftover.exists()


def test_a_run_that_finished_no_step_does_not_lock_its_settings(finished, tmp_path):
  _, data = finished
  workdir = tmp_path / "run"
  workdir.mkdir()
  shutil.copy(finished[0] / "config.json", workdir / "config.json")  # started, then stopped
  proc = _train(workdir, data, "--config.optim.learning_rate=0.01")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert json.load(open(workdir / "config.json"))["optim"]["learning_rate"] == 0.01
  # The packages the run's numbers depend on are recorded beside its settings.
  assert json.load(open(workdir / "versions.json"))["jax"] == jax.__version__


def test_sampling_chunks_need_not_divide_the_batch():
  from hybrid_rl.sampling import rollouts  # pylint: disable=g-import-not-at-top
  from hybrid_rl.sampling import sampler  # pylint: disable=g-import-not-at-top
  from tests.train_fixtures import tiny_model  # pylint: disable=g-import-not-at-top
  slices = rollouts.chunk_slices(8, 3)
  assert [s.stop - s.start for s in slices] == [3, 2, 3] and slices[-1].stop == 8
  assert len(rollouts.chunk_slices(2, 5)) == 2
  model = tiny_model()
  prompts = jax.random.randint(jax.random.PRNGKey(0), (8, 5), 1, 50)
  valid = np.ones((8, 5), bool)
  sp = sampler.SamplingParams(max_new_tokens=4, temperature=0.0, num_samples=2)
  whole = rollouts.generate_chunked(model, prompts, valid, jax.random.PRNGKey(1), sp, 1)
  chunked = rollouts.generate_chunked(model, prompts, valid, jax.random.PRNGKey(1), sp, 3)
  np.testing.assert_array_equal(np.asarray(whole.tokens), np.asarray(chunked.tokens))


def _start_toy(workdir, *args):
  # A child inherits an ignored SIGINT, and a test run started as a background job
  # (`pytest ... &`, as CI runners may) has SIGINT ignored: the run must start as it
  # would from a terminal, or Ctrl-C never reaches it.
  previous = signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    return subprocess.Popen(
        [sys.executable, "-m", "experiments.train", "--config=configs/default.py:toy",
         f"--workdir={workdir}", "--config.log.progress=False", "--config.toy.step_sleep_s=0.25",
         *args], cwd=REPO, env=subprocess_env(PYTHONUNBUFFERED=1), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
  finally:
    signal.signal(signal.SIGINT, previous)


def _wait_for_step(proc, step: int) -> None:
  for line in proc.stdout:
    if line.startswith(f"step {step} "):
      return
  raise AssertionError(f"the run ended before step {step}: {proc.stderr.read()[-2000:]}")


def test_one_run_holds_a_workdir(tmp_path):
  workdir = tmp_path / "run"
  first = _start_toy(workdir)
  try:
    _wait_for_step(first, 7)  # past the checkpoint of step 5
    line = _one_fatal_line(run_module("experiments.train", "--config=configs/default.py:toy",
                                      f"--workdir={workdir}", check=False, timeout=TIMEOUT))
    assert line == (f"FATAL {workdir} is in use by another run (pid {first.pid}); wait for it "
                    f"to end or stop it (kill {first.pid}), then run the same command again")
  finally:
    first.kill()
    first.communicate()
  # The holder is dead: its lock file is left behind, and taken over.
  assert (workdir / ".lock").read_text() == str(first.pid)
  proc = run_module("experiments.train", "--config=configs/default.py:toy",
                    f"--workdir={workdir}", "--config.log.progress=False", timeout=TIMEOUT)
  assert "resumed from step" in proc.stdout


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_is_one_line_and_the_same_command_resumes(tmp_path, sig):
  workdir = tmp_path / "run"
  proc = _start_toy(workdir)
  _wait_for_step(proc, 7)
  proc.send_signal(sig)
  proc.stdout, proc.stderr = proc.communicate(timeout=TIMEOUT)
  line = _one_fatal_line(proc)
  assert line.startswith(f"FATAL stopped by {signal.Signals(sig).name} at toy step ")
  assert line.endswith("finished checkpoints and stages are kept: the same command resumes")
  again = run_module("experiments.train", "--config=configs/default.py:toy",
                     f"--workdir={workdir}", "--config.log.progress=False", timeout=TIMEOUT)
  assert "resumed from step 5" in again.stdout  # toy checkpoints every 5 steps


def test_a_write_cut_short_leaves_no_unawaited_coroutine_lines():
  """An async checkpoint write that fails leaves its coroutine unawaited in the failure's
  frames; Python reports it at exit, after the FATAL line, unless the run frees and quiets
  it (seen on CI, where it depends on when orbax's write fails)."""
  script = ("import errno, os\nfrom hybrid_rl import cli\n"
            "async def write_fragment(): pass\n"
            "def main(argv):\n"
            "  pending = write_fragment()\n"
            "  raise OSError(errno.EFBIG, os.strerror(errno.EFBIG), 'ckpt/x')\n"
            "cli.run(main)\n")
  proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=subprocess_env(),
                        capture_output=True, text=True, timeout=120)
  assert _one_fatal_line(proc).startswith(
      "FATAL could not write: a file-size limit (ulimit -f) was reached writing ckpt/x")


def test_a_file_size_limit_is_one_line(finished, tmp_path):
  _, data = finished

  def limit():
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.train", f"--workdir={tmp_path / 'run'}", *MICRO,
       f"--config.data.data_dir={data}"], cwd=REPO, env=subprocess_env(), capture_output=True,
      text=True, timeout=TIMEOUT, preexec_fn=limit)
  assert _one_fatal_line(proc).startswith(
      "FATAL could not write: a file-size limit (ulimit -f) was reached (File too large)")


def test_write_failures_are_found_through_wrapping_errors():
  from hybrid_rl import cli  # pylint: disable=g-import-not-at-top
  try:
    try:
      raise OSError(30, "Read-only file system", "/w/checkpoints/2")
    except OSError as e:
      raise ValueError("commit failed") from e
  except ValueError as e:
    assert cli.write_failure(e) == ("the file system is read-only writing /w/checkpoints/2 "
                                    "(Read-only file system)")
  assert cli.write_failure(ValueError("OUT_OF_RANGE: No space left on device")) == (
      "the disk is full (No space left on device)")
  assert cli.write_failure(ValueError("shapes differ")) is None


def test_children_die_with_their_parent(tmp_path):
  """The quickstart's seed processes get SIGTERM from the kernel when the parent dies,
  even by SIGKILL (which no handler of the parent sees)."""
  script = (
      "import subprocess, sys, time\n"
      "from experiments import quickstart\n"
      "child = subprocess.Popen(['sleep', '120'], preexec_fn=quickstart._die_with_parent)\n"
      "print(child.pid, flush=True)\n"
      "time.sleep(120)\n")
  parent = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=subprocess_env(),
                            stdout=subprocess.PIPE, text=True)
  child = int(parent.stdout.readline())
  parent.kill()
  parent.wait()
  for _ in range(100):
    if not os.path.exists(f"/proc/{child}") or " Z " in open(f"/proc/{child}/stat").read():
      return
    time.sleep(0.1)
  os.kill(child, signal.SIGKILL)
  raise AssertionError("the child outlived its killed parent")


def test_a_refused_experiment_rerun_writes_nothing(tmp_path):
  root = tmp_path / "qs"
  stage = root / "seed0" / "sft"
  stage.mkdir(parents=True)
  (stage / "config.json").write_text(json.dumps({"stage": "sft", "seed": 0,
                                                 "optim": {"learning_rate": 123.0}}))
  (stage / "summary.json").write_text("{}")
  (root / "config.json").write_text("the previous run's\n")
  proc = run_module("experiments.quickstart", f"--workdir={root}",
                    "--config=configs/quickstart.py:micro", "--config.log.progress=False",
                    check=False, timeout=TIMEOUT)
  line = _one_fatal_line(proc)
  assert f"{stage} holds a sft stage started with other settings" in line
  assert "optim.learning_rate: 123.0 ->" in line
  assert (root / "config.json").read_text() == "the previous run's\n"
  assert sorted(os.listdir(root)) == [".lock", "config.json", "seed0"]


def test_config_json_records_recipe_blocks_as_they_ran():
  # In a process of its own: experiments.quickstart defines its flags at import.
  out = run_script_result(
      "import json\n"
      "from configs import quickstart as quickstart_config\n"
      "from experiments import quickstart\n"
      "config = quickstart_config.get_config('default')\n"
      "recorded = quickstart.recorded_config(config)\n"
      "print('RESULT' + json.dumps({'top': config.data.to_dict(), 'own': "
      "config.hero.data.to_dict(), 'recorded': {n: recorded[n]['data'] for n in "
      "('hero', 'reinforce_ada', 'sparse_to_dense')}}))\n", devices=1)
  assert out["own"]["synthetic"]["hard_family"] != out["top"]["synthetic"]["hard_family"]
  assert all(data == out["top"] for data in out["recorded"].values())


def _finished_export(folder, checksums):
  os.makedirs(folder / "final", exist_ok=True)
  (folder / "final" / "model.json").write_text(json.dumps({"model": {"num_labels": 0},
                                                           "checksums": checksums}))
  (folder / "summary.json").write_text("{}")


def test_a_stage_trained_from_an_export_that_changed_is_refused(tmp_path):
  from hybrid_rl.train import stage_runs  # pylint: disable=g-import-not-at-top
  sft, grpo = tmp_path / "sft", tmp_path / "grpo"
  _finished_export(sft, {"w": "1"})
  config = default.get_config("micro")
  config.update(stage="grpo", init_from=str(sft))
  stage_runs.record_start(config, str(grpo))
  _finished_export(grpo, {"w": "2"})
  stage_runs.check_reusable(config, str(grpo))  # same upstream: reusable
  _finished_export(sft, {"w": "3"})  # the SFT stage was run again
  with pytest.raises(stage_runs.StageMismatchError, match="whose export has changed since"):
    stage_runs.check_reusable(config, str(grpo))
  # A dry run refuses up front a stage whose upstream will run again.
  shutil.rmtree(sft)
  sft_config = default.get_config("micro")
  with pytest.raises(stage_runs.StageMismatchError, match=f"will run again: {grpo}"):
    with stage_runs.dry_run():
      stage_runs.run_stage(sft_config, str(sft))
      stage_runs.run_stage(config, str(grpo))


def test_the_eval_block_of_a_training_stage_is_compared(tmp_path):
  from hybrid_rl.train import stage_runs  # pylint: disable=g-import-not-at-top
  config = default.get_config("micro")
  config.stage = "grpo"
  stage_runs.record_start(config, str(tmp_path))
  (tmp_path / "summary.json").write_text("{}")
  config.eval.every = 3  # the validation curve the learning-speed table reads
  with pytest.raises(stage_runs.StageMismatchError, match="eval.every: 0 -> 3"):
    stage_runs.check_reusable(config, str(tmp_path))
  config.eval.every, config.eval.batch_size = 0, 3  # memory: may change
  stage_runs.check_reusable(config, str(tmp_path))


def test_summaries_hold_no_nan(tmp_path):
  from hybrid_rl.train import stage_runs  # pylint: disable=g-import-not-at-top
  stage_runs.write_summary(str(tmp_path), {"auc": float("nan"), "rows": [1.0, float("inf")]})
  assert json.loads((tmp_path / "summary.json").read_text()) == {"auc": None,
                                                                 "rows": [1.0, None]}


def test_export_hf_refuses_what_would_lose_or_mix_files(finished, tmp_path):
  workdir, _ = finished
  export = lambda *args: run_module("experiments.export_hf", f"--from={workdir}", *args,
                                    check=False, timeout=TIMEOUT)
  (tmp_path / "a_file").write_text("x")
  assert _one_fatal_line(export(f"--out={tmp_path / 'a_file'}")) == (
      f"FATAL: --out={tmp_path / 'a_file'}: is a file, expected a directory")
  out = tmp_path / "hf"
  out.mkdir()
  (out / "pytorch_model.bin").write_text("stale weights")
  assert "is not empty: pass --overwrite" in _one_fatal_line(export(f"--out={out}"))
  assert (out / "pytorch_model.bin").exists()
  proc = export(f"--out={out}", "--overwrite")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert not (out / "pytorch_model.bin").exists() and (out / "model.safetensors").exists()
  unfinished = tmp_path / "unfinished"
  unfinished.mkdir()
  shutil.copy(workdir / "config.json", unfinished / "config.json")
  line = _one_fatal_line(run_module("experiments.export_hf", f"--from={unfinished}",
                                    f"--out={tmp_path / 'x'}", check=False, timeout=TIMEOUT))
  assert "is a stage workdir that has not finished" in line


def test_eval_transformers_checks_its_inputs_before_generating(finished, tmp_path):
  _, data = finished
  run = lambda *args: run_module(
      "experiments.eval_transformers", "--config=configs/default.py:micro",
      f"--config.data.data_dir={data}", f"--workdir={tmp_path / 'ev'}", *args, check=False,
      timeout=TIMEOUT)
  assert _one_fatal_line(run(f"--hf_dir={tmp_path / 'none'}")) == (
      f"FATAL: --hf_dir={tmp_path / 'none'}: does not exist")
  hf = tmp_path / "hf"
  hf.mkdir()
  (hf / "config.json").write_text("{}")
  ours = tmp_path / "eval.json"
  settings = {"data": "synthetic_math", "split": "test", "examples": 16,
              "prompt_style": "plain", "max_prompt_len": 40, "max_new_tokens": 24,
              "num_samples": 1, "temperature": 0.0}
  ours.write_text(json.dumps({"k": 1, "correct_per_example": [0] * 16, "settings": settings}))
  line = _one_fatal_line(run(f"--hf_dir={hf}", f"--compare={ours}",
                             "--config.eval.split=validation"))
  assert line.startswith(f"FATAL: --compare={ours} evaluated other problems or prompts "
                         "(split: 'test' there, 'validation' here)")


@pytest.mark.parametrize("args,said", [
    (["--config.parallel.tpu_type=v9-64"], "config.parallel.tpu_type='v9-64': expected one of"),
    (["--config.parallel.tpu_type=v5p-48"],
     "config.parallel.tpu_type='v5p-48': no slice shape for 24 chips (known: "),
    (["--config.parallel.mesh_shape=(3,1,1)"], "config.parallel.mesh_shape=(3, 1, 1) on v5p-64:"),
    (["--config.train.batch_size=0"], "config.train.batch_size=0: must be > 0"),
])
def test_compile_pod_bad_slices_and_values_are_one_line(args, said):
  pytest.importorskip("libtpu")
  proc = run_module("experiments.compile_pod", "--config=configs/hero.py:pod",
                    "--config.parallel.tpu_type=v5p-64", *args, check=False, timeout=TIMEOUT)
  # libtpu's own start-up warnings (no TPU here) may come first; no traceback comes at all.
  assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert proc.stderr.strip().splitlines()[-1].startswith("FATAL") and said in proc.stderr
