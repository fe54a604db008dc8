import os

# libtpu (requirements-tpu.txt) is installed for compile-only tests; every test runs on the
# CPU, and several processes may load libtpu at once (its lockfile would refuse the second).
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

# Parity tests compare float32 results with PyTorch; XLA's default CPU matmul
# precision is already full float32, this makes it explicit on every backend.
jax.config.update("jax_default_matmul_precision", "highest")
