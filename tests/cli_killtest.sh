#!/usr/bin/env bash
# Crash safety of nnz train: SIGKILL at random moments (scripts/kill-test, a short version: 10 plain
# iterations, 3 with --prune autosparse, 3 with --prune gmp; 3/1/1 under the sanitizers), and a diverging run (NaN loss) that must
# keep the last good checkpoint. $1 = the nnz binary.
set -u
. "$(dirname "$0")/support/cli_lib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
cli_setup "$@"

# ---- --checkpoint-every: documented, bad values are usage errors
expect 0 "$NNZ" train --help
awk '/^  --/ { on = ($1 == "--checkpoint-every") } on' out | grep -q "default: 0" || fail "--checkpoint-every has no default in --help"
expect 2 "$NNZ" train --checkpoint-every -1;  has err "--checkpoint-every"
expect 2 "$NNZ" train --checkpoint-every 1.5; has err "--checkpoint-every"
expect 2 "$NNZ" train --checkpoint-every;     has err "--checkpoint-every needs a value"

# ---- SIGKILL at random points: every checkpoint loads and resumes to the uninterrupted run's bytes
# under the sanitizers and valgrind (NNZ_SANITIZE set) every run is 10-50x slower: fewer kills
PLAIN=10 PRUNED=3
if [ -n "${NNZ_SANITIZE:-}" ]; then PLAIN=3 PRUNED=1; fi
bash "$HERE/../scripts/kill-test" "$NNZ" $PLAIN || fail "kill-test (plain) failed"
bash "$HERE/../scripts/kill-test" "$NNZ" $PRUNED --prune autosparse --threshold-init -5 || fail "kill-test (autosparse) failed"
bash "$HERE/../scripts/kill-test" "$NNZ" $PRUNED --prune gmp --target-sparsity 0.8 --gmp-every 2 || fail "kill-test (gmp) failed"

# ---- a NaN loss keeps the last good checkpoint
TINY=(--model mlp --test-limit 64 --batch 32 --threads 2)
DIVERGE=(--train-limit 512 --epochs 2 --lr 1e30 --schedule constant --momentum 0)
expect 0 "$NNZ" train "${TINY[@]}" --train-limit 64 --epochs 1 --out good.safetensors
cp good.safetensors before.safetensors
# a new run onto the same --out that diverges before its first save: the old file stays
expect 1 "$NNZ" train "${TINY[@]}" "${DIVERGE[@]}" --out good.safetensors
has err "became NaN\|became infinite"; has err "'good.safetensors' is unchanged"; has err "Lower --lr"
cmp -s good.safetensors before.safetensors || fail "a diverged run changed the existing checkpoint"
# with --checkpoint-every 1: the checkpoint of the last step before the divergence is kept, and loads
expect 1 "$NNZ" train "${TINY[@]}" "${DIVERGE[@]}" --checkpoint-every 1 --out nan.safetensors
has err "last good checkpoint 'nan.safetensors' (step [0-9]*) is kept"
expect 0 "$NNZ" info nan.safetensors
find . -name '*.tmp.*' | grep -q . && fail "temporary file left behind"

echo "cli_killtest: all checks passed"
