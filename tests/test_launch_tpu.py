"""launch_tpu.sh: the commands its --dry-run prints, its refusals, and shellcheck."""
import os
import shutil
import subprocess

import pytest

from tests import helpers

SCRIPT = os.path.join(helpers.REPO, "launch_tpu.sh")


def _run(*args, cwd=None):
  return subprocess.run(["bash", SCRIPT, *args], capture_output=True, text=True, timeout=60,
                        cwd=cwd or helpers.REPO, env=dict(os.environ, TPU_NAME="", ZONE=""))


def test_dry_run_prints_the_whole_round_trip():
  proc = _run("--dry-run", "--name=hero-pod", "--zone=us-east5-a", "--project=p", "--type=v5p-64",
              "--create", "--install", "--delete", "--", "experiments.train",
              "--config=configs/hero.py:pod", "--config.grpo.learning_rate=1e-6",
              "--workdir=gs://b/run")
  assert proc.returncode == 0, proc.stderr
  lines = [l for l in proc.stdout.splitlines() if l.startswith("+ gcloud")]
  assert "tpu-vm create hero-pod --zone=us-east5-a --project=p --accelerator-type=v5p-64" in lines[0]
  assert "tpu-vm scp" in lines[1] and "--worker=all" in lines[1]
  assert all("--worker=all" in l for l in lines[2:-1])
  assert any("requirements.txt" in l and "jax\\[tpu\\]" in l for l in lines)
  run_line = [l for l in lines if "experiments.train" in l]
  assert len(run_line) == 1 and "--config.grpo.learning_rate=1e-6" in run_line[0]
  assert "tpu-vm delete hero-pod" in lines[-1]
  # Nothing ran: no record of a created VM.
  assert not os.path.exists(os.path.join(helpers.REPO, ".launch_tpu", "hero-pod.created"))


def test_delete_only_a_vm_it_created_and_bad_input_is_refused():
  proc = _run("--dry-run", "--name=someone-elses", "--zone=z", "--delete", "--",
              "experiments.train")
  assert proc.returncode == 0
  assert "tpu-vm delete" not in proc.stdout
  assert "did not create it" in proc.stderr
  assert "no experiment module" in _run("--dry-run", "--name=x", "--zone=z").stderr
  assert "set --zone" in _run("--dry-run", "--name=x", "--", "experiments.train").stderr
  bad = _run("--dry-run", "--name=x", "--zone=z", "--", "rm -rf /;x")
  assert bad.returncode == 2 and "not a Python module path" in bad.stderr
  assert "unknown option --worker" in _run("--worker=3", "--", "experiments.train").stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_shellcheck_clean():
  proc = subprocess.run(["shellcheck", SCRIPT], capture_output=True, text=True)
  assert proc.returncode == 0, proc.stdout
