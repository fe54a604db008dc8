"""The README's set-up commands and CI agree."""
import os
import re

from tests.helpers import REPO


def _bash_blocks(text):
  return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_test_one():
  readme = open(os.path.join(REPO, "README.md")).read()
  setup = readme.split("## Set-up", 1)[1].split("\n## ", 1)[0]
  blocks = [b.strip() for b in _bash_blocks(setup)]
  assert len(blocks) == 2
  assert blocks[0] == ("pip install -r requirements.txt && "
                       "python -m experiments.quickstart --workdir=/tmp/hybrid_rl")
  ci = open(os.path.join(REPO, ".ci", "run")).read()
  assert blocks[1] in ci.splitlines()
  assert "pytest" in blocks[1]
