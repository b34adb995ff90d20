#!/bin/sh
# The whole test suite, on real tools: install what is missing, then pytest.
# As root, the suite also creates an unprivileged user and runs the rootless
# cases through it.
set -eu
cd "$(dirname "$0")/.."
./scripts/install.sh test
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
