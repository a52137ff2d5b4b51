#!/usr/bin/env bash
# nnz pack --finetune-codebook (Deep Compression's trained quantization) from the command line:
# the flags are in --help with their defaults; bad values and finetuning flags without
# --finetune-codebook exit 2; a tiny lenet5 packed at 2 bits and finetuned prints the test
# accuracy before and after, and the .nnz file evaluates to the accuracy it reported; --json
# carries them; the same seed gives the same file; missing data and an unwritable output exit 1
# before training, writing nothing. Batch norms: a tiny mbv2-tiny packs with its 20 batch norms
# folded into their convs (no batch-norm tensor left, a bias per conv, a smaller file than with
# --keep-batchnorm, which keeps the four tensors); --dw-bits sets the depthwise convs' bits and
# refuses 9. $1 = nnz.
set -u
. "$(dirname "$0")/support/cli_lib.sh"
cli_setup "$@"

expect 0 "$NNZ" pack --help
has out "--finetune-codebook EPOCHS"; has out "--codebook-lr X"; has out "\[default: 0.001\]"
has out "--train-limit"; has out "--test-limit"; has out "--data DIR"; has out "--seed"

expect 0 "$NNZ" train --model lenet5 --train-limit 256 --test-limit 128 --epochs 1 --batch 64 --threads 2 \
    --out l5.safetensors

for bad in "--finetune-codebook -1" "--finetune-codebook x" "--finetune-codebook 1.5" "--codebook-lr 0" \
    "--codebook-lr -0.1" "--codebook-lr nan" "--finetune-codebook 1 --batch 0" \
    "--finetune-codebook 1 --train-limit -3"; do
    # shellcheck disable=SC2086
    expect 2 "$NNZ" pack l5.safetensors -o bad.nnz $bad
done
for f in "--codebook-lr 0.01" "--train-limit 10" "--test-limit 10" "--data ." "--batch 8" "--seed 3"; do
    # shellcheck disable=SC2086
    expect 2 "$NNZ" pack l5.safetensors -o bad.nnz $f
    has err "applies to --finetune-codebook only"
done
[ -e bad.nnz ] && fail "a refused command wrote its output"

FT=(--finetune-codebook 1 --train-limit 256 --test-limit 128 --batch 64 --threads 2)
expect 0 "$NNZ" pack l5.safetensors -o l5.nnz --bits 2 "${FT[@]}"
has err "epoch 1/1 .*test acc"
has out "test accuracy: checkpoint [0-9.]*%, packed [0-9.]*%, packed + 1 epoch of codebook finetuning [0-9.]*%"
has out "total: .* bytes in the .nnz file"
after=$(sed -n 's/.*codebook finetuning \([0-9.]*%\).*/\1/p' "$T/out")
[ -n "$after" ] || fail "no accuracy after finetuning in the output"
expect 0 "$NNZ" eval l5.nnz --limit 128 --threads 2
has out "accuracy: $after"
expect 0 "$NNZ" info l5.nnz
has out "fc1.weight  *dense  *2 "

# --json: one line, the accuracies in it
expect 0 "$NNZ" pack l5.safetensors -o j.nnz --bits 3 --json --finetune-codebook 1 --train-limit 64 --test-limit 64 \
    --batch 32 --threads 2
[ "$(wc -l < "$T/out")" -eq 1 ] || fail "--json printed more than one line"
has out '^{"checkpoint":.*"finetune_epochs":1,"accuracy_checkpoint":[0-9.]*,"accuracy_packed":[0-9.]*,"accuracy_finetuned":[0-9.]*}$'
# same seed and threads: the same file
expect 0 "$NNZ" pack l5.safetensors -o j2.nnz --bits 3 --json --finetune-codebook 1 --train-limit 64 --test-limit 64 \
    --batch 32 --threads 2
cmp -s j.nnz j2.nnz || fail "two finetuning runs with the same seed wrote different files"

# batch norms folded by default, kept on request; depthwise bits
expect 0 "$NNZ" pack --help
has out "--keep-batchnorm"; has out "--dw-bits N"
expect 0 "$NNZ" train --model mbv2-tiny --train-limit 64 --test-limit 64 --epochs 1 --batch 32 --threads 2 \
    --out mb.safetensors
expect 0 "$NNZ" pack mb.safetensors -o mf.nnz --threads 2
has out "folded 20 batch norms into their convs"
expect 0 "$NNZ" info mf.nnz
lacks out "\.bn"; lacks out "batchnorm"; has out "blocks.0.pw1.bias  *raw"; has out "blocks.0.dw.weight  *dense  *5 "
expect 0 "$NNZ" pack mb.safetensors -o mk.nnz --threads 2 --keep-batchnorm
lacks out "folded"
expect 0 "$NNZ" info mk.nnz
has out "stem.bn.running_var  *raw"; lacks out "blocks.0.pw1.bias"
[ "$(stat -c %s mf.nnz)" -lt "$(stat -c %s mk.nnz)" ] || fail "the folded file is not smaller than the kept one"
expect 0 "$NNZ" eval mf.nnz --limit 64 --threads 2
expect 0 "$NNZ" pack mb.safetensors -o md.nnz --threads 2 --dw-bits 6
has out "depthwise conv 6"
expect 0 "$NNZ" info md.nnz
has out "blocks.0.dw.weight  *dense  *6 "; has out "blocks.0.pw1.weight  *dense  *5 "
expect 2 "$NNZ" pack mb.safetensors -o bad.nnz --dw-bits 9
[ -e bad.nnz ] && fail "a refused command wrote its output"

# runtime errors: exit 1, before any training, nothing written
expect 1 "$NNZ" pack l5.safetensors -o nodata.nnz "${FT[@]}" --data "$T/none"
lacks err "epoch 1/1"
[ -e nodata.nnz ] && fail "a failed finetune wrote its output"
expect 1 "$NNZ" pack l5.safetensors -o "$T/no/such/dir/x.nnz" "${FT[@]}"
lacks err "epoch 1/1"
no_temp
echo "cli_pack: ok"
