#!/usr/bin/env bash
# The nnz command end to end: help and version, usage errors (exit 2), a tiny
# training run, then info/eval/bench/resume on its checkpoint, and failed
# saves that must leave no partial file behind. $1 = the nnz binary.
set -u
. "$(dirname "$0")/support/cli_lib.sh"
cli_setup "$@"

# ---- help and version
expect 0 "$NNZ" --help;    has out "train"; has out "eval"; has out "info"; has out "bench"; has out "exit codes"
expect 0 "$NNZ" --version; has out "^nnz [0-9]"; has out "cpu:"
expect 2 "$NNZ";           has err "usage: nnz"
expect 2 "$NNZ" frobnicate; has err "unknown command 'frobnicate'"
for c in train eval info bench; do
    expect 0 "$NNZ" $c --help; has out "usage: nnz $c"; has out "example:"
    expect 0 "$NNZ" help $c;   has out "usage: nnz $c"
done
# every valued flag of train documents its default
expect 0 "$NNZ" train --help
for f in --model --epochs --batch --lr --optimizer --momentum --wd --schedule --warmup --label-smoothing \
         --seed --threads --data --out --log-every --train-limit --test-limit; do
    awk -v f="$f" '/^  --/ { on = ($1 == f) } on' "$T/out" | grep -q "default:" || fail "train --help: $f has no default"
done

# ---- usage errors: exit 2 with a message naming the problem
expect 2 "$NNZ" train --epochs abc;      has err "--epochs expects a whole number"; has err "'abc'"
expect 2 "$NNZ" train --epochs 3x;       has err "--epochs"
expect 2 "$NNZ" train --epochs 0;        has err "--epochs"
expect 2 "$NNZ" train --epochs " +3";    has err "--epochs"
expect 2 "$NNZ" train --epochs +3;       has err "--epochs"
expect 2 "$NNZ" train --epochs 99999999999; has err "--epochs"
expect 2 "$NNZ" train --lr -1;           has err "--lr expects a number > 0"
expect 2 "$NNZ" train --lr nan;          has err "--lr"
expect 2 "$NNZ" train --lr=;             has err "--lr"
expect 2 "$NNZ" train --momentum 1.5;    has err "--momentum"
expect 2 "$NNZ" train --seed -3;         has err "--seed"
expect 2 "$NNZ" train --batch;           has err "--batch needs a value"
expect 2 "$NNZ" train --optimizer adam;  has err "sgd, adamw"
expect 2 "$NNZ" train --epoch 3;         has err "did you mean --epochs"
expect 2 "$NNZ" train --augment=yes;     has err "takes no value"
expect 2 "$NNZ" train --epochs 1 --epochs 2; has err "twice"
expect 2 "$NNZ" train --model resnet50;  has err "unknown model 'resnet50'"; has err "mbv2-tiny"
expect 2 "$NNZ" train stray;             has err "unexpected argument"
expect 2 "$NNZ" eval;                    has err "missing CHECKPOINT"
expect 2 "$NNZ" eval --batch 0 x.safetensors; has err "--batch"
expect 2 "$NNZ" info;                    has err "missing"
expect 1 "$NNZ" info -- --help;          has err "'--help' is not a loadable checkpoint"
expect 2 "$NNZ" bench;                   has err "either a CHECKPOINT or --model"
expect 2 "$NNZ" bench --iters -1 --model mlp; has err "--iters"

# ---- runtime failures: exit 1
expect 1 "$NNZ" info missing.safetensors;   has err "missing.safetensors"
expect 1 "$NNZ" eval missing.safetensors;   has err "missing.safetensors"
expect 1 "$NNZ" train --model mlp --data "$T/nodata" --epochs 1; has err "nodata"
expect 1 "$NNZ" train --model mlp --out "$T/no/such/dir/x.safetensors"; has err "does not exist"

# ---- a tiny training run (mlp, 512 images), default output name in the current directory
TRAIN=(--train-limit 512 --test-limit 256 --epochs 1 --threads 2)
expect 0 "$NNZ" train --model mlp "${TRAIN[@]}" --log "$T/run.jsonl" --log-every 2
tail -n 1 "$T/out" | grep -Eq '^test accuracy: [0-9]+\.[0-9]{2}%$' || fail "train does not end with the test accuracy"
TEST_ACC=$(tail -n 1 "$T/out" | sed 's/test accuracy: //')
[ -s mlp.safetensors ] || fail "no mlp.safetensors written"
has err "epoch 1/1"
[ "$(grep -c '"type":"step"' run.jsonl)" -eq 2 ] || fail "expected 2 step records in run.jsonl"
[ "$(grep -c '"type":"epoch"' run.jsonl)" -eq 1 ] || fail "expected 1 epoch record in run.jsonl"
has run.jsonl '"test_accuracy":'
ls "$T" | grep -q '\.tmp' && fail "temporary file left behind"

expect 0 "$NNZ" info mlp.safetensors
has out "fc1"; has out "linear"; has out "^parameters: [0-9,]*"; has out "^bytes: "; has out "^FLOPs per image: "
expect 0 "$NNZ" info lenet5; has out "conv1"

expect 0 "$NNZ" eval mlp.safetensors --limit 256 --batch 128
has out "^accuracy: $TEST_ACC\$"    # the same images, the same model: the same accuracy as training reported
expect 0 "$NNZ" eval mlp.safetensors --limit 100 --json
has out '"images":100'; has out '"accuracy":'

expect 0 "$NNZ" bench mlp.safetensors --iters 2 --batch 32 --json
has out '"train_images_per_sec":'; has out '"infer_gflops":'; has out '"batch":32'
expect 0 "$NNZ" bench --model mlp --iters 1 --batch 16
has out "^training: "; has out "^inference: "; has out "GFLOP/s"
expect 0 "$NNZ" bench --model lenet5 --iters 1 --runs 1 --batch 8 --per-layer
has out "^per layer, ms per training step"; has out "^  conv2 *conv2d"; has out "^  fc1 *linear"
expect 0 "$NNZ" bench --model lenet5 --iters 1 --runs 1 --batch 8 --per-layer --json
has out '"layers":\[{"name":"conv1","op":"conv2d","forward_ms":'; has out '"name":"fc2","op":"linear"'
expect 2 "$NNZ" bench --layer 64x64 --per-layer; has err "not with --layer"

# ---- resume: continue the finished 1-epoch run for a second epoch
cp mlp.safetensors first.safetensors
expect 0 "$NNZ" train --resume mlp.safetensors --epochs 2 --test-limit 256 --threads 2 --lr 5
has err "--lr is ignored with --resume"
has err "epoch 2/2"
lacks err "epoch 1/2"
cmp -s mlp.safetensors first.safetensors && fail "resume did not update the checkpoint"

# ---- bf16 precision: train, eval and bench take --precision; resume keeps the checkpoint's
expect 2 "$NNZ" train --precision fp16;  has err "fp32, bf16"
expect 0 "$NNZ" train --model mlp "${TRAIN[@]}" --precision bf16 --out bf16.safetensors
tail -n 1 "$T/out" | grep -Eq '^test accuracy: [0-9]+\.[0-9]{2}%$' || fail "bf16 train does not end with the test accuracy"
expect 0 "$NNZ" eval bf16.safetensors --limit 100 --json --precision bf16; has out '"precision":"bf16"'
expect 0 "$NNZ" bench --model lenet5 --iters 1 --batch 8 --precision bf16; has out "precision bf16"
expect 0 "$NNZ" train --resume bf16.safetensors --epochs 2 --test-limit 256 --threads 2 --precision fp32
has err "--precision is ignored with --resume"; has err "epoch 2/2"
# activations stored in bf16: only with bf16; recorded in the checkpoint, kept by --resume
expect 2 "$NNZ" train --bf16-activations;        has err "needs --precision bf16"
expect 2 "$NNZ" bench --model mlp --bf16-activations; has err "needs --precision bf16"
expect 0 "$NNZ" train --model mbv2-tiny --train-limit 64 --test-limit 64 --batch 32 --epochs 1 --threads 2 \
    --precision bf16 --bf16-activations --out bf16act.safetensors
grep -aqF '\"bf16_activations\":true' bf16act.safetensors || fail "the checkpoint does not record --bf16-activations"
expect 0 "$NNZ" train --resume bf16act.safetensors --epochs 2 --test-limit 64 --threads 2
grep -aqF '\"bf16_activations\":true' bf16act.safetensors || fail "--resume lost --bf16-activations"
expect 0 "$NNZ" bench --model mbv2-tiny --iters 1 --batch 8 --precision bf16 --bf16-activations --json
has out '"bf16_activations":true'

# ---- masked (sparse) training: the zeros survive training and resuming, every format agrees
expect 2 "$NNZ" train --sparsity 0.5;            has err "need --mask"
expect 2 "$NNZ" train --mask block --mask-block 16; has err "RxC"
expect 2 "$NNZ" train --mask blocky;             has err "unstructured"
expect 2 "$NNZ" eval mlp.safetensors --sparse-format bsr:3x3; has err "bsr:RxC"
expect 0 "$NNZ" train --model lenet5 "${TRAIN[@]}" --mask block --sparsity 0.9 --out masked.safetensors
MASKED_ACC=$(tail -n 1 "$T/out" | sed 's/test accuracy: //')
expect 0 "$NNZ" info masked.safetensors; has out "^sparse layers"
if [ "${NNZ_ISA:-}" = ref ]; then # the plain-C sparse kernels never beat dense: the planner says so
    has out "^conv2 .*90.0% zeros  dense  *this CPU has no SIMD sparse kernels"
else
    has out "^conv2 .*90.0% zeros  bsr:16x16"
fi
has out "^conv1 .*no zero weights"
for f in dense csr bsr:4x4 auto; do
  expect 0 "$NNZ" eval masked.safetensors --limit 256 --sparse-format "$f"; has out "^accuracy: $MASKED_ACC\$"
done
expect 0 "$NNZ" train --resume masked.safetensors --epochs 2 --test-limit 256 --threads 2
expect 0 "$NNZ" info masked.safetensors; has out "^fc1 .*90.0% zeros"
expect 0 "$NNZ" bench --model lenet5 --iters 1 --batch 8 --mask rbgp --sparsity 0.75; has out "^training: "
# channel blocks: conv2 (5x5, 32 -> 64 channels) runs Winograd over its kept 16x16 blocks; every
# format gives the same accuracy; a malformed winograd format is refused with the list
expect 0 "$NNZ" train --model lenet5 "${TRAIN[@]}" --mask channel-block --sparsity 0.75 --out cb.safetensors
CB_ACC=$(tail -n 1 "$T/out" | sed 's/test accuracy: //')
expect 0 "$NNZ" info cb.safetensors
if [ "${NNZ_ISA:-}" = ref ]; then
    has out "^conv2 .*75.0% zeros  dense  *this CPU has no SIMD sparse kernels"
else
    has out "^conv2 .*75.0% zeros  winograd:16x16 .*faster than dense Winograd"
fi
for f in dense bsr:16x16 winograd:16x16 auto; do
  expect 0 "$NNZ" eval cb.safetensors --limit 256 --sparse-format "$f"; has out "^accuracy: $CB_ACC\$"
done
expect 2 "$NNZ" eval cb.safetensors --sparse-format winograd:8x8; has err "winograd:16x16"
expect 0 "$NNZ" bench --model lenet5 --iters 1 --batch 8 --mask channel-block --sparsity 0.75; has out "^training: "
expect 0 "$NNZ" bench --layer 64x96 --rows 33 --sparsity 0.5 --format bsr:4x4 --iters 1 --json
has out '"product":"forward"'; has out '"product":"weight_grad"'; has out '"effective_gflops":'
expect 2 "$NNZ" bench --layer 64;                 has err "OCxK"
expect 2 "$NNZ" bench --layer 8x8 --format auto;  has err "csr or bsr:RxC"
expect 2 "$NNZ" bench --layer 8x8 --format winograd:16x16; has err "needs a conv"
expect 2 "$NNZ" bench --layer 8x8 --model mlp;    has err "no CHECKPOINT or --model"

# ---- corrupt checkpoints are clear errors
head -c 1000 mlp.safetensors > cut.safetensors
expect 1 "$NNZ" info cut.safetensors; has err "cut.safetensors"
printf 'not a checkpoint at all' > junk.safetensors
expect 1 "$NNZ" eval junk.safetensors; has err "junk.safetensors"

# ---- failed saves leave no partial file (and never clobber the old one)
mkdir dir.safetensors
expect 1 "$NNZ" train --model mlp "${TRAIN[@]}" --out dir.safetensors
has err "dir.safetensors"
[ -z "$(ls -A dir.safetensors)" ] || fail "something was written into dir.safetensors"
ls "$T" | grep -q '\.tmp' && fail "temporary file left behind after a failed rename"
# A write that fails half way: the file-size limit (100 KiB) stops the 15 MB checkpoint.
cp first.safetensors keep.safetensors
( trap '' XFSZ; ulimit -f 100; exec "$NNZ" train --model mlp "${TRAIN[@]}" --out keep.safetensors ) >"$T/out" 2>"$T/err"
[ $? -eq 1 ] || fail "a checkpoint write past the size limit did not exit 1"
has err "keep.safetensors"; has err "file-size limit"; has err "the old file is unchanged"
cmp -s keep.safetensors first.safetensors || fail "the failed save changed the existing checkpoint"
ls "$T" | grep -q '\.tmp' && fail "temporary file left behind after a failed write"
( trap '' XFSZ; ulimit -f 100; exec "$NNZ" train --model mlp "${TRAIN[@]}" --out fresh.safetensors ) >"$T/out" 2>"$T/err"
[ $? -eq 1 ] || fail "a checkpoint write past the size limit did not exit 1"
[ -e fresh.safetensors ] && fail "a partial fresh.safetensors was left"
has err "fresh.safetensors"; has err "file-size limit"; has err "no file was written"
ls "$T" | grep -q '\.tmp' && fail "temporary file left behind after a failed write"

echo "cli_basic: all checks passed"
