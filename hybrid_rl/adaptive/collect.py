"""Reinforce-Ada rollouts for one GRPO step: rounds of batched sampling, then balanced groups.

All active prompts of a round go through one sampler call. For the static
engine the call's batch is padded up to a power of two (at most the prompt
batch), so the rounds of a whole run compile the sampler at most log2(B) + 1
times; the continuous engine takes the active prompts as they are (it rounds its own
slots, continuous.slot_count, so rounds of other sizes share its programs).
"""
import collections
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from hybrid_rl.adaptive import successive_elimination as se
from hybrid_rl.rewards import scoring
from hybrid_rl.sampling import continuous
from hybrid_rl.sampling import rollouts
from hybrid_rl.sampling import sampler


@dataclasses.dataclass
class Collected:
  """B prompts' balanced groups of n responses: rows b * n .. b * n + n - 1 are
  prompt b's (P prompt, R response columns).

  tokens / valid: [B*n, P+R]; mask / sampler_logprobs: [B*n, R] (with
  mask_truncated, rows that hit max_new_tokens have an all-False mask);
  rule, oracle: [B*n] float32 verdicts; finished: [B*n] bool (ended by EOS);
  baseline / scale: [B] se.pool_statistics, for policy_gradient.group_advantages;
  samples / tokens_generated: over every round; statuses: verdict counts
  (scoring.Scores.statuses); rounds_mean; finished_fraction: prompts whose exit
  condition held.
  """
  tokens: jax.Array
  valid: jax.Array
  mask: jax.Array
  sampler_logprobs: jax.Array
  rule: np.ndarray
  oracle: np.ndarray
  finished: np.ndarray
  baseline: np.ndarray
  scale: np.ndarray
  samples: int
  tokens_generated: int
  statuses: collections.Counter
  rounds_mean: float
  finished_fraction: float


def collect(model, tokenizer, prompt_texts: list[str], golds: list[str], *, pool, verifier: str,
            cfg: se.AdaConfig, sp: sampler.SamplingParams, prompt_len: int, rng: jax.Array,
            choice_seed: tuple[int, ...], mask_truncated: bool = False,
            engine: continuous.EngineSettings | None = None) -> Collected:
  """Samples in rounds, scores as it goes and down-samples each pool to n."""
  b = len(prompt_texts)
  prompt_tokens, prompt_valid = rollouts.encode_prompts(tokenizer, prompt_texts, prompt_len)
  tokens_generated, statuses = 0, collections.Counter()

  def sample_fn(active, m, t):
    nonlocal tokens_generated
    size = (len(active) if engine is not None and engine.engine == "continuous"
            else continuous.pow2_bucket(len(active), b))
    idx = np.array(list(active) + [active[0]] * (size - len(active)))
    out = rollouts.generate(model, prompt_tokens[idx], prompt_valid[idx],
                            jax.random.fold_in(rng, t), dataclasses.replace(sp, num_samples=m),
                            engine=engine)
    n = len(active) * m
    texts = rollouts.decode(tokenizer, out)[:n]
    scores = scoring.verify_texts(pool, verifier, texts, [golds[i] for i in active for _ in range(m)])
    statuses.update(scores.statuses)
    toks, lps = np.asarray(out.tokens), np.asarray(out.logprobs)
    masks, finished = np.asarray(out.mask), np.asarray(out.finished)
    tokens_generated += int(masks[:n].sum())
    return [[(scores.rule[i], (toks[i], lps[i], masks[i], scores.oracle[i], finished[i]))
             for i in range(k * m, (k + 1) * m)] for k in range(len(active))]

  pools = se.sample_rounds(sample_fn, b, cfg)
  choice_rng = np.random.default_rng(list(choice_seed))
  rows, statistics, prompt_index = [], [], []
  for i, p in enumerate(pools):
    chosen = se.choose_group(p.rewards, cfg, choice_rng)
    statistics.append(se.pool_statistics(p.rewards, chosen, cfg))
    rows += [(p.items[c], p.rewards[c]) for c in chosen]
    prompt_index += [i] * len(chosen)
  prompt_index = np.array(prompt_index)
  resp_tokens = np.stack([r[0][0] for r in rows])
  resp_valid = np.stack([r[0][2] for r in rows])
  finished = np.array([r[0][4] for r in rows], bool)
  resp_mask = resp_valid & finished[:, None] if mask_truncated else resp_valid
  return Collected(
      tokens=jnp.concatenate([prompt_tokens[prompt_index], jnp.asarray(resp_tokens)], axis=1),
      valid=jnp.concatenate([prompt_valid[prompt_index], jnp.asarray(resp_valid)], axis=1),
      mask=jnp.asarray(resp_mask),
      sampler_logprobs=jnp.asarray(np.stack([r[0][1] for r in rows])),
      rule=np.array([r[1] for r in rows], np.float32),
      oracle=np.array([r[0][3] for r in rows], np.float32),
      finished=finished,
      baseline=np.array([m for m, _ in statistics], np.float32),
      scale=np.array([s for _, s in statistics], np.float32),
      samples=sum(len(p.rewards) for p in pools),
      tokens_generated=tokens_generated,
      statuses=statuses,
      rounds_mean=float(np.mean([p.rounds for p in pools])),
      finished_fraction=float(np.mean([p.done for p in pools])))
