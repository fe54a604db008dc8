# Record of a probe run at commit 2a04072 (2026-11-24); kept as written then, not maintained: the package has changed since.
"""Per-kind accuracy of answer-only vs worked responses at a given temperature
(../direct_fraction/modes.py, split by kind instead of family).

  kinds.py CHECKPOINT DATA_DIR DIRECT_FRACTION TEMPERATURE [OPERAND_SCALE [HARD_SHARE [CHAIN_OPS]]]
"""
import sys
import jax, numpy as np
from hybrid_rl.train import stage_io, rollouts
from hybrid_rl.rewards import verifier_pool, scoring
from configs import default

def main(ckpt, data_dir, frac, temp, scale=9, hard_share=0.5, chain_ops=0):
  cfg = default.get_config("tiny")
  cfg.data.data_dir = data_dir
  cfg.data.synthetic.direct_fraction = frac
  cfg.data.synthetic.operand_scale = scale
  cfg.data.synthetic.hard_share = hard_share
  cfg.data.synthetic.chain_ops = chain_ops
  cfg.init_from = ckpt
  policy = stage_io.build_or_load(cfg, "/tmp/kinds_wd")
  val = stage_io.load_split(cfg, "/tmp/kinds_wd", "validation")[:200]
  G = 4
  sp = rollouts.sampling_params(policy.tokenizer, 64, temperature=temp, num_samples=G)
  ro = rollouts.sample(policy.model, policy.tokenizer, stage_io.format_prompts(val, cfg, policy.tokenizer), jax.random.PRNGKey(0), sp, cfg.data.max_prompt_len)
  pool = verifier_pool.shared(2, 2.0)
  s = scoring.verify_texts(pool, "equivalence", ro.texts, [e["answer"] for e in val for _ in range(G)])
  kind = np.array([e["kind"] for e in val for _ in range(G)])
  direct = np.array([t.strip().startswith("The answer is") for t in ro.texts])
  ok = np.asarray(s.oracle) > 0
  print("T", temp, "overall acc %.3f direct share %.2f" % (ok.mean(), direct.mean()))
  for k in sorted(set(kind)):
    m = kind == k
    print("%-16s n %4d acc %.3f direct share %.2f acc direct %.3f acc worked %.3f" % (k, m.sum(), ok[m].mean(), direct[m].mean(), ok[m & direct].mean() if (m&direct).any() else -1, ok[m & ~direct].mean() if (m&~direct).any() else -1))

if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]),
       int(sys.argv[5]) if len(sys.argv) > 5 else 9,
       float(sys.argv[6]) if len(sys.argv) > 6 else 0.5,
       int(sys.argv[7]) if len(sys.argv) > 7 else 0)
