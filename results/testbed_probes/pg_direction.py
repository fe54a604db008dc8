# Record of a probe run at commit e52519d (2026-11-24); kept as written then, not maintained: the package has changed since.
"""Does one GRPO update on real rollouts raise the likelihood of rewarded responses,
and does sharpening (many small steps) raise accuracy on the same prompts?"""
import jax, jax.numpy as jnp, numpy as np, optax
from flax import nnx
from hybrid_rl.train import stage_io, rollouts, objectives, steps
from hybrid_rl.rewards import verifier_pool, scoring
from hybrid_rl.algorithms import policy_gradient as pg
from configs import default

def main():
  cfg = default.get_config("tiny")
  cfg.data.synthetic.num_train = 30000
  cfg.data.data_dir = "/work/runs/tb/b/data"
  policy = stage_io.build_or_load(stage_io_cfg(cfg), "/tmp/diag_wd")
  model, tok = policy.model, policy.tokenizer
  ex = [e for e in stage_io.load_split(cfg, "/tmp/diag_wd", "train[50%:]") if e["family"] == "easy"][:32]
  prompts = stage_io.format_prompts(ex, cfg, tok)
  golds = [e["answer"] for e in ex]
  G = 8
  sp = rollouts.sampling_params(tok, 64, temperature=1.0, num_samples=G)
  pool = verifier_pool.shared(2, 2.0)
  graphdef, _ = nnx.split(model)
  params = steps.params_of(model)
  def acc(params, key, g=16):
    sp2 = rollouts.sampling_params(tok, 64, temperature=1.0, num_samples=g)
    ro = rollouts.sample(nnx.merge(graphdef, params), tok, prompts, key, sp2, cfg.data.max_prompt_len)
    s = scoring.verify_texts(pool, "equivalence", ro.texts, [a for a in golds for _ in range(g)])
    return float(np.mean(s.oracle))
  print("acc before", acc(params, jax.random.PRNGKey(5)))
  for lr in (1e-4, 3e-4):
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(lr, b1=0.9, b2=0.999, weight_decay=0.0))
    loss_fn = objectives.grpo_objective(graphdef, pg.PGConfig(epsilon_high=0.28))
    state = steps.init_state(params, opt, jax.random.PRNGKey(0))
    train_step = jax.jit(steps.make_train_step(loss_fn, opt))
    for it in range(20):
      ro = rollouts.sample(nnx.merge(graphdef, state["params"]), tok, prompts, jax.random.PRNGKey(100 + it), sp, cfg.data.max_prompt_len)
      s = scoring.verify_texts(pool, "equivalence", ro.texts, [a for a in golds for _ in range(G)])
      r = jnp.asarray(s.oracle, jnp.float32).reshape(32, G)
      adv = pg.group_advantages(r, jnp.ones((32, G), bool), std_mode="group")
      b = rollouts.sequence_batch(ro)
      old = objectives.frozen_outputs_jit(graphdef, state["params"], b["tokens"], b["valid"], b["mask"].shape[1], what="logprobs")["logprobs"]
      batch = {**b, "old_logprobs": old, "advantages": adv.reshape(-1)}
      state, m = train_step(state, batch, jax.random.PRNGKey(it))
      new = objectives.frozen_outputs_jit(graphdef, state["params"], b["tokens"], b["valid"], b["mask"].shape[1], what="logprobs")["logprobs"]
      gain = np.asarray(((new - old) * b["mask"]).sum(-1))
      if it % 5 == 0 or it == 19:
        print(lr, it, "reward", float(r.mean()), "sum A*dlogp", float(np.dot(np.asarray(adv).reshape(-1), gain)), "mean dlogp", float(gain.mean()))
    print(lr, "acc after 20 steps on these prompts", acc(state["params"], jax.random.PRNGKey(5)))

def stage_io_cfg(cfg):
  c = cfg.copy_and_resolve_references()
  c.init_from = "/work/runs/tb/b/seed0/sft"
  return c

if __name__ == "__main__":
  main()
