"""Running stages inside experiment scripts: derived configs, reuse of finished stages,
one seed's chain of stages, and counting them by a dry run."""
import contextlib
import hashlib
import json
import os
import time
from typing import Any, Mapping

import ml_collections

from hybrid_rl.models import transformer
from hybrid_rl.parallel import distributed
from hybrid_rl.train import metrics as metrics_lib
from hybrid_rl.train import stage_io
from hybrid_rl.train import stages


def derive(base: ml_collections.ConfigDict, overrides: Mapping[str, Any]
           ) -> ml_collections.ConfigDict:
  """A copy of `base` with dotted-path overrides ({"optim.learning_rate": 1e-4}); an
  unknown path raises, as on the command line."""
  config = ml_collections.ConfigDict(base.to_dict())
  for path, value in overrides.items():
    *parents, leaf = path.split(".")
    node = config
    for p in parents:
      node = node[p]
    if leaf not in node:
      raise KeyError(f"unknown config field {path}")
    node[leaf] = value
  return config


def block_overrides(block: ml_collections.ConfigDict) -> dict:
  """Overrides from an experiment's per-stage block (steps, batch, lr schedule, split)."""
  out = {"train.steps": block.steps, "train.batch_size": block.batch_size,
         "optim.learning_rate": block.learning_rate, "optim.schedule": block.schedule,
         "optim.warmup_steps": block.warmup_steps, "data.train_split": block.split}
  if "num_samples" in block:
    out["sampling.num_samples"] = block.num_samples
  return out


# What a stage's result depends on. Experiment-level blocks (per-stage step and
# learning-rate blocks, seeds, logging, mesh) reach a stage through these, by derive.
# eval: a training stage's validation curve (eval.every, split, samples) feeds the
# learning-speed tables.
_RESULT_FIELDS = ("stage", "seed", "init_from", "model", "tokenizer", "data", "train", "optim",
                  "rl", "reward", "reward_model", "sampling", "distill", "eval")
# An evaluation depends on the checkpoint, the problems and how it samples, not on the
# training settings the experiment's other stages use (a new learning rate for the
# RL stage leaves the evaluation of its starting point valid).
_EVAL_RESULT_FIELDS = ("stage", "seed", "init_from", "model", "tokenizer", "data", "sampling",
                       "eval")
# Within those, settings of how a stage runs, not what it computes: where and how often
# it writes, and how it holds memory (the out-of-memory line tells users to change
# these and run the same command again). sampling.chunks splits one sampling call into
# slices with their own random streams: same distribution, other draws, so a run
# resumed with other chunks continues statistically unchanged, not bit for bit; so does
# one resumed with the other sampling.engine (the continuous engine keys its draws by
# request; its slots, decode_steps, read_buckets, active_buckets, kv_layout and page_size
# change no draw).
MEMORY_AND_BOOKKEEPING = (
    "data.data_dir", "data.manual_dir", "train.checkpoint_every", "train.keep_checkpoints",
    "train.log_every", "train.trim_multiple", "train.max_consecutive_skips",
    "train.grad_accum_steps", "train.micro_batch_rows", "train.length_sorted",
    "sampling.chunks", "sampling.engine", "sampling.slots", "sampling.decode_steps",
    "sampling.read_buckets", "sampling.active_buckets", "sampling.kv_layout",
    "sampling.page_size", "eval.batch_size", "reward.rm_batch_rows") + tuple(
        f"model.{f}" for f in transformer.RUNTIME_FIELDS)


def _flatten(tree: Any, prefix: str = "") -> dict:
  if not isinstance(tree, Mapping):
    return {prefix: tree}
  out = {}
  for key, value in tree.items():
    out.update(_flatten(value, f"{prefix}.{key}" if prefix else key))
  return out


def config_mismatches(saved: Mapping, config: ml_collections.ConfigDict) -> list[str]:
  """Result-defining fields whose value in `config` differs from `saved` (the config.json
  a stage directory was started with), as "field: saved -> now" lines. Fields only one
  side has (added or removed by a code change) are not compared."""
  fields = _EVAL_RESULT_FIELDS if config.stage == "eval" else _RESULT_FIELDS
  # Through JSON as run_stage writes it (tuples become lists).
  now = json.loads(json.dumps(config.to_dict(), default=str))
  old, new = (_flatten({f: d[f] for f in fields if f in d}) for d in (saved, now))
  return [f"{key}: {old[key]!r} -> {new[key]!r}" for key in sorted(old.keys() & new.keys())
          if not key.startswith(MEMORY_AND_BOOKKEEPING) and old[key] != new[key]]


class StageMismatchError(ValueError):
  """A stage directory holds a run started with other settings."""


def has_progress(workdir: str) -> bool:
  """Whether workdir holds work of a stage: a finished step's checkpoint, an export or a
  summary. A run that stopped before its first checkpoint leaves its settings free."""
  if any(os.path.exists(os.path.join(workdir, *p)) for p in
         (("summary.json",), ("eval.json",), ("final",), ("final.superseded",))):
    return True
  ckpts = os.path.join(workdir, "checkpoints")
  return os.path.isdir(ckpts) and any(n.isdigit() for n in os.listdir(ckpts))


# Fields naming a checkpoint a stage starts from or reads while it trains.
UPSTREAM_FIELDS = ("init_from", "distill.teacher_from", "reward.rm_from",
                   "reward_model.policy_from")


def config_field(config: ml_collections.ConfigDict, path: str):
  """The value at a dotted path ("reward.rm_from"), or None where a block lacks it."""
  for part in path.split("."):
    if not isinstance(config, ml_collections.ConfigDict) or part not in config:
      return None
    config = config[part]
  return config


def upstream_fingerprints(config: ml_collections.ConfigDict) -> dict[str, str]:
  """field -> a digest of the checksums in the final/model.json it names, for every
  upstream field that names a finished stage (a stage re-run changes its checksums)."""
  out = {}
  for path in UPSTREAM_FIELDS:
    value = config_field(config, path)
    meta = stage_io.export_meta_path(value) if value and isinstance(value, str) else None
    if meta is None:
      continue
    try:
      with open(meta) as f:
        sums = json.load(f).get("checksums")
    except (OSError, ValueError, AttributeError):
      continue
    out[path] = hashlib.sha256(json.dumps(sums, sort_keys=True).encode()).hexdigest()[:16]
  return out


def record_start(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes what a stage starts with: <workdir>/config.json (its settings) and
  <workdir>/upstream.json (the exports it chains from), unless the stage already made
  progress there (a resume keeps the record of its start)."""
  if not distributed.is_main() or (has_progress(workdir)
                                   and os.path.exists(os.path.join(workdir, "upstream.json"))):
    return
  os.makedirs(workdir, exist_ok=True)
  metrics_lib.write_json(os.path.join(workdir, "config.json"), config.to_dict())
  metrics_lib.write_json(os.path.join(workdir, "upstream.json"), upstream_fingerprints(config))


def _shown(diffs: list[str]) -> str:
  return "; ".join(diffs[:12]) + (f"; ... and {len(diffs) - 12} more" if len(diffs) > 12
                                  else "")


def check_reusable(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Raises if workdir holds work of a stage (finished or resumable) started with other
  settings, or from an upstream stage that has since been run again: reusing it would
  silently report the old run under the new settings."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path) or not has_progress(workdir):
    return
  with open(path) as f:
    saved = json.load(f)
  diffs = config_mismatches(saved, config)
  if diffs:
    raise StageMismatchError(
        f"{workdir} holds a {saved.get('stage', '?')} stage started with other settings "
        f"(saved -> now: {_shown(diffs)}); reusing it would report that run under the new "
        "ones. Settings of memory and bookkeeping (train.grad_accum_steps, micro_batch_rows, "
        "length_sorted, sampling.chunks and engine, model.remat and chunks, checkpoint and log "
        f"cadence) may change on resume; for others use a new --workdir, or delete {workdir} "
        "to run this stage again")
  upstream = os.path.join(workdir, "upstream.json")
  if not os.path.exists(upstream):
    return
  with open(upstream) as f:
    started = json.load(f)
  now = upstream_fingerprints(config)
  changed = [p for p in started if p in now and now[p] != started[p]]
  if changed:
    raise StageMismatchError(
        f"{workdir} holds a {saved.get('stage', '?')} stage started from "
        + ", ".join(f"config.{p}={config_field(config, p)!r}" for p in changed)
        + ", whose export has changed since (that stage was run again); reusing it would "
        f"report a result of the old export. Delete {workdir} to run this stage again from "
        "the new one")


def is_done(config: ml_collections.ConfigDict, workdir: str) -> bool:
  if not os.path.exists(os.path.join(workdir, "summary.json")):
    return False
  if config.stage == "eval":
    return os.path.exists(os.path.join(workdir, "eval.json"))
  return stage_io.is_finished(workdir)


class Progress:
  """Stages of a multi-stage experiment: a bar with the stage running and an ETA.

  The ETA extrapolates the mean wall time of the stages run so far (reused
  stages count as done and take no time).
  """

  def __init__(self, total: int, root: str, enabled: bool = True):
    self.total, self.root, self.done, self.ran, self.seconds = total, root, 0, 0, 0.0
    self.stage_times: dict[str, float] = {}  # workdir -> wall time when the stage ran
    self.bar = metrics_lib.progress(total=total, desc="stages", enabled=enabled)

  def label(self, workdir: str) -> str:
    return os.path.relpath(workdir, self.root)

  def eta(self) -> str:
    if not self.ran:
      return "?"
    left = max(self.total - self.done, 0) * self.seconds / self.ran
    return time.strftime("%H:%M:%S", time.gmtime(left))

  def finish(self, workdir: str, seconds: float, reused: bool = False) -> None:
    self.done += 1
    self.stage_times[workdir] = seconds
    if not reused:
      self.ran, self.seconds = self.ran + 1, self.seconds + seconds
    self.bar.update(1)

  def close(self) -> None:
    self.bar.close()


_progress: Progress | None = None


class _DryRun:
  """What a dry run saw: the stage directories asked for (one entry per run_stage
  call), those it would run, and finished ones whose upstream it would run first."""

  def __init__(self):
    self.workdirs: list[str] = []
    self.pending: set[str] = set()
    self.stale: list[str] = []

  def visit(self, config: ml_collections.ConfigDict, workdir: str) -> None:
    self.workdirs.append(workdir)
    check_reusable(config, workdir)
    named = (config_field(config, p) for p in UPSTREAM_FIELDS)
    upstream = {os.path.abspath(os.path.expanduser(v)).removesuffix(f"{os.sep}final")
                for v in named if isinstance(v, str) and v}
    if has_progress(workdir) and upstream & self.pending:
      self.stale.append(workdir)
    if not is_done(config, workdir):
      self.pending.add(os.path.abspath(workdir))


_dry_run: _DryRun | None = None


def track(progress: Progress | None) -> None:
  """Reports every run_stage call to `progress` (None stops reporting)."""
  global _progress
  _progress = progress


@contextlib.contextmanager
def dry_run():
  """Within it run_stage runs nothing: it checks that the stage directory it is asked for
  can be used (check_reusable), records it and returns an empty summary. An experiment
  counts its stages (for the progress bar) by running its own code this way, so the count
  cannot drift from what runs, and refuses up front a directory holding another run.

  Yields the list of recorded directories (one entry per run_stage call). Raises
  StageMismatchError on leaving if a stage with work in its directory starts from one
  that will run (again): its work came from an export that will be replaced.
  """
  global _dry_run
  saved, _dry_run = _dry_run, _DryRun()
  try:
    yield _dry_run.workdirs
    if _dry_run.stale:
      raise StageMismatchError(
          f"{len(_dry_run.stale)} stage(s) hold work started from stages that will run "
          f"again: {', '.join(_dry_run.stale)}; reusing them would report results of the "
          "old exports. Delete them to run them again from the new ones")
  finally:
    _dry_run = saved


def write_summary(workdir: str, summary: Mapping) -> None:
  """<workdir>/summary.json (main process; written whole or not at all)."""
  if distributed.is_main():
    metrics_lib.write_json(os.path.join(workdir, "summary.json"), summary)


def run_stage(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs config.stage in workdir unless it already finished there; returns its summary.
  A stage directory started with other result-defining settings raises (check_reusable)."""
  if _dry_run is not None:
    _dry_run.visit(config, workdir)
    return {}
  check_reusable(config, workdir)
  if is_done(config, workdir):
    with open(os.path.join(workdir, "summary.json")) as f:
      summary = json.load(f)
    if _progress is not None:
      _progress.finish(workdir, summary.get("wall_seconds", 0.0), reused=True)
    return summary
  where = workdir
  if _progress is not None:
    where = (f"{_progress.label(workdir)} [stage {_progress.done + 1}/{_progress.total}, "
             f"ETA {_progress.eta()}]")
    _progress.bar.set_description(_progress.label(workdir))
  print(f"== {config.stage} (seed {config.seed}) -> {where}", flush=True)
  record_start(config, workdir)  # what this stage ran with, e.g. which checkpoints it chained
  start = time.perf_counter()
  summary = stages.get(config.stage)(config, workdir)
  # Time of the call that finished the stage (a resumed stage counts its last part).
  summary["wall_seconds"] = time.perf_counter() - start
  write_summary(workdir, summary)
  if _progress is not None:
    _progress.finish(workdir, summary["wall_seconds"])
  return summary


class Chain:
  """One seed's stages under <root>/seed<seed>/, each run (or reused) by its directory
  name with its summary kept: the per-seed runner of every recipe."""

  def __init__(self, config: ml_collections.ConfigDict, root: str, seed: int):
    self.config, self.root, self.seed = config, root, seed
    self.summaries: dict[str, dict] = {}  # stage directory name -> summary

  def dir(self, *names: str) -> str:
    return os.path.join(self.root, f"seed{self.seed}", *names)

  def run(self, name: str, overrides: Mapping[str, Any]) -> str:
    """Runs (or reuses) the stage of config + overrides (and this seed) in dir(name);
    returns that directory."""
    workdir = self.dir(name)
    self.summaries[name] = run_stage(derive(self.config, {"seed": self.seed, **overrides}),
                                     workdir)
    return workdir

  def cold_start(self, start: str | None = None) -> str:
    """The policy a recipe starts from: `start` (a finished stage shared by recipes),
    else the SFT of config.sft (when it has steps) in dir("sft"), else config.init_from."""
    if start is None and self.config.sft.steps:
      return self.run("sft", {"stage": "sft", **block_overrides(self.config.sft)})
    return start or self.config.init_from

  def evaluate(self, name: str, model_dir: str,
               model: ml_collections.ConfigDict | None = None) -> dict:
    """The eval stage of model_dir on every problem of config.final_eval_split, in
    dir(name); `model` is the architecture block (default: config.model)."""
    overrides = {"stage": "eval", "init_from": model_dir, "eval.split": self.config.final_eval_split,
                 "eval.max_examples": 100000}
    if model is not None:
      overrides["model"] = model
    self.run(name, overrides)
    return self.summaries[name]
