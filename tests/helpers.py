"""Shared test helpers: run an experiment module in a subprocess."""
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def subprocess_env(**extra) -> dict:
  env = dict(os.environ)
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  env.setdefault("JAX_PLATFORMS", "cpu")
  env.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  extra = {k: str(v) for k, v in extra.items()}
  if "XLA_FLAGS" in extra:  # added to the flags the test run set (conftest), not instead
    extra["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {extra['XLA_FLAGS']}".strip()
  env.update(extra)
  return env


def run_module(module: str, *args: str, check: bool = True, timeout: float = 600,
               **env) -> subprocess.CompletedProcess:
  proc = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO,
                        env=subprocess_env(**env), capture_output=True,
                        text=True, timeout=timeout)
  if check and proc.returncode != 0:
    raise AssertionError(f"{module} {' '.join(args)} failed "
                         f"({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
  return proc


def run_script_result(script: str, *, devices: int = 8, timeout: float = 600) -> dict:
  """Runs a Python snippet on `devices` forced CPU devices; returns the JSON it prints
  after "RESULT"."""
  import json  # pylint: disable=g-import-not-at-top
  proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                        env=subprocess_env(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}"),
                        timeout=timeout)
  line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")]
  assert line, proc.stderr[-4000:]
  return json.loads(line[0][len("RESULT"):])
