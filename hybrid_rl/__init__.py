"""hybrid_rl: RL and distillation post-training of language models on verifiable math."""
import os

# transformers serves tokenizers and checkpoint files here, never PyTorch models: its
# "PyTorch was not found" notice on every import is noise (errors still show).
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
