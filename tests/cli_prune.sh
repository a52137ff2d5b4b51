#!/usr/bin/env bash
# nnz train --prune end to end: autosparse (STR + Gradient Annealing) leaves zeros in the
# checkpoint that nnz info reports and the sparse planner sees; gmp reaches its target sparsity
# in every pruned layer and leaves the first and last layers dense; both resume; bad
# combinations exit 2 with a message. $1 = nnz.
set -u
. "$(dirname "$0")/support/cli_lib.sh"
cli_setup "$@"

# zeros LAYER: the percentage of zeros nnz info printed for LAYER
zeros() { awk -v l="$1" '$1 == l && $3 == "zeros" { sub("%", "", $2); print $2 }' "$T/out" | head -1; }

TRAIN=(--model lenet5 --train-limit 512 --test-limit 256 --epochs 1 --batch 64 --threads 2)

expect 0 "$NNZ" train --help
has out "--prune"; has out "--alpha0"; has out "--anneal"; has out "cosine-sigmoid"; has out "--alpha-off-epoch"
has out "--threshold-init"; has out "--threshold-decay"; has out "--threshold-granularity"; has out "--target-sparsity"

# autosparse: an aggressive threshold prunes part of conv2 and fc1, never conv1 and fc2
expect 0 "$NNZ" train "${TRAIN[@]}" --prune autosparse --threshold-init -5 --log as.jsonl --out as.safetensors
has out "pruned (autosparse): [0-9.]*% zeros"
# sparse execution: each pruned layer's first decision is in the log, the layer-steps counted
has out "^sparse execution: [0-9]* of 16 layer-steps ran forward and backward-data on the sparse kernels"
for l in conv2 fc1; do
    grep -q "{\"type\":\"sparse\",\"step\":1,\"layer\":\"$l\",\"zeros\":[0-9.e-]*,\"format\":\"" as.jsonl ||
        fail "no sparse decision for $l in the log"
done
lacks as.jsonl '"layer":"conv1"' # not pruned: not logged
expect 0 "$NNZ" info as.safetensors
has out "^sparse layers"
for l in conv2 fc1; do
    z=$(zeros $l); [ -n "$z" ] || fail "no sparsity line for $l"
    awk -v z="$z" 'BEGIN { exit !(z > 1.0) }' || fail "$l has only $z% zeros after autosparse"
done
[ "$(zeros conv1)" = "0.0" ] || fail "conv1 was pruned"
[ "$(zeros fc2)" = "0.0" ] || fail "fc2 was pruned"
# ... and the default threshold prunes (almost) nothing
expect 0 "$NNZ" train "${TRAIN[@]}" --prune autosparse --alpha0 0 --out str.safetensors
expect 0 "$NNZ" info str.safetensors
awk -v z="$(zeros conv2)" 'BEGIN { exit !(z < 1.0) }' || fail "s0 = -10 pruned conv2: $(zeros conv2)%"
# per-channel thresholds, another schedule, and a resumed run (the checkpoint holds the thresholds)
expect 0 "$NNZ" train "${TRAIN[@]}" --prune autosparse --threshold-granularity channel --anneal linear \
    --alpha-off-epoch 1 --threshold-init -5 --out ch.safetensors
expect 0 "$NNZ" train --resume ch.safetensors --epochs 2 --threads 2
has out "pruned (autosparse)"
expect 0 "$NNZ" eval ch.safetensors --limit 256 --threads 2

# gmp: exactly the target in every pruned layer
expect 0 "$NNZ" train "${TRAIN[@]}" --prune gmp --target-sparsity 0.8 --out gmp.safetensors
has out "pruned (gmp): 80.00% zeros"
has out "training FLOPs: .*x dense) over 8 steps; inference FLOPs: .*(0\.[0-9]*x dense)"
expect 0 "$NNZ" info gmp.safetensors
[ "$(zeros conv2)" = "80.0" ] || fail "gmp conv2: $(zeros conv2)% zeros"
[ "$(zeros fc1)" = "80.0" ] || fail "gmp fc1: $(zeros fc1)% zeros"
[ "$(zeros conv1)" = "0.0" ] || fail "gmp pruned conv1"
has out "^forward FLOPs per image at this sparsity"
has out "^conv2 .* of  *20070400 FLOPs (0.200x)"; has out "^total .* of  *24546304 FLOPs"
expect 0 "$NNZ" train --resume gmp.safetensors --epochs 2 --threads 2
has out "pruned (gmp): 80.00% zeros"

# --init-from: a new run from a trained model's weights; the mask keeps the largest weights
LIMITS=(--train-limit 512 --test-limit 256 --epochs 1 --batch 64 --threads 2)
expect 0 "$NNZ" train "${TRAIN[@]}" --out dense.safetensors
expect 0 "$NNZ" train --init-from dense.safetensors --mask unstructured --sparsity 0.75 "${LIMITS[@]}" --out mag.safetensors
has out "checkpoint: mag.safetensors"
expect 0 "$NNZ" info mag.safetensors
[ "$(zeros conv2)" = "75.0" ] || fail "init-from + unstructured 0.75: conv2 has $(zeros conv2)% zeros"
[ "$(zeros conv1)" = "0.0" ] || fail "init-from masked conv1"
expect 0 "$NNZ" train --init-from dense.safetensors --prune gmp --target-sparsity 0.5 "${LIMITS[@]}" --out g2.safetensors
has out "pruned (gmp): 50.00% zeros"
expect 2 "$NNZ" train --init-from dense.safetensors --resume gmp.safetensors;  has err "pick one"
expect 2 "$NNZ" train --init-from dense.safetensors --model vgg8 --out x.safetensors; has err "drop --model"
expect 2 "$NNZ" train --init-from dense.safetensors;                          has err "needs --out"
expect 2 "$NNZ" train --init-from dense.safetensors --out dense.safetensors;  has err "must differ"
expect 1 "$NNZ" train --init-from missing.safetensors --out y.safetensors;    has err "missing.safetensors"

# errors
expect 2 "$NNZ" train --prune sometimes;                  has err "autosparse"
expect 2 "$NNZ" train --prune gmp --mask block;           has err "do not combine"
expect 2 "$NNZ" train --prune gmp --target-sparsity 1;    has err "target-sparsity"
expect 2 "$NNZ" train --prune autosparse --anneal cos;    has err "cosine-sigmoid"
expect 2 "$NNZ" train --prune autosparse --alpha0 2;      has err "alpha0"
echo "cli_prune: ok"
