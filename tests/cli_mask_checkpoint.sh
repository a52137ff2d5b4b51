#!/usr/bin/env bash
# nnz mask CHECKPOINT [--layer NAME]: a tiny lenet5 trained with --mask rbgp (and block, dense, and
# --init-from the dense one):
# the layer list with each layer's zeros; one layer's mask statistics, block fill and index bytes;
# the recorded --mask settings regenerate the mask, equal to the zeros (rbgp: factor graphs and
# spectral gaps), and a checkpoint whose recorded seed was altered is caught; the picture; usage
# errors exit 2, a missing checkpoint and an unwritable picture exit 1. $1 = nnz.
set -u
. "$(dirname "$0")/support/cli_lib.sh"
cli_setup "$@"

RUN=(--epochs 1 --train-limit 128 --test-limit 32 --batch 64 --threads 2)
TRAIN=(--model lenet5 "${RUN[@]}")
expect 0 "$NNZ" mask --help; has out "nnz mask CHECKPOINT"; has out "--layer"
expect 0 "$NNZ" train "${TRAIN[@]}" --mask rbgp --sparsity 0.75 --out rbgp.safetensors
expect 0 "$NNZ" train "${TRAIN[@]}" --mask rbgp --sparsity 0.875 --mask-block 2x2 --out rbgp2.safetensors
expect 0 "$NNZ" train "${TRAIN[@]}" --mask block --sparsity 0.5 --mask-block 4x4 --out block.safetensors
expect 0 "$NNZ" train "${TRAIN[@]}" --out dense.safetensors

# the list: every conv/linear layer, its zeros; the first and last marked as never masked
expect 0 "$NNZ" mask rbgp.safetensors
has out "4 conv/linear layers"
grep -q "^  conv2 *conv *64x800 *38,400 *0.7500$" out || fail "conv2 row: $(grep conv2 out)"
grep -q "^  fc1 *linear *512x3136 *1,204,224 *0.7500$" out || fail "fc1 row: $(grep fc1 out)"
grep -q "^  conv1 .* 0 *0.0000  (first/last" out || fail "conv1 row: $(grep conv1 out)"

# one layer: statistics, block fill (RBGP with 4x4 micro-blocks fills 4x4 blocks exactly), the
# recorded mask regenerated and equal to the zeros, the factor graphs with their spectral check
expect 0 "$NNZ" mask rbgp.safetensors --layer conv2 --pgm c2.pgm --scale 2 --show-rows 3
has out "layer conv2 (conv), weight 64x800 (OC x KH\*KW\*IC)"
has out "kept (nonzero weights): 12,800 of 51,200 (density 0.2500, sparsity 0.7500)"
has out "empty rows (outputs reading no input): 0 of 64"
grep -q "^   4x4   800 of 3200, fill 1.0000, BSR 3268 bytes$" out || fail "4x4 blocks: $(grep 4x4 out)"
has out "CSR 51460"
has out "origin: nnz train --mask rbgp --sparsity 0.75 (no --mask-block recorded"
has out "regenerated mask: equals the zeros of the weight (12800 kept)"
has out "structure: G_o [0-9]*x[0-9]* (x) J_r 1x1 (x) G_i [0-9]*x[0-9]* (x) J_b 4x4 on 64x800"
has out "G_o [0-9]*x[0-9]*: left degree"; has out "G_i [0-9]*x[0-9]*: left degree"
has out "Ramanujan bound"; has out "succinct [0-9]*, BSR 4x4 3268"; has out "factor graphs"
head -n 3 c2.pgm | tr '\n' ' ' | grep -q "^P5 1600 128 255 " || fail "c2.pgm header: $(head -n 3 c2.pgm | tr '\n' ' ')"
[ "$(stat -c %s c2.pgm)" -eq $((16 + 1600 * 128)) ] || fail "c2.pgm size $(stat -c %s c2.pgm)"
no_temp
# the --mask-block is recorded and used
expect 0 "$NNZ" mask rbgp2.safetensors --layer fc1 --show-rows 0
has out "sparsity 0.8750)"; has out "origin: nnz train --mask rbgp --sparsity 0.875 --mask-block 2x2"
has out "regenerated mask: equals the zeros"; has out "J_b 2x2 on 512x3136"
grep -q "^   2x2   50176 of 401408, fill 1.0000" out || fail "2x2 blocks: $(grep 2x2 out)"
lacks out "factor graphs"
# the first layer is never masked
expect 0 "$NNZ" mask rbgp.safetensors --layer conv1
has out "sparsity 0.0000)"; has out "not on this layer"; lacks out "regenerated"
# other kinds regenerate too (random blocks from the seed)
expect 0 "$NNZ" mask block.safetensors --layer fc1
has out "origin: nnz train --mask block --sparsity 0.5 --mask-block 4x4"; has out "regenerated mask: equals the zeros"
lacks out "structure: G_o"
# a run started from the dense model (--init-from): block masks by magnitude, regenerated from that
# model's weights; rbgp still from the seed; without the dense model the check is skipped, said so
expect 0 "$NNZ" train "${RUN[@]}" --init-from dense.safetensors --mask block --sparsity 0.5 --out ib.safetensors
expect 0 "$NNZ" mask ib.safetensors --layer fc1
has out "--init-from dense.safetensors"; has out "keep the largest weights"; has out "regenerated mask: equals the zeros"
cp dense.safetensors dense2.safetensors
expect 0 "$NNZ" train "${RUN[@]}" --init-from dense2.safetensors --mask rbgp --sparsity 0.75 --out ir.safetensors
rm dense2.safetensors
expect 0 "$NNZ" mask ir.safetensors --layer conv2 --show-rows 0
has out "regenerated mask: equals the zeros"; lacks out "keep the largest"
mv dense.safetensors moved.safetensors
expect 0 "$NNZ" mask ib.safetensors --layer fc1
has out "not checked: chosen by magnitude from the --init-from model 'dense.safetensors', which cannot be loaded"
mv moved.safetensors dense.safetensors
# a dense run records no mask: the zeros as they are
expect 0 "$NNZ" mask dense.safetensors --layer conv2
has out "kept (nonzero weights): 51,200 of 51,200"; has out "records no --mask"; lacks out "regenerated"
# a checkpoint whose recorded seed was changed (same length, so the file stays valid) no longer matches
python3 - <<'PY' || fail "could not alter the recorded seed"
d = open("rbgp.safetensors", "rb").read()
old = b'\\"seed\\":\\"42\\"'
assert d.count(old) == 1
open("altered.safetensors", "wb").write(d.replace(old, b'\\"seed\\":\\"43\\"'))
PY
expect 0 "$NNZ" mask altered.safetensors --layer conv2 --show-rows 0
has out "regenerated mask: DIFFERS from the zeros"

# errors: usage (exit 2) and runtime (exit 1), no picture left behind
expect 2 "$NNZ" mask rbgp.safetensors --layer conv9 --pgm bad.pgm
has err "no conv or linear layer of that name"; has err "conv1, conv2, fc1, fc2"
[ -e bad.pgm ] && fail "a failed run left bad.pgm"
expect 2 "$NNZ" mask rbgp.safetensors --layer pool1; has err "pool1"
expect 2 "$NNZ" mask --layer conv2;                   has err "needs a CHECKPOINT"
expect 2 "$NNZ" mask rbgp.safetensors --shape 64x64;  has err "--shape builds a new mask"
expect 2 "$NNZ" mask rbgp.safetensors --sparsity 0.5 --layer conv2; has err "--sparsity builds a new mask"
expect 2 "$NNZ" mask rbgp.safetensors dense.safetensors; has err "too many arguments"
expect 1 "$NNZ" mask nothere.safetensors --layer conv2; has err "cannot load the checkpoint"
expect 1 "$NNZ" mask rbgp.safetensors --layer conv2 --pgm no/such/dir/m.pgm; has err "picture"
no_temp
echo "cli_mask_checkpoint: all checks passed"
