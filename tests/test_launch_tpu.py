"""launch_tpu.sh: the commands its --dry-run prints, its refusals, and shellcheck."""
import os
import shutil
import subprocess

import pytest

from tests import helpers

SCRIPT = os.path.join(helpers.REPO, "launch_tpu.sh")


def _run(*args, cwd=None, path=None):
  env = dict(os.environ, TPU_NAME="", ZONE="")
  if path:
    env["PATH"] = path + os.pathsep + env["PATH"]
  return subprocess.run(["bash", SCRIPT, *args], capture_output=True, text=True, timeout=60,
                        cwd=cwd or helpers.REPO, env=env)


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
  # The pinned TPU compiler compile_pod used, not whatever jax[tpu] is newest.
  assert any("-r\\ requirements.txt\\ -r\\ requirements-tpu.txt" in l for l in lines)
  assert not any("'jax[tpu]'" in l or "jax\\[tpu\\]" in l for l in lines)
  run_line = [l for l in lines if "experiments.train" in l]
  assert len(run_line) == 1 and "--config.grpo.learning_rate=1e-6" in run_line[0]
  assert "tpu-vm delete hero-pod" in lines[-1]
  # Nothing ran: no record of a created VM.
  assert not os.path.exists(os.path.join(helpers.REPO, ".launch_tpu", "hero-pod.created"))


def test_delete_only_a_vm_it_created_and_bad_input_is_refused():
  proc = _run("--dry-run", "--name=someone-elses", "--zone=z", "--delete", "--no-check", "--",
              "experiments.train")
  assert proc.returncode == 0
  assert "tpu-vm delete" not in proc.stdout
  assert "did not create it" in proc.stderr
  assert "no experiment module" in _run("--dry-run", "--name=x", "--zone=z").stderr
  assert "set --zone" in _run("--dry-run", "--name=x", "--", "experiments.train").stderr
  bad = _run("--dry-run", "--name=x", "--zone=z", "--", "rm -rf /;x")
  assert bad.returncode == 2 and "not a Python module path" in bad.stderr
  assert "unknown option --worker" in _run("--worker=3", "--", "experiments.train").stderr


@pytest.mark.parametrize("remote_dir", ["", "a b", "../up", "/abs", "x/../..", "a;rm -rf ~",
                                        "$(id)", "~"])
def test_remote_dir_that_could_delete_the_wrong_path_is_refused(remote_dir):
  proc = _run("--dry-run", "--name=x", "--zone=z", f"--remote-dir={remote_dir}", "--no-check",
              "--", "experiments.train")
  assert proc.returncode == 2 and "rm -rf" not in proc.stdout
  assert proc.stderr.strip().startswith(f"launch_tpu.sh: --remote-dir='{remote_dir}': expected")


@pytest.mark.parametrize("args,said", [
    (["--type=v9-64"], "--type='v9-64': expected a TPU type such as v4-8, v5p-64, "
                       "v5litepod-16 or v6e-8"),
    (["--type=v5p-64", "--", "experiments.train", "--config=configs/hero.py:pod",
      "--config.train.batch_size=0", "--workdir=gs://b/run"],
     "the config does not pass its checks (nothing was started): FATAL invalid config: "
     "config.train.batch_size=0: must be > 0"),
])
def test_a_bad_type_or_config_is_refused_before_anything_runs(args, said):
  if "--" not in args:
    args = [*args, "--", "experiments.train", "--workdir=gs://b/run"]
  proc = _run("--dry-run", "--name=x", "--zone=z", "--create", *args)
  assert proc.returncode == 2 and "gcloud" not in proc.stdout, proc.stdout
  assert proc.stderr.strip() == f"launch_tpu.sh: {said}"


def _fake_gcloud(tmp_path, fail_on: str):
  """A gcloud that logs its arguments and fails when they contain `fail_on`."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  log = tmp_path / "gcloud.log"
  script = bin_dir / "gcloud"
  script.write_text(f"""#!/usr/bin/env bash
echo "$*" >> {log}
[[ "$*" == *{fail_on!r}* ]] && exit 1
exit 0
""")
  script.chmod(0o755)
  return str(bin_dir), log


def test_a_failed_step_deletes_the_vm_this_call_created(tmp_path):
  name = f"trap-test-{os.getpid()}"
  bin_dir, log = _fake_gcloud(tmp_path, "pip install")
  proc = _run(f"--name={name}", "--zone=z", "--create", "--install", "--delete",
              f"--log={tmp_path / 'run.log'}", "--", "experiments.train",
              f"--workdir={tmp_path / 'run'}", path=bin_dir)
  calls = log.read_text().splitlines()
  assert proc.returncode != 0
  assert any(" create " in c for c in calls) and "pip install" in calls[-2]
  assert calls[-1].startswith(f"compute tpus tpu-vm delete {name}")
  assert not any("experiments.train" in c for c in calls)  # never ran
  assert not os.path.exists(os.path.join(helpers.REPO, ".launch_tpu", f"{name}.created"))


def test_delete_only_mode(tmp_path):
  name = f"delete-only-{os.getpid()}"
  state = os.path.join(helpers.REPO, ".launch_tpu", f"{name}.created")
  os.makedirs(os.path.dirname(state), exist_ok=True)
  with open(state, "w") as f:
    f.write("2026-01-01T00:00:00Z\n")
  bin_dir, log = _fake_gcloud(tmp_path, "never")
  proc = _run(f"--name={name}", "--zone=z", "--delete", path=bin_dir)
  assert proc.returncode == 0, proc.stderr
  assert log.read_text().splitlines() == [f"compute tpus tpu-vm delete {name} --zone=z --quiet"]
  assert not os.path.exists(state)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_shellcheck_clean():
  proc = subprocess.run(["shellcheck", SCRIPT], capture_output=True, text=True)
  assert proc.returncode == 0, proc.stdout
