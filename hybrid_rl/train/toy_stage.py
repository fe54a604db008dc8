"""A model-free stage (noisy linear regression with AdamW) for the loop's own tests.

It exercises everything a real stage relies on (config, data position, RNG in
the state, optimizer, checkpoints, metrics) in a second, so resume and
corruption handling can be tested by killing a real process.
"""
import time

import jax
import jax.numpy as jnp
import ml_collections
import optax

from hybrid_rl.train import loop
from hybrid_rl.train import optim as optim_lib


def init_state(config: ml_collections.ConfigDict, optimizer) -> dict:
  """The toy stage's state before step 1 (also the template to restore into)."""
  params = {"w": jnp.zeros((config.toy.dim,)), "b": jnp.zeros(())}
  return {
      "params": params,
      "opt_state": optimizer.init(params),
      "rng": jax.random.fold_in(jax.random.PRNGKey(config.seed), 1),
      "data_position": jnp.zeros((), jnp.int32),
  }


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  dim, batch = config.toy.dim, config.train.batch_size
  w_true = jax.random.normal(jax.random.PRNGKey(config.seed), (dim,))
  optimizer = optim_lib.make_optimizer(config.optim, config.train.steps)

  @jax.jit
  def train_step(state):
    rng, x_key, noise_key = jax.random.split(state["rng"], 3)
    x = jax.random.normal(jax.random.fold_in(x_key, state["data_position"]), (batch, dim))
    y = x @ w_true + config.toy.noise * jax.random.normal(noise_key, (batch,))

    def loss_fn(p):
      return jnp.mean((x @ p["w"] + p["b"] - y) ** 2)

    loss, grads = jax.value_and_grad(loss_fn)(state["params"])
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    new_state = {
        "params": optax.apply_updates(state["params"], updates),
        "opt_state": opt_state,
        "rng": rng,
        "data_position": state["data_position"] + 1,
    }
    return new_state, {"loss": loss, "grad_norm": optax.tree.norm(grads)}

  def step_fn(state, step):
    state, scalars = train_step(state)
    print(f"step {step} loss {float(scalars['loss']):.6f}", flush=True)
    if config.toy.step_sleep_s:
      time.sleep(config.toy.step_sleep_s)
    return state, scalars

  state, info = loop.run(workdir, init_state=init_state(config, optimizer), step_fn=step_fn,
                         desc="toy", **loop.options(config))
  err = float(jnp.linalg.norm(state["params"]["w"] - w_true))
  return {"weight_error": err, "steps": int(state["data_position"]),
          "skipped_steps": info["skipped_steps"]}
