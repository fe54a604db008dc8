"""The README's first command: `python -m experiments.quickstart --workdir=DIR`.

Runs every recipe on the embedded default, sharing one SFT cold start of the
tiny model per seed (sparse-to-dense distils it, as the teacher, into a micro-sized
student with its own SFT; in the micro preset it is the student):
  slice            SFT -> eval -> GRPO (equivalence verifier) -> eval
  hero             reward model on the SFT policy's samples; regime x method arms
  reinforce_ada    GRPO (n) vs Ada-Pos vs Ada-Balance
  sparse_to_dense  tiny teacher -> micro student bridge and its controls
The experiment blocks are the configs of the experiment scripts
(configs/hero.py, configs/reinforce_ada.py, configs/sparse_to_dense.py) and
take overrides as usual: --config.hero.grpo.steps=20. Shared blocks (data,
tokenizer, verifier, log) come from the top level.

Presets:
  default  one seed, short stages on the testbed of `_quick` (four-step chains of
           small operands, half the SFT solutions answer-only, the "forms" hard
           family); sparse-to-dense distils the shared SFT run (the teacher) into a
           micro-sized student; HERO's hard regime, sparse-to-dense's recipe,
           Stage 3 and direct-GRPO arms, one sample per test problem: the whole
           job in minutes on 2 CPU cores
  full     the default's testbed at 3 seeds (5 for Reinforce-Ada; paired 95%
           intervals), longer RL stages, every arm evaluated on all 400 test problems,
           HERO's three regimes and its batch-std / variance-weighting / naive-sum
           ablations, sparse-to-dense's pre-RL-teacher and FKL-only controls
  micro    CI-sized
"""
import ml_collections

from configs import default
from configs import hero
from configs import reinforce_ada
from configs import sparse_to_dense

SHARED_BLOCKS = ("data", "tokenizer", "verifier", "log", "parallel", "distributed")


def get_config(preset: str = "default") -> ml_collections.ConfigDict:
  if preset not in ("default", "full", "micro"):
    raise ValueError(f"unknown preset {preset!r} for configs/quickstart.py "
                     "(choose default, full or micro)")
  micro = preset == "micro"
  sub = "micro" if micro else "tiny"
  config = default.get_config("micro" if micro else "tiny")
  config.preset = preset
  config.stage = "quickstart"
  config.num_seeds = 3 if preset == "full" else 1
  # Seeds run side by side in this many processes of the command (each with --seeds=s),
  # then the command writes the tables; 1: one after the other in this process.
  config.seed_processes = 1
  config.recipes = "slice,hero,reinforce_ada,sparse_to_dense"
  # The shared cold start: SFT on the first half of train. The slice's GRPO and
  # the other recipes' RL stages use the second half.
  config.sft = ml_collections.ConfigDict(dict(
      steps=400, batch_size=32, learning_rate=3e-3, schedule="cosine", warmup_steps=30,
      split="train[:50%]"))
  # 60 x 64 prompts x 8 at lr 1e-4: the setting whose validation gain over SFT
  # exceeded the spread over 3 seeds (higher rates or 16 prompts were worse).
  config.grpo = ml_collections.ConfigDict(dict(
      steps=60, batch_size=64, learning_rate=1e-4, schedule="constant", warmup_steps=0,
      num_samples=8, split="train[50%:]"))
  if not micro:
    config.eval.num_samples = 8  # the slice's validation avg@8
  config.hero = hero.get_config(sub)
  config.reinforce_ada = reinforce_ada.get_config(sub)
  config.sparse_to_dense = sparse_to_dense.get_config(sub)
  for block in (config.hero, config.reinforce_ada, config.sparse_to_dense):
    block.num_seeds = config.num_seeds
  if preset == "default":
    _quick(config)
  elif preset == "full":
    _full(config)
  else:
    config.sft.update(steps=4, batch_size=8)
    config.grpo.update(steps=2, batch_size=4, num_samples=4)
  if micro:
    _share_cold_start(config, "student")
  else:
    _micro_student(config)
    _share_cold_start(config, "teacher")
    _learning_curves(config)
    if preset == "full":  # Reinforce-Ada's learning speed: validation every 2 steps
      default.learning_curves(config.reinforce_ada, config.reinforce_ada.grpo.steps, points=10)
  return config


def _learning_curves(config: ml_collections.ConfigDict) -> None:
  """The slice's GRPO and, at the default preset's shorter RL stages, every
  recipe's: curves of 5 points or more (default.learning_curves)."""
  s = config.sparse_to_dense
  for block, steps in [(config, config.grpo.steps), (config.hero, config.hero.grpo.steps),
                       (config.reinforce_ada, config.reinforce_ada.grpo.steps),
                       (s, min(s.teacher_grpo.steps, s.student_grpo.steps))]:
    default.learning_curves(block, steps)


def shared_cold_start(config: ml_collections.ConfigDict) -> str:
  """Which sparse-to-dense cold start is the shared SFT run ("student" or "teacher":
  same model, steps, batch, schedule and split), or "" when the recipe trains both."""
  s2d = config.sparse_to_dense
  for role in ("student", "teacher"):
    if (s2d[f"{role}_model"].to_dict() == config.model.to_dict()
        and all(s2d[f"{role}_sft"][k] == config.sft[k] for k in config.sft)):
      return role
  return ""


def _share_cold_start(config: ml_collections.ConfigDict, role: str) -> None:
  """Makes sparse-to-dense's `role`_sft block the shared SFT run and moves the
  recipe's labelled and bridge prompts past the SFT's train[:50%], so that Stage 1,
  direct GRPO and Stage 3 use prompts whose solutions neither cold start saw."""
  s = config.sparse_to_dense
  s[f"{role}_sft"].update(**{k: config.sft[k] for k in s[f"{role}_sft"]})
  s.teacher_sft.split = s.student_sft.split = config.sft.split
  s.teacher_grpo.split = "train[50%:70%]"
  s.fkl.split = s.opd.split = "train[70%:85%]"
  s.student_grpo.split = "train[85%:]"


def _micro_student(config: ml_collections.ConfigDict) -> None:
  """Sparse-to-dense's teacher is the shared SFT run and its student a micro-sized
  model (3.7x cheaper per step) with the same SFT: a teacher clearly above its
  student (42.5 vs 28.7 in results/quickstart_default) without a second SFT of a
  larger model."""
  s = config.sparse_to_dense
  s.teacher_model = config.model.copy_and_resolve_references()
  s.student_model = default.model_block("micro")
  s.student_sft.update(**{k: config.sft[k] for k in s.student_sft})


def _full(config: ml_collections.ConfigDict) -> None:
  """The default preset's testbed at 3 seeds (5 for Reinforce-Ada), longer RL stages
  and evaluations large enough for paired intervals: the slice, HERO's main table with
  the std_mode=batch, variance-weighting and naive-sum ablations, Reinforce-Ada's 3
  arms with learning curves every 2 steps, sparse-to-dense's arms and controls."""
  # The testbed of `_quick`, chosen for its premises before any arm was compared: the
  # SFT of 1000 steps leaves the hard ("forms") family at 25-50% by the oracle (37.4%
  # in results/quickstart_default) while the strict checker accepts ~20% of those
  # answers at precision 1.0, and leaves the easy chains for RL to learn to work.
  config.data.synthetic.update(direct_fraction=0.5, chain_ops=4, operand_scale=5,
                               hard_family="forms")
  config.sft.steps = 1000
  config.seed_processes = 3  # seeds side by side: 3 processes on the 2 cores
  config.grpo.update(steps=50, batch_size=32)
  config.eval.max_examples = 200  # all of validation, 8 samples each
  # Test has 400 problems, 200 per family: every arm is evaluated on all of them.
  full_test = dict(max_examples=400)
  h = config.hero
  h.hero.update(dense_ranges="", alphas=f"{h.hero.alpha_easy}")  # dense / alpha sweeps: hero.py:tiny
  h.rm.update(steps=150, split="train[:800]")
  h.reward_model.update(samples_per_prompt=2, split="train[:800]")
  h.grpo.steps = 16
  h.eval.update(**full_test, num_samples=4)
  a = config.reinforce_ada
  # 5 seeds: at the spread of the last full run's Ada-Balance - GRPO differences (sd 0.45
  # points over 3 seeds) a paired t-test over 5 seeds detects 0.8 points 4 times in 5,
  # over 3 seeds only 1.4 (paired.minimum_detectable_difference). Measured on this preset:
  # 1.1 (results/quickstart_full, "Paired differences").
  a.num_seeds = 5
  a.grpo.steps = 20
  a.eval.update(**full_test, num_samples=8)
  s = config.sparse_to_dense
  # The paper's comparisons (recipe vs direct GRPO, Stage 3, the pre-RL teacher, FKL
  # alone); the replay and OPD-only controls stay in sparse_to_dense.py:tiny.
  s.arms = "recipe,stage3,direct_grpo,pre_rl_bridge,fkl_only"
  for block in (s.teacher_grpo, s.student_grpo):
    block.steps = 20
  s.fkl.steps = 50
  s.opd.steps = 30
  s.eval.update(**full_test, num_samples=2)


def _quick(config: ml_collections.ConfigDict) -> None:
  """One seed in minutes on 2 CPU cores, on a testbed where a 1000-step SFT leaves
  something for RL to learn (results/quickstart_default): every easy problem four
  dependent one-operation steps of operands up to 6, which the 4-layer student works
  through far better than it answers at once, and half of the SFT solutions
  answer-only, so that GRPO learns to work (25 -> 34 validation avg@8 in 12 steps of
  32 x 8 in a probe); the hard family is hard_family=forms, the easy word problems
  with answers a strict checker misses (HERO's premise)."""
  config.data.synthetic.update(direct_fraction=0.5, chain_ops=4, operand_scale=5,
                               hard_family="forms")
  config.sft.steps = 1000
  config.grpo.update(steps=10, batch_size=32)
  config.eval.update(max_examples=200, num_samples=8)  # the slice's paired interval
  small_eval = dict(max_examples=100, num_samples=1)
  h = config.hero
  h.hero.update(ablations=False, regimes="hard")  # the hard-to-verify regime HERO is for
  h.rm.update(steps=60, split="train[:800]")
  h.reward_model.update(samples_per_prompt=2, split="train[:800]")
  # RL stages of 10 steps evaluate every 2 (learning_curves): 5 curve points for
  # the price of the 8 evaluations an 8-step stage would make.
  h.grpo.update(steps=10, batch_size=16, num_samples=4)
  h.eval.update(**small_eval)
  a = config.reinforce_ada
  a.grpo.update(steps=10, batch_size=8)
  a.eval.update(**small_eval)
  s = config.sparse_to_dense
  s.arms = "recipe,stage3,direct_grpo"  # the paper's main comparison; full adds controls
  s.teacher_grpo.update(steps=10, batch_size=16, num_samples=4)
  s.fkl.update(steps=20)
  s.opd.update(steps=10, batch_size=16, num_samples=2)
  s.student_grpo.update(steps=10, batch_size=16, num_samples=4)
  s.eval.update(**small_eval)
