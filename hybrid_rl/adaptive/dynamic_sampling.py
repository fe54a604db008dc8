"""DAPO's dynamic sampling (Yu et al. 2025): over-sample prompts, keep the groups that
carry a gradient.

A group whose final rewards are all equal has zero advantage under a group baseline, so
it spends samples and contributes nothing. Per training step the stage draws batches
of `train.batch_size` prompts x n responses, keeps the informative groups (rewards not
all equal), and draws again until `train.batch_size` informative groups are collected
or `rl.dynamic.max_batches` batches were drawn. If the cap is reached first, the step
trains on what it has: the missing groups are filled with uninformative ones marked
invalid (no tokens, no advantage, left out of batch statistics), so the compiled shapes
never change; `dynamic_filled_groups` logs how many.

Host-side and pure: the stage samples and scores; these functions decide what to keep.
"""
import numpy as np

MODE = "dynamic"  # config.rl.sampling


def informative_groups(rewards: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
  """[P] bool: groups of `rewards` [P, G] whose valid entries are not all equal."""
  rewards = np.asarray(rewards, np.float64)
  valid = np.ones(rewards.shape, bool) if valid is None else np.asarray(valid, bool)
  high = np.where(valid, rewards, -np.inf).max(-1)
  low = np.where(valid, rewards, np.inf).min(-1)
  return (valid.sum(-1) > 1) & (high > low)


def enough(informative: list[np.ndarray], need: int) -> bool:
  """Whether the batches drawn so far ([P] bool each) hold `need` informative groups."""
  return int(sum(x.sum() for x in informative)) >= need


def select(informative: list[np.ndarray], need: int) -> tuple[list[tuple[int, int]], np.ndarray]:
  """The `need` groups a step trains on, in draw order.

  Args:
    informative: per drawn batch, [P] bool (informative_groups).
    need: groups per step (this process's share of train.batch_size).
  Returns:
    ([(batch index, group index)] of length need, [need] bool: True for informative
    groups, False for fillers, taken from the first uninformative groups drawn).
  """
  kept = [(b, g) for b, x in enumerate(informative) for g in np.flatnonzero(x)][:need]
  fillers = [(b, g) for b, x in enumerate(informative) for g in np.flatnonzero(~x)]
  fill = fillers[:need - len(kept)]
  if len(kept) + len(fill) < need:
    raise ValueError(f"{len(kept) + len(fill)} groups drawn, {need} needed")
  return kept + fill, np.array([True] * len(kept) + [False] * len(fill))
