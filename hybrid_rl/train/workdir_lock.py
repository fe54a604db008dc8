"""One run per workdir: `<workdir>/.lock`, held with flock for the life of the process.

The kernel releases a flock when its holder exits, however it exits (a crash, SIGKILL),
so a lock file left behind by a dead run is never mistaken for a live one: it is taken
over. The file holds the holder's pid so that a refused run can name it. A process that
a holder starts on the same workdir (the quickstart's seed processes) is let in through
HOLDER_ENV, which the holder sets to its pid for its children.
"""
import fcntl
import os

HOLDER_ENV = "HYBRID_RL_WORKDIR_HOLDER"
_held: dict[str, int] = {}  # workdir (absolute) -> open file descriptor


class WorkdirBusyError(RuntimeError):
  """Another live process holds the workdir."""


def _holder_pid(fd: int) -> str:
  os.lseek(fd, 0, os.SEEK_SET)
  return os.read(fd, 64).decode(errors="replace").strip() or "?"


def hold(workdir: str) -> None:
  """Takes workdir's lock for this process (idempotent); raises WorkdirBusyError naming
  the live holder. A child of the holder (HOLDER_ENV = its parent's pid, which holds the
  lock) proceeds without taking it."""
  path = os.path.abspath(workdir)
  if path in _held:
    return
  fd = os.open(os.path.join(path, ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    holder = _holder_pid(fd)
    os.close(fd)
    if os.environ.get(HOLDER_ENV) == holder == str(os.getppid()):
      return
    raise WorkdirBusyError(
        f"{workdir} is in use by another run (pid {holder}); wait for it to end or stop it "
        "(kill " + holder + "), then run the same command again") from None
  os.ftruncate(fd, 0)
  os.write(fd, str(os.getpid()).encode())
  _held[path] = fd


def child_env() -> dict[str, str]:
  """The environment for a process this one starts on a workdir it holds."""
  return {**os.environ, HOLDER_ENV: str(os.getpid())}
