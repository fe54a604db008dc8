# Record of a probe run at commit d8bf1dd (2026-12-02); kept as written then, not maintained: the package has changed since.
"""The full preset's micro student: SFT of STEPS steps, then its validation avg@8 with the
slice's eval_sft settings (the teacher's cold start is measured on the same 200 problems).

  PYTHONPATH=. python results/quickstart_full/student_validation/probe.py DIR OUT STEPS SEED

DIR: the full preset's workdir (its seed<N>/eval_sft and sparse_to_dense/seed<N>/student_sft
give the settings, steps aside); OUT/seed<N>/{student_sft,eval_val}: the probe's stages.
"""
import json
import sys

import ml_collections

from hybrid_rl.train import stage_runs


def main():
  root, out, steps, s = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
  sft = ml_collections.ConfigDict(json.load(open(
      f"{root}/sparse_to_dense/seed{s}/student_sft/config.json")))
  sft.train.steps = steps
  stage_runs.run_stage(sft, f"{out}/seed{s}/student_sft")
  cfg = ml_collections.ConfigDict(json.load(open(f"{root}/seed{s}/eval_sft/config.json")))
  cfg.init_from = f"{out}/seed{s}/student_sft"
  cfg.model = sft.model
  res = stage_runs.run_stage(cfg, f"{out}/seed{s}/eval_val")
  teacher = json.load(open(f"{root}/seed{s}/eval_sft/eval.json"))
  print(json.dumps({"seed": s, "steps": steps, "student_val": res["overall"]["avg@k"],
                    "teacher_val": teacher["overall"]["avg@k"]}), flush=True)


if __name__ == "__main__":  # the verifier pool's worker processes import this file
  main()
