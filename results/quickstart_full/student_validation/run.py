"""Validation avg@8 (200 problems) of each seed's sparse-to-dense student cold start, with the
slice's eval_sft settings (the teacher's cold start on the same problems and samples).

  PYTHONPATH=. python results/quickstart_full/student_validation/run.py DIR OUT 0 1 2

DIR: the full preset's workdir; OUT: where the eval stages go (OUT/seed<N>/eval.json).
"""
import json
import sys

import ml_collections

from hybrid_rl.train import stage_runs


def main():
  root, out_root, seeds = sys.argv[1], sys.argv[2], map(int, sys.argv[3:])
  for s in seeds:
    cfg = ml_collections.ConfigDict(json.load(open(f"{root}/seed{s}/eval_sft/config.json")))
    cfg.init_from = f"{root}/sparse_to_dense/seed{s}/student_sft"
    student = json.load(open(f"{root}/sparse_to_dense/seed{s}/student_sft/config.json"))
    cfg.model = ml_collections.ConfigDict(student["model"])
    out = stage_runs.run_stage(cfg, f"{out_root}/seed{s}")
    teacher = json.load(open(f"{root}/seed{s}/eval_sft/eval.json"))
    print(json.dumps({"seed": s, "student_val": out["overall"]["avg@k"],
                      "teacher_val": teacher["overall"]["avg@k"]}), flush=True)


if __name__ == "__main__":  # the verifier pool's worker processes import this file
  main()
