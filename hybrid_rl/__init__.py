"""hybrid_rl: RL and distillation post-training of language models on verifiable math."""
