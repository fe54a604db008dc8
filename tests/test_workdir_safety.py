"""Finished work is never lost: a workdir re-run with other settings, checkpoints of another
model, metadata without checksums, damaged exports, paths that are files, and stages of the
wrong role each stop with one FATAL line (or fall back as reported) and change nothing."""
import json
import os
import shutil

import pytest

from tests.helpers import run_module

MICRO = ["--config=configs/default.py:micro", "--config.log.progress=False"]
TIMEOUT = 240  # a normal micro run takes about 10 s: past this it hangs


def _copy(finished, tmp_path, name="run"):
  workdir, data = finished
  copy = tmp_path / name
  shutil.copytree(workdir, copy)
  return copy, data


def _snapshot(workdir) -> dict:
  """Every file's bytes, but the lock's (each run holds the workdir while it checks)."""
  return {os.path.relpath(os.path.join(d, f), workdir): open(os.path.join(d, f), "rb").read()
          for d, _, files in os.walk(workdir) for f in files if f != ".lock"}


def _fatal(proc) -> str:
  assert proc.returncode != 0, proc.stdout[-2000:]
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert len(lines) == 1 and lines[0].startswith("FATAL"), proc.stderr[-3000:]
  return lines[0]


def _train(workdir, data, *args):
  return run_module("experiments.train", f"--workdir={workdir}", *MICRO,
                    f"--config.data.data_dir={data}", *args, check=False, timeout=TIMEOUT)


@pytest.mark.parametrize("args,named", [
    # A finished SFT re-run as GRPO from itself: its checkpoints would be read as GRPO's.
    (["--config.stage=grpo", "--config.init_from={workdir}"], "stage: 'sft' -> 'grpo'"),
    (["--config.optim.learning_rate=0.5", "--config.seed=7"],
     "optim.learning_rate: 0.002 -> 0.5; seed: 0 -> 7"),
])
def test_a_finished_run_rerun_with_other_settings_is_refused_and_unchanged(
    finished, tmp_path, args, named):
  workdir, data = _copy(finished, tmp_path)
  before = _snapshot(workdir)
  line = _fatal(_train(workdir, data, *[a.format(workdir=workdir) for a in args]))
  assert "started with other settings" in line and named in line
  assert _snapshot(workdir) == before


def test_an_interrupted_run_of_another_model_is_refused_not_quarantined(finished, tmp_path):
  workdir, data = _copy(finished, tmp_path)
  shutil.rmtree(workdir / "final")
  os.remove(workdir / "summary.json")
  before = _snapshot(workdir)
  line = _fatal(_train(workdir, data, "--config.model.intermediate_size=96"))
  assert "model.intermediate_size: 128 -> 96" in line
  assert _snapshot(workdir) == before
  # Without its config.json the checkpoints' shapes tell: incompatible, not corrupt.
  os.remove(workdir / "config.json")
  before = _snapshot(workdir)
  line = _fatal(_train(workdir, data, "--config.model.intermediate_size=96"))
  assert "holds checkpoints (steps 2, 4) of another model or stage" in line
  assert "nothing was moved" in line
  assert not (workdir / "corrupt_checkpoints").exists()
  after = _snapshot(workdir)
  after.pop("config.json")  # written by the start of this run; nothing else was
  assert after == before


def test_a_checkpoint_whose_metadata_lost_its_checksums_is_damaged(finished, tmp_path):
  """Step 4 holding step 2's state, with the checksums dropped from its metadata: it must
  not resume as step 4. It is moved aside and the run goes on from step 2 to the same end."""
  workdir, data = _copy(finished, tmp_path)
  # The export's checksums cover every bit of its parameters (orbax's own files hold times).
  final_before = json.loads((workdir / "final" / "model.json").read_text())
  shutil.rmtree(workdir / "final")
  os.remove(workdir / "summary.json")
  ckpt = workdir / "checkpoints"
  shutil.rmtree(ckpt / "4" / "state")
  shutil.copytree(ckpt / "2" / "state", ckpt / "4" / "state")
  meta_path = ckpt / "4" / "meta" / "metadata"
  meta = json.loads(meta_path.read_text())
  del meta["checksums"]
  meta_path.write_text(json.dumps(meta))
  proc = _train(workdir, data)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "checkpoint step 4" in proc.stdout and "no checksums" in proc.stdout
  assert "resumed from step 2" in proc.stdout
  assert (workdir / "corrupt_checkpoints" / "4").is_dir()
  assert json.loads((workdir / "final" / "model.json").read_text()) == final_before


@pytest.mark.parametrize("name", ["checkpoints", "corrupt_checkpoints"])
def test_a_checkpoint_directory_that_is_a_file_is_one_line_and_no_hang(finished, tmp_path, name):
  workdir, data = _copy(finished, tmp_path)
  shutil.rmtree(workdir / "final")
  os.remove(workdir / "summary.json")
  if (workdir / name).exists():
    shutil.rmtree(workdir / name)
  (workdir / name).write_text("not a directory")
  before = _snapshot(workdir)
  line = _fatal(_train(workdir, data))  # run_module's timeout fails the test on a hang
  assert f"{workdir / name} is not a directory" in line
  assert _snapshot(workdir) == before


def test_an_export_without_checksums_is_refused_when_loaded(finished, tmp_path):
  source, data = _copy(finished, tmp_path, "source")
  meta_path = source / "final" / "model.json"
  meta = json.loads(meta_path.read_text())
  del meta["checksums"]
  meta_path.write_text(json.dumps(meta))
  line = _fatal(_train(tmp_path / "next", data, f"--config.init_from={source}"))
  assert "model.json has no checksums" in line


def test_a_truncated_export_is_refused_before_anything_is_built(finished, tmp_path):
  source, data = _copy(finished, tmp_path, "source")
  meta_path = source / "final" / "model.json"
  meta_path.write_text(meta_path.read_text()[:40])
  line = _fatal(_train(tmp_path / "next", data, f"--config.init_from={source}"))
  assert "final/model.json that is not the JSON an export writes" in line
  assert not (tmp_path / "next").exists()


def _fake_export(path, num_labels):
  (path / "final").mkdir(parents=True)
  (path / "final" / "model.json").write_text(json.dumps(
      {"model": {"num_labels": num_labels}, "tokenizer": "", "checksums": {}}))
  return path


@pytest.mark.parametrize("args,expected", [
    (["--config.stage=grpo", "--config.init_from={rm}"],
     "config.init_from='{rm}': is a reward model (a scalar head); a grpo stage needs a policy"),
    (["--config.stage=distill", "--config.distill.teacher_from={rm}"],
     "config.distill.teacher_from='{rm}': is a reward model"),
    (["--config.stage=grpo", "--config.reward.mode=hero", "--config.reward.rm_from={policy}"],
     "config.reward.rm_from='{policy}': is a policy (an LM head); expected a reward_model"),
])
def test_chained_stages_of_the_wrong_role_are_refused(tmp_path, args, expected):
  paths = {"rm": _fake_export(tmp_path / "rm", 1), "policy": _fake_export(tmp_path / "policy", 0)}
  workdir = tmp_path / "run"
  proc = run_module("experiments.train", f"--workdir={workdir}", *MICRO,
                    *[a.format(**paths) for a in args], check=False, timeout=TIMEOUT)
  assert expected.format(**paths) in _fatal(proc)
  assert not workdir.exists()


def test_a_loaded_model_that_overrides_config_model_says_so(finished, tmp_path):
  source, data = finished
  proc = run_module("experiments.train", f"--workdir={tmp_path / 'next'}", *MICRO,
                    f"--config.data.data_dir={data}", f"--config.init_from={source}",
                    "--config.model.hidden_size=128", "--config.train.steps=1",
                    timeout=TIMEOUT)
  notes = [l for l in proc.stdout.splitlines() if l.startswith("NOTE")]
  assert len(notes) == 1 and "hidden_size 64 there, 128 in config.model" in notes[0], proc.stdout
  # The first screen: where the config went, not the config (it is in config.json).
  assert proc.stdout.splitlines()[0].startswith(f"workdir: {tmp_path / 'next'} (resolved config in")
  assert len(proc.stdout.splitlines()) < 10 and "PyTorch was not found" not in proc.stderr


def test_a_teacher_of_another_architecture_is_no_note(finished, tmp_path):
  # config.model describes the student; the teacher's own architecture is expected.
  source, data = finished
  proc = run_module("experiments.train", f"--workdir={tmp_path / 'distill'}", *MICRO,
                    f"--config.data.data_dir={data}", "--config.stage=distill",
                    f"--config.distill.teacher_from={source}", "--config.model.hidden_size=128",
                    "--config.train.steps=1", timeout=TIMEOUT)
  assert not [l for l in proc.stdout.splitlines() if l.startswith("NOTE")], proc.stdout


def test_a_looping_symlink_workdir_is_named(tmp_path):
  loop = tmp_path / "loop"
  os.symlink(loop, loop)
  line = _fatal(run_module("experiments.train", f"--workdir={loop}", *MICRO, check=False))
  assert "is a symbolic link that leads nowhere" in line
