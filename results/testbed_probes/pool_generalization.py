# Record of a probe run at commit af2ba9c (2026-11-24); kept as written then, not maintained: the package has changed since.
"""GRPO on a fixed pool of train prompts (cycled), then validation accuracy: does
what RL learns on its prompts transfer to unseen ones?"""
import sys
import jax, jax.numpy as jnp, numpy as np, optax
from flax import nnx
from hybrid_rl.train import stage_io, rollouts, objectives, steps
from hybrid_rl.rewards import verifier_pool, scoring
from hybrid_rl.algorithms import policy_gradient as pg
from configs import default

def main(pool_size, n_steps, lr, families, eps=1e-8):
  cfg = default.get_config("tiny")
  cfg.data.synthetic.num_train = 30000
  cfg.data.data_dir = "/work/runs/tb/b/data"
  cfg.init_from = "/work/runs/tb/b/seed0/sft"
  policy = stage_io.build_or_load(cfg, "/tmp/diag_wd")
  model, tok = policy.model, policy.tokenizer
  train = [e for e in stage_io.load_split(cfg, "/tmp/diag_wd", "train[50%:]") if e["family"] in families][:pool_size]
  val = stage_io.load_split(cfg, "/tmp/diag_wd", "validation")[:200]
  G, B = 8, 32
  pool = verifier_pool.shared(2, 2.0)
  graphdef, _ = nnx.split(model)
  def acc(params, exs, key, g=4):
    sp2 = rollouts.sampling_params(tok, 64, temperature=1.0, num_samples=g)
    out = {}
    for fam in ("easy", "hard"):
      sub = [e for e in exs if e["family"] == fam]
      ro = rollouts.sample(nnx.merge(graphdef, params), tok, stage_io.format_prompts(sub, cfg, tok), key, sp2, cfg.data.max_prompt_len)
      s = scoring.verify_texts(pool, "equivalence", ro.texts, [e["answer"] for e in sub for _ in range(g)])
      out[fam] = round(float(np.mean(s.oracle)), 3)
    return out
  params = steps.params_of(model)
  print("before: val", acc(params, val, jax.random.PRNGKey(5)), "pool", acc(params, train[:128], jax.random.PRNGKey(6)), flush=True)
  sp = rollouts.sampling_params(tok, 64, temperature=1.0, num_samples=G)
  opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(optax.join_schedules([optax.linear_schedule(0, lr, 5), optax.constant_schedule(lr)], [5]), b1=0.9, b2=0.999, eps=eps, weight_decay=0.0))
  loss_fn = objectives.grpo_objective(graphdef, pg.PGConfig(epsilon_high=0.28))
  state = steps.init_state(params, opt, jax.random.PRNGKey(0))
  train_step = jax.jit(steps.make_train_step(loss_fn, opt))
  rng = np.random.RandomState(0)
  order = []
  for it in range(n_steps):
    if len(order) < B:
      order += list(rng.permutation(len(train)))
    idx, order = order[:B], order[B:]
    ex = [train[i] for i in idx]
    ro = rollouts.sample(nnx.merge(graphdef, state["params"]), tok, stage_io.format_prompts(ex, cfg, tok), jax.random.PRNGKey(100 + it), sp, cfg.data.max_prompt_len)
    s = scoring.verify_texts(pool, "equivalence", ro.texts, [e["answer"] for e in ex for _ in range(G)])
    r = jnp.asarray(s.oracle, jnp.float32).reshape(B, G)
    adv = pg.group_advantages(r, jnp.ones((B, G), bool), std_mode="group")
    b = rollouts.sequence_batch(ro)
    old = objectives.frozen_outputs_jit(graphdef, state["params"], b["tokens"], b["valid"], b["mask"].shape[1], what="logprobs")["logprobs"]
    state, m = train_step(state, {**b, "old_logprobs": old, "advantages": adv.reshape(-1)}, jax.random.PRNGKey(it))
    if (it + 1) % 20 == 0:
      print(it + 1, "reward", float(r.mean()), "val", acc(state["params"], val, jax.random.PRNGKey(5)), flush=True)
  print("after: pool", acc(state["params"], train[:128], jax.random.PRNGKey(6)), flush=True)

if __name__ == "__main__":
  # pool size, steps, lr, families, [Adam eps]
  main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4].split(","),
       *(float(a) for a in sys.argv[5:]))
