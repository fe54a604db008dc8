import os
import shutil
import tempfile

# libtpu (requirements-tpu.txt) is installed for compile-only tests; every test runs on the
# CPU, and several processes may load libtpu at once (its lockfile would refuse the second).
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
# One persistent compilation cache per test run, shared with every subprocess (they inherit
# the environment): the many CLI runs compile the same micro-model functions, and a
# fresh directory per run keeps one run's programs from standing in for another's code.
_OWN_CACHE = None
if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
  _OWN_CACHE = tempfile.mkdtemp(prefix="hybrid_rl_test_jax_cache_")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_CACHE
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"

# The tests' models are micro-sized, so their time goes to compiling, not running: LLVM at
# -O0 compiles the CPU programs about a third faster (tests/test_train_step.py 92 s -> 62 s)
# and leaves XLA's own HLO passes, buffer assignment and float semantics (no fast math
# either way) as they are. Runs and benchmarks keep XLA's default.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_backend_optimization_level=0").strip()

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

# Parity tests compare float32 results with PyTorch; XLA's default CPU matmul
# precision is already full float32, this makes it explicit on every backend.
jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture(scope="session")
def finished(tmp_path_factory):
  """A finished micro SFT run (4 steps, checkpoints at 2 and 4) and its data directory, for
  tests that copy it (never change it in place)."""
  from tests.helpers import run_module  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("finished")
  data, workdir = root / "data", root / "sft"
  run_module("experiments.train", f"--workdir={workdir}", "--config=configs/default.py:micro",
             "--config.log.progress=False", f"--config.data.data_dir={data}", timeout=240)
  return workdir, data


def pytest_sessionfinish(session, exitstatus):
  del session, exitstatus
  if _OWN_CACHE:
    shutil.rmtree(_OWN_CACHE, ignore_errors=True)
