"""Train state and the generic jitted step: `(state, batch, rng) -> (state, metrics)`.

The state is a plain dict pytree, checkpointed whole by orbax:
  params     model parameters (pure dict from nnx.split), float32 master copy
  opt_state  optax state
  step       int32 number of optimizer steps taken
  rng        PRNG key for the host loop (sampling)
  data_position  int32 batches consumed from the data iterator
  stats      running statistics (e.g. HERO's sigma_bar), float32 scalars

Frozen models (reference policy, teacher) do not live in the state: their
outputs are computed by a separate jitted forward and enter through the
batch, so gradients reach only the trained model.

A step whose loss, gradients or updated parameters are non-finite (an
infinite learning rate, an overflow) leaves params and optimizer state
unchanged and reports `nonfinite_skipped = 1`.
"""
import functools
from typing import Any, Callable, Mapping

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from hybrid_rl.parallel import sharding
from hybrid_rl.train import batches

PyTree = Any
LossFn = Callable[[PyTree, Mapping[str, jax.Array], jax.Array],
                  tuple[jax.Array, Mapping[str, jax.Array]]]


def init_state(params: PyTree, optimizer: optax.GradientTransformation, rng: jax.Array,
               stats: Mapping[str, float] | None = None) -> dict:
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
  return {
      "params": params,
      "opt_state": optimizer.init(params),
      "step": jnp.zeros((), jnp.int32),
      "rng": rng,
      "data_position": jnp.zeros((), jnp.int32),
      "stats": {k: jnp.asarray(v, jnp.float32) for k, v in (stats or {}).items()},
  }


def params_of(model: nnx.Module) -> dict:
  """Pure-dict parameters of an NNX model (what the train state holds)."""
  return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def cast_params(params: PyTree, dtype: str) -> PyTree:
  """Compute copy of float32 master params (bf16 compute keeps fp32 master weights)."""
  if dtype == "float32":
    return params
  return jax.tree.map(lambda x: x.astype(dtype), params)


def frozen_copy(params: PyTree, dtype: str) -> PyTree:
  """A frozen model's parameters (a reference policy's) as their own buffers in the compute
  dtype, each with its source's sharding: a donated train state cannot invalidate them, and
  every forward casts to that dtype anyway, so the values it computes are unchanged."""
  return jax.tree.map(lambda x: jnp.copy(x) if dtype == "float32" else x.astype(dtype), params)


def _all_finite(tree: PyTree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _split_micro(batch: Mapping[str, jax.Array], accum: int) -> Mapping[str, jax.Array]:
  """[rows, ...] -> [accum, rows / accum, ...]; num_micro_batches chose a divisor."""
  return jax.tree.map(lambda x: x.reshape(accum, x.shape[0] // accum, *x.shape[1:]), batch)


def num_micro_batches(rows: int, grad_accum_steps: int = 1, micro_batch_rows: int = 0) -> int:
  """Micro-batches for an update of `rows` rows: the fewest that are a multiple of
  grad_accum_steps, divide rows, and hold at most micro_batch_rows rows each
  (0: no cap). rows itself always qualifies, so there is always an answer."""
  if rows % grad_accum_steps:
    raise ValueError(f"batch dimension {rows} not divisible by grad_accum_steps={grad_accum_steps}")
  if micro_batch_rows <= 0:
    return grad_accum_steps
  return next(k for k in range(grad_accum_steps, rows + 1, grad_accum_steps)
              if rows % k == 0 and rows // k <= micro_batch_rows)


def _weighted_grad_fn(loss_fn: LossFn):
  """(params, batch, rng) -> ((loss, grads, weight), (metrics, metric weights)): the
  batch's loss and gradient with its accumulation weight, metrics["loss_weight"] (1 when
  absent), and each metric with its own weight (metrics["metric_weights"][name], e.g. a
  token mean's token count; the loss weight when absent)."""
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def weighted_grad(params, batch, rng):
    (loss, metrics), grads = grad_fn(params, batch, rng)
    metrics = dict(metrics)
    weight = jnp.asarray(metrics.pop("loss_weight", 1.0), jnp.float32)
    own = metrics.pop("metric_weights", {})
    metric_weights = {k: jnp.asarray(own.get(k, weight), jnp.float32) for k in metrics}
    return (loss, grads, weight), (metrics, metric_weights)
  return weighted_grad


def _weighted(terms):
  """((loss, grads, w), (metrics, metric weights)) -> the same with every term times its
  weight (what accumulation sums)."""
  (loss, grads, w), (metrics, mw) = terms
  return ((w * loss, jax.tree.map(lambda g: w * g, grads), w),
          ({k: mw[k] * v for k, v in metrics.items()}, mw))


def _apply_update(state: dict, loss, metrics, grads, optimizer: optax.GradientTransformation):
  """The optimizer step from a (possibly accumulated) gradient; a non-finite loss,
  gradient or result leaves params and optimizer state unchanged."""
  params = state["params"]
  updates, opt_state = optimizer.update(grads, state["opt_state"], params)
  new_params = optax.apply_updates(params, updates)
  finite = jnp.isfinite(loss) & _all_finite(grads) & _all_finite(new_params)
  keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
  new_state = dict(state)
  new_state["params"] = keep(new_params, params)
  new_state["opt_state"] = keep(opt_state, state["opt_state"])
  new_state["step"] = state["step"] + finite.astype(jnp.int32)
  metrics = dict(metrics)
  metrics["loss"] = loss
  metrics["grad_norm"] = optax.tree.norm(grads)
  metrics["nonfinite_skipped"] = 1.0 - finite.astype(jnp.float32)
  return new_state, metrics


def _normalize(sums):
  """Weighted sums over micro-batches -> (loss, metrics, grads) as weighted means."""
  (loss, grads, total), (metrics, metric_totals) = sums
  nonzero = lambda t: jnp.where(t > 0, t, 1.0)  # no tokens anywhere: every term is 0
  total = nonzero(total)
  return (loss / total, {k: v / nonzero(metric_totals[k]) for k, v in metrics.items()},
          jax.tree.map(lambda g: g / total, grads))


def make_train_step(loss_fn: LossFn, optimizer: optax.GradientTransformation,
                    grad_accum_steps: int = 1, micro_batch_rows: int = 0):
  """A pure step applying `optimizer` to the gradient of `loss_fn`.

  loss_fn(params, batch, rng) -> (loss, metrics). With grad_accum_steps = k the
  batch is split into k micro-batches along axis 0; micro_batch_rows > 0 splits
  further until no micro-batch holds more rows (num_micro_batches), which on
  CPU runs a small model's step faster than one pass over a large batch (the
  activations stay in cache). A loss that is a mean over
  a count (tokens, sequences) reports that count as metrics["loss_weight"]
  (a float32 scalar); micro-batch losses, gradients and metrics are averaged
  with these weights (equal weights when absent), so the update equals the one
  on the whole batch whatever each micro-batch holds.
  """
  weighted_grad = _weighted_grad_fn(loss_fn)

  def step(state: dict, batch: Mapping[str, jax.Array], rng: jax.Array):
    params = state["params"]
    accum = num_micro_batches(jax.tree.leaves(batch)[0].shape[0], grad_accum_steps,
                              micro_batch_rows)
    if accum == 1:
      (loss, grads, _), (metrics, _) = weighted_grad(params, batch, rng)
    else:
      micro = _split_micro(batch, accum)
      rngs = jax.random.split(rng, accum)

      def body(acc, inputs):
        mb, key = inputs
        return jax.tree.map(jnp.add, acc, _weighted(weighted_grad(params, mb, key))), None

      shapes = jax.eval_shape(weighted_grad, params, jax.tree.map(lambda x: x[0], micro), rngs[0])
      zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
      sums, _ = jax.lax.scan(body, zeros, (micro, rngs))
      loss, metrics, grads = _normalize(sums)
    return _apply_update(state, loss, metrics, grads, optimizer)

  return step


def make_length_sorted_step(loss_fn: LossFn, optimizer: optax.GradientTransformation,
                            micro_batch_rows: int, multiple: int):
  """A host-side step `(state, batch, rng) -> (state, metrics)` that pays for the
  tokens rows hold rather than for the batch's longest row.

  Rows are ordered by their response then prompt length, cut into micro-batches of
  `micro_batch_rows` rows, and each micro-batch is trimmed to its own width
  (batches.trim_padding with `multiple`, so widths come from a few buckets and each
  compiles once). A jitted call per micro-batch adds its weighted gradient into one
  accumulator (donated, updated in place); one jitted update then applies the
  weighted mean, as make_train_step does: the same update up to float rounding.
  For one device (the accumulator and batches use jit's default placement).

  batch: a batches.PGBatch or dict with tokens / valid [N, P + R] and mask [N, R].
  """
  weighted_grad = _weighted_grad_fn(loss_fn)

  @functools.partial(jax.jit, donate_argnums=0)
  def accumulate(acc, params, batch, rng):
    return jax.tree.map(jnp.add, acc, _weighted(weighted_grad(params, batch, rng)))

  @functools.partial(jax.jit, donate_argnums=0)
  def finish(state, acc):
    loss, metrics, grads = _normalize(acc)
    return _apply_update(state, loss, metrics, grads, optimizer)

  def step(state: dict, batch, rng: jax.Array):
    fields = batch._asdict() if hasattr(batch, "_asdict") else dict(batch)
    r = fields["mask"].shape[1]
    valid = np.asarray(fields["valid"])
    order = np.lexsort((valid[:, :-r].sum(1), valid[:, -r:].sum(1)))  # by response, then prompt
    chunks = [order[i:i + micro_batch_rows] for i in range(0, len(order), micro_batch_rows)]
    rngs = jax.random.split(rng, len(chunks))
    acc = None
    for idx, key in zip(chunks, rngs):
      mb = batches.trim_padding(jax.tree.map(lambda x, idx=idx: x[idx], batch), multiple)
      if acc is None:
        shapes = jax.eval_shape(weighted_grad, state["params"], mb, key)
        acc = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
      acc = accumulate(acc, state["params"], mb, key)
    return finish(state, acc)

  return step


def state_shardings(state: PyTree, mesh) -> PyTree:
  return sharding.param_shardings(state, mesh)


def batch_shardings(batch: PyTree, mesh) -> PyTree:
  """Every batch field split along its leading (row) dimension."""
  return jax.tree.map(lambda v: sharding.batch_sharding(mesh, jnp.ndim(v), jnp.shape(v)[0]), batch)


def jit_train_step(step, state: PyTree, batch: Mapping[str, jax.Array] | None = None, mesh=None,
                   donate: bool = True):
  """jax.jit with explicit in/out shardings from the partition rules (no mesh: plain jit).

  Without an example batch every batch field is split by rows over the batch
  axes (the global batch must divide by them).
  """
  donate_argnums = (0,) if donate else ()
  if mesh is None:
    return jax.jit(step, donate_argnums=donate_argnums)
  state_sh = state_shardings(state, mesh)
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  batch_sh = (jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(sharding.BATCH))
              if batch is None else batch_shardings(batch, mesh))
  return jax.jit(step, in_shardings=(state_sh, batch_sh, replicated),
                 out_shardings=(state_sh, replicated), donate_argnums=donate_argnums)


def place_rows(batch: PyTree, mesh) -> PyTree:
  """Every field split by rows over the batch axes (batch_shardings), where a computation
  left some replicated (frozen logprobs): a multi-process jit refuses an argument whose
  sharding differs from its in_shardings instead of moving it."""
  return jax.device_put(batch, batch_shardings(batch, mesh))


def take_rows(batch: PyTree, rows: np.ndarray) -> PyTree:
  """batch[rows] for every field, each keeping its sharding: an indexed global array comes
  back replicated, which a multi-process jit with row-split in_shardings refuses."""
  return jax.device_put(jax.tree.map(lambda x: x[rows], batch),
                        jax.tree.map(lambda x: x.sharding, batch))


def ppo_epochs(step, state: dict, batch: Mapping[str, jax.Array], rng: jax.Array, *,
               epochs: int = 1, minibatches: int = 1) -> tuple[dict, list[dict]]:
  """Several optimizer steps over one rollout batch: `epochs` passes, each over
  `minibatches` shuffled slices. old_logprobs in the batch stay those of the
  policy that sampled (pi_old); the learner's pi moves after the first update.

  Returns (state, per-update metrics).
  """
  n = jax.tree.leaves(batch)[0].shape[0]
  if n % minibatches:
    raise ValueError(f"rollout batch of {n} rows does not split into {minibatches} mini-batches")
  size = n // minibatches
  history = []
  for epoch in range(epochs):
    rng, perm_key = jax.random.split(rng)
    # On the host: the same permutation on every process (the key is replicated).
    order = np.asarray(jax.random.permutation(perm_key, n)) if minibatches > 1 else None
    for i in range(minibatches):
      rng, key = jax.random.split(rng)
      mb = batch if order is None else take_rows(batch, order[i * size:(i + 1) * size])
      state, metrics = step(state, mb, key)
      history.append({**metrics, "epoch": epoch})
  return state, history
