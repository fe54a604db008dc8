"""Bad input from the command line: one line naming the field or path and what is
expected, a nonzero exit, nothing built, and an existing workdir left as it was."""
import json
import subprocess
import sys

import pytest

from tests.helpers import REPO
from tests.helpers import run_module
from tests.helpers import subprocess_env

MICRO = ["--config=configs/default.py:micro", "--config.log.progress=False"]


def _paths(tmp_path):
  garbage = tmp_path / "garbage"
  garbage.mkdir()
  (garbage / "notes.txt").write_text("hello")
  fake_gguf = tmp_path / "model.gguf"
  fake_gguf.write_text("not a model")
  unfinished = tmp_path / "unfinished_sft"
  unfinished.mkdir()
  (unfinished / "config.json").write_text(json.dumps({"stage": "sft", "seed": 0}))
  a_file = tmp_path / "a_file"
  a_file.write_text("x")
  not_tokenizer = tmp_path / "tokenizer.json"
  not_tokenizer.write_text('{"not": "a tokenizer"}')
  empty_gsm8k, malformed_gsm8k = tmp_path / "empty_gsm8k", tmp_path / "malformed_gsm8k"
  empty_gsm8k.mkdir()
  (empty_gsm8k / "gsm8k_test.jsonl").write_text("")
  malformed_gsm8k.mkdir()
  (malformed_gsm8k / "gsm8k_test.jsonl").write_text('not json\n{"question": 3}\n[1, 2]\n')
  return {"garbage": garbage, "gguf": fake_gguf, "unfinished": unfinished, "file": a_file,
          "not_tokenizer": not_tokenizer, "empty_gsm8k": empty_gsm8k,
          "malformed_gsm8k": malformed_gsm8k}


CASES = [
    # (arguments, expected text of the FATAL line); {garbage} etc. are filled from _paths.
    (["--config=configs/default.py:tiny", "--config.train.bogus=1"],
     "unknown config field config.train.bogus (did you mean config.train.steps?)"),
    (["--config=configs/default.py:huge"], "unknown preset 'huge' for configs/default.py"),
    (["--config=configs/nonexistent.py"], "No such file or directory: 'configs/nonexistent.py'"),
    (MICRO + ["--config.parallel.mesh_shape=(3,1,1)"],
     "config.parallel.mesh_shape=(3, 1, 1): mesh shape (3, 1, 1) needs 3 devices, found 1"),
    (MICRO + ["--config.init_from=/nonexistent/run"],
     "config.init_from='/nonexistent/run': does not exist"),
    (MICRO + ["--config.init_from={garbage}"], "holds no final/model.json (finished stage)"),
    (MICRO + ["--config.init_from={gguf}"], "is not a GGUF file"),
    (MICRO + ["--config.init_from={unfinished}"], "is a stage workdir that has not finished"),
    (MICRO + ["--config.stage=distill", "--config.init_from=", "--config.distill.teacher_from={gguf}"],
     "config.distill.teacher_from="),
    (MICRO + ["--config.data.name=gsm8k", "--config.data.manual_dir={garbage}"],
     "expected a directory holding gsm8k_test.jsonl or gsm8k_train.jsonl"),
    (MICRO + ["--config.tokenizer.path=/nonexistent/tokenizer.json"],
     "config.tokenizer.path='/nonexistent/tokenizer.json': does not exist"),
    (MICRO + ["--config.stage=eval", "--config.eval.split=valid"],
     "config.eval.split='valid': expected a split of"),
    (MICRO + ["--config.data.synthetic.families=easy,weird"],
     "config.data.synthetic.families='easy,weird': expected a comma list of easy, hard"),
    (MICRO + ["--config.data.train_families=medium"], "config.data.train_families='medium'"),
    (MICRO + ["--config.model.num_kv_heads=3"],
     "config.model.num_heads=4: must be a multiple of model.num_kv_heads=3"),
    (MICRO + ["--config.seed=-1"], "config.seed=-1: must be in [0, 2^32)"),
    (MICRO + ["--config.seed=99999999999999999999"], "must be in [0, 2^32)"),
    (MICRO + ["--config.rl.ada.round_size=0"], "config.rl.ada.round_size=0: must be > 0"),
    (MICRO + ["--config.rl.ada.max_rounds=0"], "config.rl.ada.max_rounds=0: must be > 0"),
    (MICRO + ["--config.data.synthetic.num_train=0"], "config.data.synthetic.num_train=0: must be > 0"),
    (MICRO + ["--config.data.train_split=train[:0%]"],
     "config.data.train_split='train[:0%]': selects no example of the 300 in that split"),
    (MICRO + ["--config.stage=grpo", "--config.eval.every=1", "--config.eval.split=test[50%:10%]"],
     "config.eval.split='test[50%:10%]': selects no example"),
    (MICRO + ["--config.tokenizer.path={not_tokenizer}"], "is not a tokenizer.json"),
    (MICRO + ["--config.train={{'steps': 2}}"],
     "config.train.batch_size is missing: an override replaced config.train with {{'steps': 2}}"),
    (MICRO + ["--config.parallel.mesh_shape=abc"],
     "config.parallel.mesh_shape=('abc',): expected three integers"),
    (MICRO + ["--config.model.num_kv_heads=0"], "config.model.num_kv_heads=0: must be > 0"),
    (MICRO + ["--config.tokenizer.vocab_size=10"], "config.tokenizer.vocab_size=10: must be >= 258"),
    (MICRO + ["--config.data.name=gsm8k", "--config.data.manual_dir={empty_gsm8k}"],
     "gsm8k_test.jsonl holds no valid row"),
    (MICRO + ["--config.data.name=gsm8k", "--config.data.manual_dir={malformed_gsm8k}"],
     "gsm8k_test.jsonl holds no valid row"),
    # Switches that would train nothing.
    (MICRO + ["--config.stage=grpo", "--config.sampling.num_samples=1"],
     "config.sampling.num_samples=1: GRPO's baseline is the mean of a prompt's group"),
    (MICRO + ["--config.train.steps=0"],
     "config.train.steps=0: a sft stage of no steps would export its starting weights"),
    (MICRO + ["--config.train.grad_accum_steps=3"],
     "config.train.grad_accum_steps=3: must divide the 8 rows of an update"),
    (MICRO + ["--config.stage=grpo", "--config.train.grad_accum_steps=5"],
     "must divide the 32 rows of an update"),
    (MICRO + ["--config.rl.ada.threshold=5.0"], "config.rl.ada: threshold=5.0: must be in [0, 1)"),
    (MICRO + ["--config.data.max_prompt_len=2000"],
     "must be <= model.max_position_embeddings=1024"),
    (MICRO + ["--config.optim.learning_rate=inf"],
     "config.optim.learning_rate=inf: must be a finite number"),
    (MICRO + ["--config.train.batch_size=abc"], "--config.train.batch_size=abc"),
]


@pytest.mark.parametrize("args,expected", CASES, ids=[c[1][:40] for c in CASES])
def test_bad_input_is_one_line_before_anything_is_built(tmp_path, args, expected):
  paths = _paths(tmp_path)
  args = [a.format(**paths) for a in args]
  expected = expected.format(**paths)
  workdir = tmp_path / "run"
  proc = run_module("experiments.train", f"--workdir={workdir}", *args, check=False)
  assert proc.returncode != 0
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert len(lines) == 1 and lines[0].startswith("FATAL") and expected in lines[0], proc.stderr
  assert not workdir.exists()  # failed before the workdir, let alone a model


@pytest.mark.parametrize("workdir,expected", [
    ("", "--workdir='': expected a directory path"),
    ("{file}", "is a file, expected a directory"),
    ("/proc/no/such/dir", "cannot be created"),
])
def test_unusable_workdir_is_one_line(tmp_path, workdir, expected):
  workdir = workdir.format(**_paths(tmp_path))
  proc = run_module("experiments.train", f"--workdir={workdir}", *MICRO, check=False)
  assert proc.returncode != 0
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert len(lines) == 1 and expected in lines[0], proc.stderr


def test_bad_override_leaves_an_existing_run_as_it_was(tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "config.json").write_text('{"stage": "sft"}')
  (workdir / "metrics.jsonl").write_text('{"step": 1}\n')
  before = {p.name: p.read_bytes() for p in workdir.iterdir()}
  proc = run_module("experiments.train", f"--workdir={workdir}", *MICRO,
                    "--config.optim.learning_rate=nan", check=False)
  assert proc.returncode != 0 and "must be a finite number" in proc.stderr
  assert {p.name: p.read_bytes() for p in workdir.iterdir()} == before


def test_out_of_device_memory_is_one_line_naming_the_knobs():
  """XLA's RESOURCE_EXHAUSTED inside a stage: one line with the failed allocation and the
  settings that shrink it, instead of a traceback."""
  script = ("import jax.numpy as jnp\nfrom hybrid_rl import cli\n"
            "cli.run(lambda argv: jnp.ones((2**40,), jnp.float32).block_until_ready())\n")
  proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=subprocess_env(),
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0
  lines = [l for l in proc.stderr.splitlines() if l.strip() and not l.startswith(("I1", "W1"))]
  assert len(lines) == 1, proc.stderr
  assert lines[0].startswith("FATAL out of device memory (an allocation of 4096.0 GiB failed)")
  assert "train.grad_accum_steps" in lines[0] and "sampling.chunks" in lines[0]
  assert "sampling.slots" in lines[0]


def test_a_held_out_split_larger_than_the_problem_space_is_one_line(tmp_path):
  proc = run_module("experiments.train", f"--workdir={tmp_path / 'run'}", *MICRO,
                    "--config.data.synthetic.families=hard",
                    "--config.data.synthetic.num_validation=5000", check=False)
  assert proc.returncode != 0
  lines = [l for l in proc.stderr.splitlines() if l.startswith("FATAL")]
  assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
  assert "config.data.synthetic.num_validation=5000: synthetic_math holds only about" in lines[0]
