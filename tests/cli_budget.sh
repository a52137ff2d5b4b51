#!/usr/bin/env bash
# --memory-budget measured from outside: the peak resident memory (/usr/bin/time's %M, the
# kernel's maxrss of the child) of nnz train and nnz eval stays within the budget; a budget
# between what batch 32 and batch 256 need lets 32 train and refuses 256 (exit 1, naming the
# largest batch that fits, no checkpoint); a budget the data set alone exceeds says so; eval
# lowers its batch to fit and gives the same accuracy; nnz run's working set above its batch-1
# baseline stays within its budget. $1 = nnz.
set -u
NNZ=$(realpath "${1:?usage: cli_budget.sh path/to/nnz}")
T=$(mktemp -d "${TMPDIR:-/tmp}/nnz-cli-budget-XXXXXX")
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1

fail() { echo "FAIL: $*"; echo "--- stdout"; cat "$T/out" 2>/dev/null; echo "--- stderr"; cat "$T/err" 2>/dev/null; exit 1; }
expect() {
    local code=$1; shift
    "$@" >"$T/out" 2>"$T/err"
    local rc=$?
    [ "$rc" -eq "$code" ] || fail "expected exit $code, got $rc: $*"
}
has() { grep -q -e "$2" "$1" || fail "'$2' not in $1"; }
MIB=1048576

# usage errors first (these need no RSS measurement)
expect 0 "$NNZ" train --help; has out "--memory-budget BYTES"; has out "default: unlimited"
expect 0 "$NNZ" eval --help; has out "--memory-budget BYTES"
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

# nnz run: its budget covers decoded weights, activations and scratch (the compressed file and
# the data set are held besides it), so the process may exceed the batch-1 baseline by at most
# the budget. One thread: threaded OpenBLAS's packing copies are outside nnz run's accounting.
expect 0 "$NNZ" pack b32.safetensors -o m.nnz
expect 0 "$NNZ" run m.nnz --threads 1 --limit 1 --batch 1 --no-prefetch --json
base=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["max_rss_kib"]*1024-d["peak_bytes"])' out)
for b in 16 64; do
    measured 0 "$NNZ" run m.nnz --threads 1 --limit 2000 --memory-budget ${b}M --json
    peak=$(sed -n 's/.*"peak_bytes":\([0-9]*\).*/\1/p' out)
    [ "$peak" -le $((b * MIB)) ] || fail "nnz run's measured peak $peak is over ${b}M"
    within "$(cat rss)" $((base + b * MIB)) "run --memory-budget ${b}M (baseline $base)"
done
echo "cli_budget: ok"
