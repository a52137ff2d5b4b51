#!/usr/bin/env bash
# nnz run's plans from the command line: --plan, --latency-budget, --synthetic and --dry-run in
# --help with their defaults; bad values exit 2; a lenet5 .nnz gives the same logits (checksum)
# and accuracy with every fixed batch and the per-layer plan, on the data set and on synthetic
# images; a tight --memory-budget makes the planner chunk the convolutions, prints each layer's
# batch and why, and the process's peak RSS stays within it; budgets nothing meets exit 1. $1 = nnz.
set -u
. "$(dirname "$0")/support/cli_lib.sh"
cli_setup "$@"
MIB=1048576
sum() { sed -n 's/.*"logits_checksum":"\([0-9a-f]*\)".*/\1/p' out; }
field() { sed -n "s/.*\"$1\":\"\{0,1\}\([^,\"]*\).*/\1/p" out; }

expect 0 "$NNZ" run --help
has out "--plan PLAN"; has out "per-layer"; has out "--latency-budget MS"; has out "--synthetic N"; has out "--dry-run"
has out "default: per-layer when --memory-budget or"; has out "given without --batch, else fixed"
has out "\[default: none\]"
# usage errors: exit 2, before anything runs
expect 2 "$NNZ" run x.nnz --latency-budget abc; has err "latency-budget"
expect 2 "$NNZ" run x.nnz --latency-budget 0; has err "latency-budget"
expect 2 "$NNZ" run x.nnz --latency-budget -5; has err "latency-budget"
expect 2 "$NNZ" run x.nnz --latency-budget; has err "latency-budget"
expect 2 "$NNZ" run x.nnz --plan sometimes; has err "must be one of fixed, per-layer"
expect 2 "$NNZ" run x.nnz --synthetic -1
expect 2 "$NNZ" run x.nnz --synthetic 4 --data /tmp; has err "exclude each other"
expect 2 "$NNZ" run x.nnz --plan per-layer --no-prefetch; has err "no-prefetch"

expect 0 "$NNZ" train --model lenet5 --train-limit 128 --test-limit 32 --epochs 1 --batch 64 --threads 2 --out l.safetensors
expect 0 "$NNZ" pack l.safetensors -o l.nnz

# synthetic images: every fixed batch and the per-layer plan give the same logits
expect 0 "$NNZ" run l.nnz --synthetic 48 --plan fixed --batch 16 --threads 2 --json
ref=$(sum); [ -n "$ref" ] || fail "no logits checksum"
has out '"plan":"fixed"'
for b in 1 5 48; do
    expect 0 "$NNZ" run l.nnz --synthetic 48 --plan fixed --batch $b --threads 2 --json
    [ "$(sum)" = "$ref" ] || fail "fixed batch $b: logits differ"
    expect 0 "$NNZ" run l.nnz --synthetic 48 --plan per-layer --batch $b --threads 2 --json
    [ "$(sum)" = "$ref" ] || fail "per-layer super-batch $b: logits differ"
    has out '"plan":"per-layer"'; has err "^plan: per-layer, super-batch $b"
done
# the data set path: the same accuracy and logits with either plan
expect 0 "$NNZ" run l.nnz --limit 300 --plan fixed --batch 64 --threads 2 --json
ref=$(sum); acc=$(field accuracy)
expect 0 "$NNZ" run l.nnz --limit 300 --plan per-layer --threads 2 --json
[ "$(sum)" = "$ref" ] || fail "per-layer logits differ on the data set"
[ "$(field accuracy)" = "$acc" ] || fail "per-layer accuracy differs"
has err "plan: the best fixed batch in the same model"

# a tight budget: the default plan is per-layer; the convolutions run in chunks smaller than the
# super-batch; the plan says why; the process stays within the budget (peak RSS, from outside)
if [ -z "${NNZ_SANITIZE:-}" ] && [ -x /usr/bin/time ]; then
    found=""
    for b in 48 46 44 42 40 39 38 37 36 35; do
        # below the smallest plan (about 34 MiB at 2 threads) the dry run exits 1: no budget left to try
        "$NNZ" run l.nnz --limit 1000 --threads 2 --memory-budget ${b}M --dry-run --json >out 2>err || break
        conv=$(sed -n 's/.*"layer_batches":"conv1:\([0-9]*\),.*/\1/p' out)
        fc=$(sed -n 's/.*fc1:\([0-9]*\).*/\1/p' out)
        if [ -n "$conv" ] && [ -n "$fc" ] && [ "$conv" -lt "$fc" ]; then found=$b; break; fi
    done
    [ -n "$found" ] || fail "no budget made the planner chunk conv1 below fc1's batch"
    has err "memory: batch [0-9]* would need an estimated"
    /usr/bin/time -f "%M" -o rss_kib "$NNZ" run l.nnz --limit 1000 --threads 2 --memory-budget ${found}M --json >out 2>err \
        || fail "the planned run failed"
    rss=$(( $(tail -1 rss_kib) * 1024 ))
    echo "per-layer plan under ${found}M: peak RSS $rss bytes, layers $(field layer_batches)"
    [ "$rss" -le $((found * MIB)) ] || fail "peak RSS $rss is over the budget of ${found}M"
    expect 0 "$NNZ" run l.nnz --limit 1000 --threads 2 --plan fixed --batch 64 --json
    ref=$(sum)
    /usr/bin/time -f "%M" -o rss_kib "$NNZ" run l.nnz --limit 1000 --threads 2 --memory-budget ${found}M --json >out 2>err
    [ "$(sum)" = "$ref" ] || fail "the budgeted per-layer run's logits differ from fixed batch 64's"
fi
# budgets nothing meets: exit 1 with the reason
expect 1 "$NNZ" run l.nnz --synthetic 16 --latency-budget 0.000001
has err "cannot be met"; has err "raise --latency-budget"
expect 1 "$NNZ" run l.nnz --synthetic 16 --plan fixed --latency-budget 0.000001
has err "cannot be met"
expect 1 "$NNZ" run l.nnz --synthetic 16 --memory-budget 8M
has err "memory budget"; has err "raise --memory-budget"
expect 0 "$NNZ" run l.nnz --synthetic 16 --latency-budget 100000
has out "latency: slowest super-batch"; has out "budget 100000 ms"
echo "cli_plan: ok"
