#!/usr/bin/env bash
# Gradescope image set-up: runs once, as root, when the autograder is built (Ubuntu 22.04 or
# 24.04 base image). The autograder zip holds this file, run_autograder, and the course
# repository's levers/, solutions/, grading/requirements.txt and pyproject.toml at its root.
#
# Only what grading needs is installed (grading/requirements.txt: torch and the kernel stack),
# not the book or the test tools.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update
# bubblewrap builds the sandbox every student kernel runs in (levers grade refuses without it);
# python3-venv because Ubuntu's python3 ships without it.
apt-get install -y --no-install-recommends python3 python3-venv bubblewrap
cd /autograder/source
# Ubuntu 22.04 may have python3.11; 24.04 has 3.12. The lock installs on either (>= 3.11).
PYTHON=$(command -v python3.11 || command -v python3)
"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), sys.version'
"$PYTHON" -m venv .venv
# torch's CPU wheels: the default index would pull a multi-gigabyte CUDA build.
.venv/bin/pip install --quiet --extra-index-url https://download.pytorch.org/whl/cpu \
  -r grading/requirements.txt
.venv/bin/pip install --quiet --no-deps --no-build-isolation -e . \
  || .venv/bin/pip install --quiet --no-deps -e .
