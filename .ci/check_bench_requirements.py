"""Fails when installing requirements-bench.txt would change a package the test
requirements installed (pip's resolver, nothing installed): the peers must not break the
environment the parity tests run in."""
import importlib.metadata
import json
import subprocess
import sys
import tempfile

with tempfile.NamedTemporaryFile(suffix=".json") as report:
  subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet",
                  "--report", report.name, "-r", "requirements-bench.txt"], check=True)
  planned = json.load(open(report.name))["install"]
changed = []
for item in planned:
  name, version = item["metadata"]["name"], item["metadata"]["version"]
  try:
    installed = importlib.metadata.version(name)
  except importlib.metadata.PackageNotFoundError:
    continue
  if installed != version:
    changed.append(f"{name} {installed} -> {version}")
if changed:
  sys.exit("requirements-bench.txt would change the test environment: " + ", ".join(changed))
print(f"requirements-bench.txt installs on top of the test requirements "
      f"({len(planned)} new packages, none changed)")
