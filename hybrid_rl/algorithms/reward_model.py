"""Reward-model losses on the scalar head.

  Bradley-Terry (pairwise):  -log sigmoid(r_chosen - r_rejected)
  pointwise:                 binary cross-entropy of sigmoid(r) against a 0/1 label
Both are means over valid pairs / samples; scores are float32 [N].
"""
import jax
import jax.numpy as jnp

Array = jax.Array


def bradley_terry_loss(chosen: Array, rejected: Array, valid: Array | None = None
                       ) -> tuple[Array, dict]:
  """chosen, rejected: [N] scores of the preferred / dispreferred response of each pair."""
  margin = chosen.astype(jnp.float32) - rejected.astype(jnp.float32)
  w = jnp.ones_like(margin) if valid is None else valid.astype(jnp.float32)
  n = jnp.maximum(w.sum(), 1.0)
  loss = (-jax.nn.log_sigmoid(margin) * w).sum() / n
  return loss, {"loss": loss, "pair_accuracy": ((margin > 0) * w).sum() / n}


def pointwise_loss(scores: Array, labels: Array, valid: Array | None = None
                   ) -> tuple[Array, dict]:
  """scores: [N] logits; labels: [N] in {0, 1}."""
  scores = scores.astype(jnp.float32)
  labels = labels.astype(jnp.float32)
  w = jnp.ones_like(scores) if valid is None else valid.astype(jnp.float32)
  n = jnp.maximum(w.sum(), 1.0)
  bce = -(labels * jax.nn.log_sigmoid(scores) + (1 - labels) * jax.nn.log_sigmoid(-scores))
  loss = (bce * w).sum() / n
  return loss, {"loss": loss, "accuracy": (((scores > 0) == (labels > 0.5)) * w).sum() / n}
