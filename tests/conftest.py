import jax

# Parity tests compare float32 results with PyTorch; XLA's default CPU matmul
# precision is already full float32, this makes it explicit on every backend.
jax.config.update("jax_default_matmul_precision", "highest")
