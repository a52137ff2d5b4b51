#!/usr/bin/env bash
# --memory-budget measured from outside: the peak resident memory (/usr/bin/time's %M, the
# kernel's maxrss of the child) of nnz train and nnz eval stays within the budget; a budget
# between what batch 32 and batch 256 need lets 32 train and refuses 256 (exit 1, naming the
# largest batch that fits, no checkpoint); a budget the data set alone exceeds says so; eval
# lowers its batch to fit and gives the same accuracy; nnz run (lenet5 and mbv2-tiny .nnz files,
# 1 and 2 threads) stays within its budget too, picks the largest batch or refuses a --batch
# naming it. $1 = nnz.
set -u
. "$(dirname "$0")/support/cli_lib.sh"
cli_setup "$@"
MIB=1048576

# usage errors first (these need no RSS measurement)
expect 0 "$NNZ" train --help; has out "--memory-budget BYTES"; has out "default: unlimited"
expect 0 "$NNZ" eval --help; has out "--memory-budget BYTES"
expect 0 "$NNZ" run --help; has out "--memory-budget BYTES"; has out "peak RSS"
expect 2 "$NNZ" run x.nnz --memory-budget 1.5.M; has err "expects a byte count"
expect 2 "$NNZ" train --memory-budget lots; has err "expects a byte count"
expect 2 "$NNZ" eval x.safetensors --memory-budget 12Q; has err "expects a byte count"

if [ -n "${NNZ_SANITIZE:-}" ]; then echo "skipped under the sanitizers: their shadow memory is resident"; exit 0; fi
[ -x /usr/bin/time ] || fail "/usr/bin/time is missing (Debian package 'time'; scripts/install-deps installs it)"

# measured CMD...: runs it, $T/rss gets the child's peak resident bytes
measured() {
    local code=$1; shift
    /usr/bin/time -f "%M" -o "$T/rss_kib" "$@" >"$T/out" 2>"$T/err"
    local rc=$?
    [ "$rc" -eq "$code" ] || fail "expected exit $code, got $rc: $*"
    echo $(( $(tail -1 "$T/rss_kib") * 1024 )) >"$T/rss"
}
within() { # within BYTES BUDGET WHAT
    echo "$3: peak RSS $1 bytes, budget $2"
    [ "$1" -le "$2" ] || fail "$3: peak RSS $1 bytes is over the budget of $2"
}

TRAIN=(--model lenet5 --train-limit 1024 --test-limit 256 --epochs 1 --threads 2)
BUDGET=$((160 * MIB))

# batch 32 fits 160 MiB and trains within it
measured 0 "$NNZ" train "${TRAIN[@]}" --batch 32 --memory-budget 160M --out b32.safetensors
has out "memory: peak resident"
within "$(cat rss)" $BUDGET "train --batch 32"
[ -s b32.safetensors ] || fail "no checkpoint"
# the same run without a budget gives the same checkpoint (the budget never changes the numerics)
expect 0 "$NNZ" train "${TRAIN[@]}" --batch 32 --out free.safetensors
cmp -s b32.safetensors free.safetensors || fail "a budgeted run wrote a different checkpoint"

# batch 256 needs more than 160 MiB: refused before training, naming the largest batch that fits
measured 1 "$NNZ" train "${TRAIN[@]}" --batch 256 --memory-budget 160M --out b256.safetensors
has err "does not fit --memory-budget 167772160"; has err "largest --batch that fits is"
fits=$(sed -n 's/.*largest --batch that fits is \([0-9]*\).*/\1/p' err)
[ -n "$fits" ] && [ "$fits" -ge 32 ] && [ "$fits" -lt 256 ] || fail "largest batch '$fits' is not in [32, 256)"
[ ! -e b256.safetensors ] || fail "a refused run wrote a checkpoint"
within "$(cat rss)" $BUDGET "train --batch 256 (refused)"
# ... and the batch it names does fit
measured 0 "$NNZ" train "${TRAIN[@]}" --batch "$fits" --memory-budget 160M --out fits.safetensors
within "$(cat rss)" $BUDGET "train --batch $fits"

# a budget below the data set (all 60,000 training images, 47 MB): says so, writes nothing
measured 1 "$NNZ" train --model lenet5 --test-limit 256 --epochs 1 --threads 2 --batch 32 --memory-budget 40M \
    --out small.safetensors
has err "the data set alone does not fit --memory-budget"
[ ! -e small.safetensors ] || fail "a refused run wrote a checkpoint"
within "$(cat rss)" $((40 * MIB)) "train --memory-budget 40M (refused)"

# eval: the batch is lowered to fit 64 MiB, the accuracy is the unbudgeted one
expect 0 "$NNZ" eval b32.safetensors --limit 2000 --batch 256 --threads 2 --json
acc=$(sed -n 's/.*"accuracy":\([0-9.]*\).*/\1/p' out)
measured 0 "$NNZ" eval b32.safetensors --limit 2000 --batch 256 --threads 2 --memory-budget 64M --json
has err "lowered to"
[ "$(sed -n 's/.*"accuracy":\([0-9.]*\).*/\1/p' out)" = "$acc" ] || fail "the budgeted eval's accuracy differs from $acc"
within "$(cat rss)" $((64 * MIB)) "eval --memory-budget 64M"
measured 1 "$NNZ" eval b32.safetensors --memory-budget 8M
has err "the data set alone does not fit --memory-budget"

# nnz run: the same meaning, at 1 and 2 threads: the process's peak RSS (the data set kept to
# --limit, the compressed file, decoded weights, activations, scratch, the BLAS/OpenMP runtime and
# threaded OpenBLAS's operand copies) stays within the budget; the batch is the largest that fits
expect 0 "$NNZ" pack b32.safetensors -o l.nnz
expect 0 "$NNZ" run l.nnz --threads 2 --limit 1000 --json
acc=$(sed -n 's/.*"accuracy":\([0-9.]*\).*/\1/p' out)
for t in 1 2; do
    for b in 48 64; do
        measured 0 "$NNZ" run l.nnz --threads $t --limit 1000 --memory-budget ${b}M --json
        batch=$(sed -n 's/.*"batch":\([0-9]*\).*/\1/p' out)
        within "$(cat rss)" $((b * MIB)) "run lenet5 --threads $t --memory-budget ${b}M (batch $batch)"
        [ "$(sed -n 's/.*"accuracy":\([0-9.]*\).*/\1/p' out)" = "$acc" ] || fail "the budgeted run's accuracy differs from $acc"
    done
    [ "$batch" -gt 1 ] || fail "64M fits only batch $batch at --threads $t"
done
# a --batch that does not fit: refused before running (exit 1), naming the largest that does, which fits
measured 1 "$NNZ" run l.nnz --threads 2 --limit 1000 --batch 256 --memory-budget 64M
has err "--batch 256 does not fit --memory-budget 67108864"; has err "largest --batch that fits is"
fits=$(sed -n 's/.*largest --batch that fits is \([0-9]*\).*/\1/p' err)
[ -n "$fits" ] && [ "$fits" -ge 1 ] && [ "$fits" -lt 256 ] || fail "largest batch '$fits' is not in [1, 256)"
within "$(cat rss)" $((64 * MIB)) "run --batch 256 (refused)"
measured 0 "$NNZ" run l.nnz --threads 2 --limit 1000 --batch "$fits" --memory-budget 64M
within "$(cat rss)" $((64 * MIB)) "run --batch $fits"
# too small for a batch of 1 at 2 threads; smaller than the data set
measured 1 "$NNZ" run l.nnz --threads 2 --limit 1000 --memory-budget 24M
has err "not even a batch of 1 fits --memory-budget"; has err "raise --memory-budget"
within "$(cat rss)" $((24 * MIB)) "run --memory-budget 24M (refused)"
measured 1 "$NNZ" run l.nnz --memory-budget 8M
has err "the data set alone does not fit --memory-budget"
# mbv2-tiny (depthwise, batch norm, residual adds): a tiny training run, packed
expect 0 "$NNZ" train --model mbv2-tiny --train-limit 64 --test-limit 32 --epochs 1 --batch 32 --threads 2 --out mb.safetensors
expect 0 "$NNZ" pack mb.safetensors -o mb.nnz
for t in 1 2; do
    measured 0 "$NNZ" run mb.nnz --threads $t --limit 500 --memory-budget 48M --json
    batch=$(sed -n 's/.*"batch":\([0-9]*\).*/\1/p' out)
    [ "$batch" -gt 1 ] || fail "48M fits only batch $batch of mbv2-tiny at --threads $t"
    within "$(cat rss)" $((48 * MIB)) "run mbv2-tiny --threads $t --memory-budget 48M (batch $batch)"
done
echo "cli_budget: ok"
