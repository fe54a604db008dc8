"""Command-line plumbing shared by every experiment script.

Usage in a script:

  _CONFIG = cli.define_config("configs/x.py:tiny")
  _WORKDIR = flags.DEFINE_string("workdir", None, "...", required=True)

  def main(argv):
    config = cli.resolved_config(_CONFIG)
    cli.prepare_workdir(config, _WORKDIR.value)
    ...

  if __name__ == "__main__":
    cli.run(main)
"""
import difflib
import json
import os
import re
import runpy
import sys

from absl import app
from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags

from hybrid_rl import config_checks
from hybrid_rl.parallel import distributed
from hybrid_rl.train import stage_runs

_OVERRIDE = re.compile(r"--(\w+)\.([\w.]+)=?")


def _all_paths(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  paths = []
  for key, value in config.items():
    paths.append(prefix + key)
    if isinstance(value, ml_collections.ConfigDict):
      paths.extend(_all_paths(value, prefix + key + "."))
  return paths


def _load_config_file(spec: str) -> ml_collections.ConfigDict:
  path, _, preset = spec.partition(":")
  get_config = runpy.run_path(path)["get_config"]
  return get_config(preset) if preset else get_config()


def _unknown_field_message(argv: list[str], flag_name: str, default: str) -> str | None:
  """Names the first `--config.a.b=` override whose field does not exist."""
  spec = default
  for arg in argv[1:]:
    if arg.startswith(f"--{flag_name}="):
      spec = arg.split("=", 1)[1]
  try:
    known = _all_paths(_load_config_file(spec))
  except Exception:  # pylint: disable=broad-except
    return None
  for arg in argv[1:]:
    match = _OVERRIDE.match(arg)
    if not match or match.group(1) != flag_name:
      continue
    path = match.group(2)
    if path not in known:
      siblings = [p for p in known if p.count(".") == path.count(".")]
      hint = difflib.get_close_matches(path, siblings, n=1, cutoff=0.4)
      suffix = f" (did you mean {flag_name}.{hint[0]}?)" if hint else ""
      return f"unknown config field {flag_name}.{path}{suffix}"
  return None


def define_config(default: str, name: str = "config"):
  """config_flags.DEFINE_config_file, with one clear line for an unknown field.

  ml_collections applies `--config.x.y=` overrides while the flag is defined
  (at import), where an unknown field would otherwise surface as a traceback.
  """
  try:
    return config_flags.DEFINE_config_file(
        name, default, "Config file and preset, e.g. configs/hero.py:tiny; "
        f"override any field with --{name}.a.b=value.")
  except (AttributeError, KeyError) as e:
    message = _unknown_field_message(sys.argv, name, default)
    sys.exit(f"FATAL {message or f'config error: {e}'}")


def run(main) -> None:
  """app.run(main); a stage directory started with other settings exits with one line."""
  def guarded(argv):
    try:
      return main(argv)
    except stage_runs.StageMismatchError as e:
      sys.exit(f"FATAL {e}")

  app.run(guarded)


def resolved_config(config_flag) -> ml_collections.ConfigDict:
  """The flag's config with value checks applied; exits with one line on error."""
  if not flags.FLAGS["verbosity"].present:
    # Orbax logs every checkpoint operation at INFO; --verbosity=0 shows them.
    logging.set_verbosity(logging.WARNING)
  config = config_flag.value
  try:
    config_checks.validate(config)
  except config_checks.ConfigError as e:
    sys.exit(f"FATAL invalid config: {e}")
  if "distributed" in config:
    try:
      distributed.initialize(config.distributed)
    except ValueError as e:
      sys.exit(f"FATAL invalid config: {e}")
  return config


def config_as_json(config: ml_collections.ConfigDict) -> str:
  return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str)


def prepare_workdir(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Creates workdir, prints the resolved config and writes <workdir>/config.json."""
  os.makedirs(workdir, exist_ok=True)
  if not distributed.is_main():
    return
  text = config_as_json(config)
  print(f"workdir: {workdir}\nresolved config:\n{text}", flush=True)
  tmp = os.path.join(workdir, "config.json.tmp")
  with open(tmp, "w") as f:
    f.write(text + "\n")
  os.replace(tmp, os.path.join(workdir, "config.json"))


def use_compilation_cache(path: str) -> None:
  """Persists compiled XLA programs under `path` (unless $JAX_COMPILATION_CACHE_DIR says
  where): the many stages of one experiment share shapes, so later stages and re-runs
  skip most compilation."""
  import jax  # pylint: disable=g-import-not-at-top
  if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def experiment_setup(config_flag, workdir: str) -> tuple[ml_collections.ConfigDict, str]:
  """Resolved config and absolute workdir for a multi-stage experiment script.

  The stages of one experiment share <workdir>/data (datasets and tokenizer)
  unless config.data.data_dir says otherwise.
  """
  config = resolved_config(config_flag)
  root = os.path.abspath(workdir)
  prepare_workdir(config, root)
  use_compilation_cache(os.path.join(root, "jax_cache"))
  with config.unlocked():
    config.data.data_dir = config.data.data_dir or os.path.join(root, "data")
  return config, root
