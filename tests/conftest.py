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

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

# Parity tests compare float32 results with PyTorch; XLA's default CPU matmul
# precision is already full float32, this makes it explicit on every backend.
jax.config.update("jax_default_matmul_precision", "highest")


def pytest_sessionfinish(session, exitstatus):
  del session, exitstatus
  if _OWN_CACHE:
    shutil.rmtree(_OWN_CACHE, ignore_errors=True)
