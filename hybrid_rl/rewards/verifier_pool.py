"""Time-bounded verification in a pool of worker processes.

Each answer is checked in a worker process under a CPU-time bound
(`timeout_s` of the worker's own CPU time, ITIMER_PROF): an answer that needs
more (sympy asked to expand 10^{10^{10^{10}}}) is reported as `timeout`. CPU
time does not depend on how loaded the machine is, so the verdict is the same
on a busy machine as on an idle one (a wall-clock bound flipped borderline
answers with the load). Computation inside C code ignores the signal, so a
wall-clock bound (`wall_timeout_s`, 2 x timeout_s + 1 s) stays as a safety
net: a worker past it is killed and replaced and its answer reported as
`timeout`. A worker that dies (crash, out of memory) is replaced and its answer
reported as `error`. The caller is never blocked for more than the wall bound
on any single answer beyond the time the queue needs.

Only what needs sympy travels: the strict verifier (string rules, linear
time) and answers that are plain integers like their gold
(`verifiers.integer_verdict`) are judged in the caller's process, and a
(response, gold) pair that repeats within a call is judged once.

Workers are started by a forkserver that has already imported the verifiers
and the parent's main module, so replacing one is quick and never forks the
JAX process itself. A worker takes tasks only after it reports ready, so a
slow start is never mistaken for a hung answer.
"""
import atexit
import collections
import functools
import multiprocessing
from multiprocessing import connection
import signal
import time
from typing import Sequence

from hybrid_rl.rewards import verifiers

_CONTEXT = None


def _context():
  global _CONTEXT
  if _CONTEXT is None:
    _CONTEXT = multiprocessing.get_context("forkserver")
    # "__main__" first: each worker otherwise re-imports the parent's main module.
    _CONTEXT.set_forkserver_preload(["__main__", "hybrid_rl.rewards.verifiers", "math_verify",
                                     "sympy"])
  return _CONTEXT


class _CpuTimeExceeded(BaseException):
  """Raised in a worker by its CPU-time timer (a BaseException, so sympy's and
  math-verify's `except Exception` blocks cannot swallow it)."""


_armed = False  # a late SIGPROF after the task finished must not raise


def _on_cpu_limit(signum, frame):
  del signum, frame
  if _armed:
    raise _CpuTimeExceeded()


def _judge(kind: str, response, gold, cpu_limit_s: float) -> verifiers.Verdict:
  global _armed
  try:
    _armed = True
    signal.setitimer(signal.ITIMER_PROF, cpu_limit_s)
    verdict = verifiers.VERIFIERS[kind](response, gold)
  except _CpuTimeExceeded:
    verdict = verifiers.Verdict(False, "timeout")
  except Exception:  # pylint: disable=broad-except
    verdict = verifiers.Verdict(False, "error")
  finally:
    _armed = False
    signal.setitimer(signal.ITIMER_PROF, 0)
  return verdict


def _worker(conn, cpu_limit_s: float) -> None:
  signal.signal(signal.SIGPROF, _on_cpu_limit)
  # Ctrl-C reaches the whole process group: the parent reports it; a worker's own
  # traceback would only bury that line (the parent ends the workers).
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  conn.send("ready")
  while True:
    try:
      task = conn.recv()
    except EOFError:
      return
    if task is None:
      return
    index, kind, response, gold = task
    conn.send((index, _judge(kind, response, gold, cpu_limit_s)))


def _strict_or_error(response, gold) -> verifiers.Verdict:
  try:
    return verifiers.strict_verify(response, gold)
  except Exception:  # pylint: disable=broad-except
    return verifiers.Verdict(False, "error")


class _Worker:

  def __init__(self, cpu_limit_s: float):
    self.conn, child = _context().Pipe()
    self.process = _context().Process(target=_worker, args=(child, cpu_limit_s), daemon=True)
    self.process.start()
    child.close()
    self.ready = False
    self.task: int | None = None
    self.started = 0.0

  def kill(self) -> None:
    self.process.kill()
    self.process.join(timeout=5)
    self.conn.close()


class VerifierPool:
  """Pool of verifier processes. Use as a context manager or call close()."""

  def __init__(self, num_workers: int = 2, timeout_s: float = 2.0, start_timeout_s: float = 120.0):
    if num_workers < 1 or timeout_s <= 0:
      raise ValueError("num_workers must be >= 1 and timeout_s > 0")
    self.timeout_s = timeout_s  # CPU seconds per answer
    self.wall_timeout_s = 2 * timeout_s + 1.0  # for C code that ignores the CPU timer
    self.start_timeout_s = start_timeout_s
    self._workers = [_Worker(timeout_s) for _ in range(num_workers)]
    self.counts = collections.Counter()  # status -> number of verdicts so far

  def verify(self, kind: str, responses: Sequence[str | bytes], golds: Sequence[str]
             ) -> list[verifiers.Verdict]:
    """Verdicts for responses[i] against golds[i] with verifier `kind`."""
    if kind not in verifiers.VERIFIERS:
      raise ValueError(f"unknown verifier {kind!r} (choose {', '.join(verifiers.VERIFIERS)})")
    if len(responses) != len(golds):
      raise ValueError(f"{len(responses)} responses but {len(golds)} gold answers")
    # None: left for a worker.
    in_process = _strict_or_error if kind == "strict" else functools.partial(
        verifiers.integer_verdict, kind)
    results: list[verifiers.Verdict | None] = [
        in_process(r, g) for r, g in zip(responses, golds)]
    first_of: dict[tuple, int] = {}  # (response, gold) -> the index that is judged
    repeats: list[tuple[int, int]] = []
    for i, r in enumerate(results):
      if r is None:
        key = (responses[i], golds[i])
        if key in first_of:
          repeats.append((i, first_of[key]))
        else:
          first_of[key] = i
    pending = collections.deque(first_of.values())
    while pending or any(w.task is not None for w in self._workers):
      self._await_ready()
      for i, w in enumerate(self._workers):
        if w.ready and w.task is None and pending:
          index = pending.popleft()
          try:
            w.conn.send((index, kind, responses[index], golds[index]))
          except (BrokenPipeError, OSError):
            self._replace(i, index, results, "error")
            continue
          w.task, w.started = index, time.monotonic()
      busy = [w for w in self._workers if w.task is not None]
      if not busy:
        continue
      deadline = min(w.started for w in busy) + self.wall_timeout_s
      ready = connection.wait([w.conn for w in busy], timeout=max(0.0, deadline - time.monotonic()))
      for i, w in enumerate(self._workers):
        if w.task is None:
          continue
        if w.conn in ready:
          try:
            index, verdict = w.conn.recv()
            results[index], w.task = verdict, None
          except (EOFError, OSError):
            self._replace(i, w.task, results, "error")
        elif time.monotonic() - w.started > self.wall_timeout_s:
          self._replace(i, w.task, results, "timeout")
    for i, judged in repeats:
      results[i] = results[judged]
    self.counts.update(r.status for r in results)
    return results

  def _await_ready(self) -> None:
    """Blocks until at least one worker is ready (workers that never start are replaced)."""
    deadline = time.monotonic() + self.start_timeout_s
    while not any(w.ready for w in self._workers):
      waiting = [w for w in self._workers if not w.ready]
      for w in connection.wait([w.conn for w in waiting],
                               timeout=max(0.0, deadline - time.monotonic())):
        for worker in waiting:
          if worker.conn is w:
            try:
              worker.ready = worker.conn.recv() == "ready"
            except (EOFError, OSError):
              pass
      if time.monotonic() > deadline:
        raise RuntimeError(f"no verifier worker started within {self.start_timeout_s:.0f} s")
    for w in self._workers:  # collect any other ready signals without blocking
      if not w.ready and w.conn.poll():
        try:
          w.ready = w.conn.recv() == "ready"
        except (EOFError, OSError):
          pass

  def _replace(self, i: int, index: int, results: list, status: str) -> None:
    self._workers[i].kill()
    self._workers[i] = _Worker(self.timeout_s)
    results[index] = verifiers.Verdict(False, status)

  def close(self) -> None:
    for w in self._workers:
      try:
        w.conn.send(None)
      except (BrokenPipeError, OSError):
        pass
      w.process.join(timeout=1)
      if w.process.is_alive():
        w.process.kill()
      w.conn.close()
    self._workers = []

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


_SHARED: dict[tuple[int, float], VerifierPool] = {}


def shared(num_workers: int = 2, timeout_s: float = 2.0) -> VerifierPool:
  """A pool that lives as long as the process (one per setting).

  Stages run one after another by an experiment script reuse its started
  workers instead of paying their start-up (about a second) each time.
  """
  key = (num_workers, float(timeout_s))
  if key not in _SHARED or not _SHARED[key]._workers:  # pylint: disable=protected-access
    _SHARED[key] = VerifierPool(num_workers, timeout_s)
    atexit.register(_SHARED[key].close)
  return _SHARED[key]
