#!/usr/bin/env bash
# Gradescope image set-up: runs once, as root, when the autograder is built.
# The autograder zip holds this file, run_autograder, and the course repository's files
# (levers/, solutions/, requirements.txt, pyproject.toml) at its root.
set -euo pipefail
apt-get update
# bubblewrap builds the sandbox every student kernel runs in (levers grade refuses without it).
apt-get install -y python3.11 python3.11-venv bubblewrap
cd /autograder/source
python3.11 -m venv .venv
# torch's CPU wheels: the default index would pull a multi-gigabyte CUDA build.
.venv/bin/pip install --extra-index-url https://download.pytorch.org/whl/cpu -r requirements.txt
.venv/bin/pip install --no-deps -e .
