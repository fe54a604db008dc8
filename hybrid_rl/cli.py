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
import errno
import gc
import importlib.metadata
import logging as logging_lib
import os
import re
import runpy
import signal
import sys
import warnings

from absl import app
from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags

from hybrid_rl import config_checks
from hybrid_rl import errors
from hybrid_rl.parallel import distributed
from hybrid_rl.train import checkpoints
from hybrid_rl.train import loop
from hybrid_rl.train import metrics as metrics_lib
from hybrid_rl.train import stage_io
from hybrid_rl.train import stage_runs
from hybrid_rl.train import workdir_lock

# Set (to 1) by launch_tpu.sh: a script checks its config's values and exits.
CHECK_ONLY_ENV = "HYBRID_RL_CHECK_CONFIG_ONLY"
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


def _file_fields(argv: list[str], flag_name: str, default: str) -> list[str] | None:
  """The dotted fields of the config file (and preset) the command line names, as the
  file defines them before overrides; None if it does not load."""
  spec = default
  for arg in argv[1:]:
    if arg.startswith(f"--{flag_name}="):
      spec = arg.split("=", 1)[1]
  try:
    return _all_paths(_load_config_file(spec))
  except Exception:  # pylint: disable=broad-except
    return None


def _unknown_field_message(argv: list[str], flag_name: str, default: str) -> str | None:
  """Names the first `--config.a.b=` override whose field does not exist."""
  known = _file_fields(argv, flag_name, default)
  if known is None:
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


_CONFIG_FLAGS: dict[str, str] = {}  # flag name -> default spec, for error messages


def _missing_field_message(argv: list[str], flag_name: str,
                           config: ml_collections.ConfigDict) -> str | None:
  """Names a field of the config file that the resolved config lacks: an override such as
  `--config.train={'steps': 2}` replaced a whole block with fewer fields."""
  have = set(_all_paths(config))
  for path in _file_fields(argv, flag_name, _CONFIG_FLAGS.get(flag_name, "")) or []:
    if path not in have:
      block = path.rpartition(".")[0] or path
      value = config
      for part in block.split("."):
        value = value.get(part) if isinstance(value, ml_collections.ConfigDict) else None
      if isinstance(value, ml_collections.ConfigDict):
        value = value.to_dict()
      return (f"config.{path} is missing: an override replaced config.{block} with "
              f"{value!r}; override single fields instead, e.g. --{flag_name}.{path}=...")
  return None


def _config_error_line(argv: list[str], name: str, error: Exception) -> str:
  """One line for a config file that fails to load or take its overrides."""
  message = _unknown_field_message(argv, name, _CONFIG_FLAGS.get(name, ""))
  if message:
    return message
  # The innermost cause: config_flags wraps it in a multi-line report.
  lines = [l.strip() for l in str(error).splitlines() if l.strip()]
  causes = [l for l in lines if re.match(r"^\w+(Error|Exception): ", l) or "[Errno" in l]
  return f"--{name}: {(causes or lines or [repr(error)])[-1]}"


def define_config(default: str, name: str = "config"):
  """config_flags.DEFINE_config_file, with one clear line for a bad file, preset or field.

  ml_collections applies `--config.x.y=` overrides while the flag is defined
  (at import) or, with a preset, while flags are parsed (`run`); either way an
  error would otherwise surface as a traceback.
  """
  _CONFIG_FLAGS[name] = default
  try:
    return config_flags.DEFINE_config_file(
        name, default, "Config file and preset, e.g. configs/hero.py:tiny; "
        f"override any field with --{name}.a.b=value.")
  except Exception as e:  # pylint: disable=broad-except
    sys.exit(f"FATAL {_config_error_line(sys.argv, name, e)}")


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, where a config flag with a preset loads its file and
  applies its overrides; any failure there is one line."""
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except
    named = [n for n in _CONFIG_FLAGS if any(a.startswith(f"--{n}") for a in argv[1:])]
    if not named:
      sys.exit(f"FATAL {str(e).splitlines()[0] if str(e) else repr(e)}")
    sys.exit(f"FATAL {_config_error_line(argv, named[0], e)}")


def out_of_memory_detail(error: Exception) -> str:
  """The allocation XLA could not make, from its RESOURCE_EXHAUSTED message."""
  match = re.search(r"allocating (\d+) bytes", str(error))
  if match:
    return f"an allocation of {int(match.group(1)) / 2**30:.1f} GiB failed"
  return str(error).splitlines()[0][:200]


class Stopped(KeyboardInterrupt):
  """The process received a stop signal (SIGTERM, SIGHUP): unwinds like Ctrl-C, so that
  running saves finish and the workdir is released."""


def _raise_stopped(signum, frame) -> None:
  del frame
  raise Stopped(signal.Signals(signum).name)


# What an OSError's errno means for a run that could not write.
_WRITE_FAILURES = {errno.EFBIG: "a file-size limit (ulimit -f) was reached",
                   errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
                   errno.EROFS: "the file system is read-only",
                   errno.EACCES: "permission denied", errno.EPERM: "permission denied"}
# Those recognized in an error's text too (orbax and TensorStore wrap the OSError in a
# ValueError): "Permission denied" alone may be a read.
_WRITE_FAILURE_TEXTS = {os.strerror(code): meaning for code, meaning in _WRITE_FAILURES.items()
                        if code not in (errno.EACCES, errno.EPERM)}


def write_failure(error: BaseException) -> str | None:
  """One line for an error that is, or was caused by, a failed write (a full disk, a
  read-only or size-limited file system), else None."""
  seen = 0
  while error is not None and seen < 20:
    if isinstance(error, OSError) and error.errno in _WRITE_FAILURES:
      where = f" writing {error.filename}" if error.filename else ""
      return f"{_WRITE_FAILURES[error.errno]}{where} ({error.strerror})"
    text = str(error)
    for strerror, meaning in _WRITE_FAILURE_TEXTS.items():
      if strerror in text:
        return f"{meaning} ({strerror})"
    error, seen = error.__cause__ or error.__context__, seen + 1
  return None


class _ReportedFailureEchoes(logging_lib.Filter):
  """Drops the log records of a write failure or a stop signal (orbax's background save
  threads log each with its traceback, up to five times over): the run reports it in
  one line."""

  def filter(self, record: logging_lib.LogRecord) -> bool:
    texts = [record.getMessage()]
    if record.exc_info and record.exc_info[1] is not None:
      if isinstance(record.exc_info[1], KeyboardInterrupt):
        return False
      texts.append(str(record.exc_info[1]))
    return not any(strerror in t for t in texts for strerror in _WRITE_FAILURE_TEXTS)


def _fatal_line(error: BaseException) -> str | None:
  """The one line a run exits with for a failure it explains, else None (a bug: the
  traceback is shown)."""
  if isinstance(error, (stage_runs.StageMismatchError, errors.ConfigError,
                        loop.TrainingDiverged, stage_io.CorruptCheckpointError,
                        checkpoints.UnusableCheckpointError)):
    return f"FATAL {error}"
  if isinstance(error, KeyboardInterrupt):
    return _stopped_line(error)
  if not isinstance(error, Exception):
    return None
  failure = write_failure(error)
  if failure:
    return (f"FATAL could not write: {failure}; finished checkpoints and stages are kept: "
            "free the space or lift the limit, then run the same command again")
  if "RESOURCE_EXHAUSTED" in str(error):
    return (f"FATAL out of device memory ({out_of_memory_detail(error)}); finished "
            "checkpoints are kept. Lower train.batch_size or sampling.max_new_tokens, or "
            "raise train.grad_accum_steps or sampling.chunks (or lower sampling.slots with "
            "sampling.engine=continuous), or set train.micro_batch_rows (rows a pass), then "
            "run the same command again: these settings may change on resume")
  return None


def run(main) -> None:
  """app.run(main); bad flags, an invalid config raised inside a stage and a stage
  directory started with other settings each exit with one line, and so do a stop
  signal (Ctrl-C, SIGTERM), a failed write and running out of device memory."""
  def guarded(argv):
    try:
      return main(argv)
    except BaseException as e:  # pylint: disable=broad-except
      line = _fatal_line(e)
      if line is None:
        raise
      # An async checkpoint write cut short leaves a coroutine, unawaited, in the failure's
      # frames; Python would report it, when they are freed, in two more lines.
      warnings.filterwarnings("ignore", message="coroutine .* was never awaited",
                              category=RuntimeWarning)
    gc.collect()
    sys.exit(line)

  for signum in (signal.SIGTERM, signal.SIGHUP):
    signal.signal(signum, _raise_stopped)
  echoes = _ReportedFailureEchoes()
  # orbax logs through absl; asyncio reports its failed write tasks at exit.
  for handler in logging_lib.getLogger().handlers:
    handler.addFilter(echoes)
  for name in ("absl", "asyncio"):
    logging_lib.getLogger(name).addFilter(echoes)
  try:
    app.run(guarded, flags_parser=_parse_flags)
  except KeyboardInterrupt as e:  # while flags were parsed, before main
    sys.exit(_stopped_line(e))


def _stopped_line(error: KeyboardInterrupt) -> str:
  name = str(error) if isinstance(error, Stopped) else "SIGINT"
  where = f" at {loop.position()}" if loop.position() else ""
  return (f"FATAL stopped by {name}{where}; finished checkpoints and stages are kept: "
          "the same command resumes")


def resolved_config(config_flag) -> ml_collections.ConfigDict:
  """The flag's config with value checks applied; exits with one line on error."""
  if not flags.FLAGS["verbosity"].present:
    # Orbax logs every checkpoint operation at INFO; --verbosity=0 shows them.
    logging.set_verbosity(logging.WARNING)
  try:  # config_flags reports a file that failed to load only on first use
    config = config_flag.value
    config.keys()
  except Exception as e:  # pylint: disable=broad-except
    cause = e.__cause__ or e
    sys.exit(f"FATAL {_config_error_line(sys.argv, config_flag.name, cause)}")
  missing = _missing_field_message(sys.argv, config_flag.name, config)
  if missing:
    sys.exit(f"FATAL invalid config: {missing}")
  try:
    config_checks.validate(config)
    if os.environ.get(CHECK_ONLY_ENV):
      # launch_tpu.sh, before it starts anything: values only (paths are the pod's).
      print("config checks passed", flush=True)
      sys.exit(0)
    config_checks.check_paths(config)
  except errors.ConfigError as e:
    sys.exit(f"FATAL invalid config: {e}")
  if "distributed" in config:
    try:
      distributed.initialize(config.distributed)
    except ValueError as e:
      sys.exit(f"FATAL invalid config: {e}")
  if "parallel" in config:
    try:
      distributed.make_mesh(config.parallel.mesh_shape)
    except ValueError as e:
      sys.exit(f"FATAL invalid config: config.parallel.mesh_shape="
               f"{tuple(config.parallel.mesh_shape)}: {e}")
  return config


def _workdir_problem(workdir: str) -> str | None:
  if not workdir or not workdir.strip():
    return "expected a directory path"
  if os.path.islink(workdir) and not os.path.exists(workdir):
    return "is a symbolic link that leads nowhere (broken, or a loop); expected a directory"
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    return "is a file, expected a directory"
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    return f"cannot be created ({e.strerror})"
  probe = os.path.join(workdir, f".write_probe_{os.getpid()}")
  try:  # os.access says yes to root even on a read-only mount
    with open(probe, "w"):
      pass
    os.remove(probe)
  except OSError as e:
    return f"is not writable ({e.strerror})"
  return None


def claim_workdir(workdir: str) -> None:
  """Creates workdir and holds it for this run (workdir_lock); exits with one line if it
  cannot be written or another live run holds it."""
  problem = _workdir_problem(workdir)
  if problem:
    sys.exit(f"FATAL --workdir={workdir!r}: {problem}")
  if distributed.is_main():
    try:
      workdir_lock.hold(workdir)
    except workdir_lock.WorkdirBusyError as e:
      sys.exit(f"FATAL {e}")


def write_config(config: ml_collections.ConfigDict | dict, workdir: str) -> None:
  """Writes the resolved config to <workdir>/config.json (the screen gets one line
  saying where)."""
  if not distributed.is_main():
    return
  if isinstance(config, ml_collections.ConfigDict):
    config = config.to_dict()
  print(f"workdir: {workdir} (resolved config in {os.path.join(workdir, 'config.json')})",
        flush=True)
  # Temporary names of this process: quickstart --seeds runs several on one workdir.
  metrics_lib.write_json(os.path.join(workdir, "config.json"), config)
  metrics_lib.write_json(os.path.join(workdir, "versions.json"), package_versions())


# What a run's numbers depend on besides the code (libtpu: the TPU compiler).
_RECORDED_PACKAGES = ("jax", "jaxlib", "libtpu", "flax", "optax", "orbax-checkpoint",
                      "transformers", "tokenizers", "math-verify", "sympy", "numpy")


def package_versions() -> dict[str, str | None]:
  """Installed versions of the packages a run depends on (None: not installed)."""
  out = {}
  for name in _RECORDED_PACKAGES:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = None
  return out


def prepare_workdir(config: ml_collections.ConfigDict, workdir: str) -> None:
  """claim_workdir, then write_config."""
  claim_workdir(workdir)
  write_config(config, workdir)


def use_compilation_cache(path: str) -> None:
  """Persists compiled XLA programs under `path` (unless $JAX_COMPILATION_CACHE_DIR says
  where): the many stages of one experiment share shapes, so later stages and re-runs
  skip most compilation."""
  import jax  # pylint: disable=g-import-not-at-top
  if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def experiment_setup(config_flag, workdir: str, plan=None, shown=None
                     ) -> tuple[ml_collections.ConfigDict, str, list[str]]:
  """Resolved config, absolute workdir and the stage directories `plan` asks for (one
  per stage it runs; [] without a plan), for a multi-stage experiment script.

  The stages of one experiment share <workdir>/data (datasets and tokenizer)
  unless config.data.data_dir says otherwise. `plan(config, root)` runs the script's
  stages; it is run dry first (stage_runs.dry_run) so that a stage directory holding
  another run is refused before anything is written. `shown(config)` is what
  <workdir>/config.json records (default: the config).
  """
  config = resolved_config(config_flag)
  claim_workdir(workdir)  # before abspath, which would turn '' into the cwd
  root = os.path.abspath(workdir)
  use_compilation_cache(os.path.join(root, "jax_cache"))
  with config.unlocked():
    config.data.data_dir = config.data.data_dir or os.path.join(root, "data")
  planned = []
  if plan is not None:
    with stage_runs.dry_run() as planned:
      plan(config, root)
  write_config(shown(config) if shown else config, root)
  return config, root, planned
