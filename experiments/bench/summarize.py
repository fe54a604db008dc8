"""Collects run_all.sh's figures into <dir>/summary.json: per comparison our and the
peer's median and range and the ratio (peer seconds / ours, against the peer's fastest
row), and the SmolLM2 step's training time over its token floor.

  python -m experiments.bench.summarize OUT_DIR
"""
import json
import os
import sys


def save(path: str, figures) -> None:
  """Writes a benchmark's figures as JSON (its --out), creating the directory; '' skips."""
  if path:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
      json.dump(figures, f, indent=1)


def _load(out_dir: str, name: str) -> dict | list | None:
  path = os.path.join(out_dir, f"{name}.json")
  return json.load(open(path)) if os.path.exists(path) else None


def comparison(ours: dict, peers: dict) -> dict:
  """ours / peers: {name: {"seconds": median_spread}}; the fastest of each side."""
  best = lambda sides: min(sides.items(), key=lambda kv: kv[1]["seconds"]["median"])
  (our_name, our), (peer_name, peer) = best(ours), best(peers)
  return {"ours": {"row": our_name, **our["seconds"]}, "peer": {"row": peer_name,
                                                                **peer["seconds"]},
          "ratio": peer["seconds"]["median"] / our["seconds"]["median"]}


def summarize(out_dir: str) -> dict:
  summary = {}
  for row in _load(out_dir, "decode") or []:
    sides = row["sides"]
    summary[f"decode_b{row['batch']}"] = {
        **comparison({"ours": sides["ours"]}, {k: v for k, v in sides.items() if k != "ours"}),
        "tokens_generated": {k: v["tokens_generated"] for k, v in sides.items()},
        "peak_gflops": row["peak_gflops"]}
  train = _load(out_dir, "train_step")
  if train:
    sides = train["sides"]
    summary["train_step"] = {
        **comparison({k: v for k, v in sides.items() if k.startswith("ours")},
                     {k: v for k, v in sides.items() if not k.startswith("ours")}),
        "peak_gflops": train["peak_gflops"]}
  rl = _load(out_dir, "rl_step")
  if rl and "trl" in rl["sides"]:
    summary["rl_step"] = {**comparison({"ours": rl["sides"]["ours"]},
                                       {"trl": rl["sides"]["trl"]}),
                          "tokens_generated": {k: v["tokens_generated"]
                                               for k, v in rl["sides"].items()},
                          "peak_gflops": rl["peak_gflops"]}
  floor = _load(out_dir, "train_floor")
  if floor:
    summary["smollm2_train_floor_multiple"] = floor["turns"]["True"]["median_floor_multiple"]
    summary["smollm2_train_floor_multiple_unsorted"] = floor["turns"]["False"][
        "median_floor_multiple"]
  with open(os.path.join(out_dir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=1)
  return summary


TARGETS = {"decode_b16": 2.0, "decode_b64": 2.0, "train_step": 1.5, "rl_step": 3.0}


def markdown(summary: dict) -> str:
  """The comparisons as a table: medians [range] in seconds, the ratio and its target."""
  lines = ["| comparison | ours s, median [range] | fastest peer row: s, median [range] | "
           "ratio | target | met |", "|---|---|---|---|---|---|"]
  cell = lambda d: f"{d['median']:.2f} [{d['min']:.2f}, {d['max']:.2f}]"
  for name, target in TARGETS.items():
    if name in summary:
      c = summary[name]
      lines.append(f"| {name} | {cell(c['ours'])} | {c['peer']['row']}: {cell(c['peer'])} | "
                   f"{c['ratio']:.2f}x | >= {target}x | {'yes' if c['ratio'] >= target else 'no'} |")
    else:
      lines.append(f"| {name} | not run | | | >= {target}x | - |")
  return "\n".join(lines)


if __name__ == "__main__":
  print(markdown(summarize(sys.argv[1])))
