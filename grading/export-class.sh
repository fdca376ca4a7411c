#!/usr/bin/env bash
# The class CSV from the GitHub Actions runs: downloads the artifact "levers-score" of the
# latest run of the workflow "levers grade" in every repository of ORG whose name starts with
# PREFIX, and merges them (one row per repository, i.e. per student).
#
#   grading/export-class.sh ORG PREFIX [OUT.csv] [canvas|moodle]
#
# Needs the GitHub CLI (gh), logged in with read access to the students' repositories.
set -euo pipefail
ORG=$1 PREFIX=$2 OUT=${3:-class.csv} LMS=${4:-}
RUNS=$(mktemp -d)
for repo in $(gh repo list "$ORG" --limit 1000 --json name -q '.[].name' | grep "^$PREFIX"); do
  run=$(gh run list -R "$ORG/$repo" -w "levers grade" -L 1 --json databaseId -q '.[0].databaseId')
  if [ -z "$run" ]; then echo "no run in $repo" >&2; continue; fi
  gh run download "$run" -R "$ORG/$repo" -n levers-score -D "$RUNS/$repo" \
    || echo "no score in $repo (run $run)" >&2
done
python3 "$(dirname "$0")/../levers/grading/platforms.py" class-csv "$RUNS" --out "$OUT" \
  --title "$PREFIX" ${LMS:+--lms "$LMS"}
