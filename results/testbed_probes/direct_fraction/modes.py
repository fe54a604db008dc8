# Record of a probe run at commit 8488db0 (2026-11-24); kept as written then, not maintained: the package has changed since.
"""Accuracy of answer-only vs worked responses of a checkpoint on validation."""
import sys
import jax, numpy as np
from hybrid_rl.train import stage_io, rollouts
from hybrid_rl.rewards import verifier_pool, scoring
from configs import default

def main(ckpt, data_dir, frac):
  cfg = default.get_config("tiny")
  cfg.data.data_dir = data_dir
  cfg.data.synthetic.direct_fraction = frac
  cfg.init_from = ckpt
  policy = stage_io.build_or_load(cfg, "/tmp/modes_wd")
  val = stage_io.load_split(cfg, "/tmp/modes_wd", "validation")[:200]
  G = 4
  sp = rollouts.sampling_params(policy.tokenizer, 64, temperature=1.0, num_samples=G)
  ro = rollouts.sample(policy.model, policy.tokenizer, stage_io.format_prompts(val, cfg, policy.tokenizer), jax.random.PRNGKey(0), sp, cfg.data.max_prompt_len)
  pool = verifier_pool.shared(2, 2.0)
  s = scoring.verify_texts(pool, "equivalence", ro.texts, [e["answer"] for e in val for _ in range(G)])
  fam = np.array([e["family"] for e in val for _ in range(G)])
  direct = np.array([t.strip().startswith("The answer is") for t in ro.texts])
  ok = np.asarray(s.oracle) > 0
  for f in ("easy", "hard"):
    m = fam == f
    print(f, "direct share %.2f" % direct[m].mean(), "acc direct %.3f" % ok[m & direct].mean(), "acc worked %.3f" % ok[m & ~direct].mean())
  for t in ro.texts[:6]: print(repr(t))

if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2], float(sys.argv[3]))
