#!/usr/bin/env bash
# Type-check the essa package with mypy (settings: [tool.mypy] in pyproject.toml).
#
# The installed package maps top-level folders into it (rewards/ -> essa.rewards, search/ ->
# essa.search, workers/ -> essa.workers, configs/ -> essa.configs; pyproject's package-dir), which
# mypy cannot read from an editable install. This script lays the package out as it is installed,
# with symbolic links to the files in this tree, and checks that; errors name essa/... paths
# (essa/rewards/x.py is rewards/x.py here).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
view="$(mktemp -d)"
trap 'rm -rf "$view"' EXIT
mkdir "$view/essa"
for entry in "$root"/essa/*; do ln -s "$entry" "$view/essa/"; done
for folder in rewards search workers configs; do ln -s "$root/$folder" "$view/essa/$folder"; done
cd "$view"
exec "$python" -m mypy --config-file "$root/pyproject.toml" --cache-dir "$root/.mypy_cache" -p essa "$@"
