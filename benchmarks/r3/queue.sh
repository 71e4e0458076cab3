#!/usr/bin/env bash
# The remaining round-3 runs in the order RULE_R3.md's addendum gives (../r1/accuracy_run.sh each; nice it).
set -uo pipefail
cd "$(dirname "$0")/../.."
r() { bash benchmarks/r1/accuracy_run.sh "$@" || echo "FAILED: $*"; }
for s in 1 2; do r r3_M3 $s --head memory --fit stretch --score-top 0; r r3_M4 $s --head memory --fit stretch --score-top 2; done
for s in 0 1 2; do r r3_M5 $s --head memory --fit stretch --score-top 0 --size 384; done
for s in 0 1 2; do r r3_M6 $s --head memory --fit stretch --score-top 0 --coreset 0.03; done
for s in 1 2; do r r3_M1 $s --head memory --fit pad --score-top 2; r r3_M2 $s --head memory --fit pad --score-top 0; done
