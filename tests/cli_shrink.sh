#!/usr/bin/env bash
# nnz shrink end to end, on a tiny budget: help, usage errors (exit 2), runtime errors
# (exit 1, no partial output), then a tiny mbv2-tiny run whose merged checkpoint info,
# eval and bench load; the same seed and threads give the same file. $1 = the nnz binary.
set -u
. "$(dirname "$0")/support/cli_lib.sh"
cli_setup "$@"

# ---- help: every valued flag documents its default
expect 0 "$NNZ" --help;            has out "shrink"
expect 0 "$NNZ" shrink --help;     has out "usage: nnz shrink"; has out "example:"; has out "DEPTHSHRINKER.md"
has out "--from-scratch MODEL"; has out "Expand-then-Shrink"; has out "--target MODEL"
for f in --from-scratch --target --expansion --warmup --ramp --keep --search-epochs --finetune-epochs --lr --gate-lr --gumbel --distill-weight --label-smoothing \
         --batch --seed --threads --data --out --log-every --train-limit --test-limit; do
    awk -v f="$f" '/^  --/ { on = ($1 == f) } on' "$T/out" | grep -q "default:" || fail "shrink --help: $f has no default"
done

# ---- usage errors: exit 2
expect 2 "$NNZ" shrink;                          has err "missing CKPT"
expect 2 "$NNZ" shrink x.safetensors --keep 1.5; has err "--keep"
expect 2 "$NNZ" shrink x.safetensors --keep -0.1; has err "--keep"
expect 2 "$NNZ" shrink x.safetensors --search-epochs 0; has err "--search-epochs"
expect 2 "$NNZ" shrink x.safetensors --gumbel 2; has err "--gumbel"
expect 2 "$NNZ" shrink x.safetensors --kep 0.5; has err "did you mean --keep"
expect 2 "$NNZ" shrink x.safetensors --from-scratch mbv2-tiny; has err "not both"
expect 2 "$NNZ" shrink --from-scratch mbv2-tiny --distill; has err "--distill needs a trained teacher"
expect 2 "$NNZ" shrink --from-scratch mbv2-tiny --warmup 0.8 --ramp 0.5; has err "at most 1"
expect 2 "$NNZ" shrink --from-scratch mbv3;      has err "not a zoo model"
expect 2 "$NNZ" shrink --from-scratch mbv2-tiny --ramp 1.5; has err "--ramp"

# ---- tiny base models (tinier under the sanitizers, which run mbv2-tiny ~50x slower)
TRAIN_N=256; TEST_N=128; B=64
if [ -n "${NNZ_SANITIZE:-}" ]; then TRAIN_N=64; TEST_N=32; B=32; fi
TINY=(--train-limit $TRAIN_N --test-limit $TEST_N --threads 2)
expect 0 "$NNZ" train --model mbv2-tiny --epochs 1 --batch $B "${TINY[@]}" --out base.safetensors
expect 0 "$NNZ" train --model mlp --epochs 1 --batch $B "${TINY[@]}" --out mlp.safetensors

# ---- runtime errors: exit 1, nothing written
expect 1 "$NNZ" shrink missing.safetensors "${TINY[@]}";  has err "missing.safetensors"
expect 1 "$NNZ" shrink mlp.safetensors "${TINY[@]}" --out m.safetensors; has err "no inverted-residual blocks"
[ -e m.safetensors ] && fail "a failed shrink wrote its output"
expect 1 "$NNZ" shrink base.safetensors "${TINY[@]}" --out no/such/dir/x.safetensors; has err "does not exist"
expect 1 "$NNZ" shrink base.safetensors "${TINY[@]}" --data "$T/nodata"; has err "nodata"
no_temp

# ---- a tiny shrink: 3 of 6 blocks merged
RUN=(--search-epochs 1 --finetune-epochs 1 --batch $B --log-every 2 "${TINY[@]}")
expect 0 "$NNZ" shrink base.safetensors --keep 0.5 "${RUN[@]}"
[ -s base-shrunk.safetensors ] || fail "no default output base-shrunk.safetensors"
has err "^search: 1 epoch"; has err "^scores: blocks.0 "; has err "^finetune: 1 epoch"; has err "^merged 3 blocks"
has out "^blocks: 6, kept 3, merged 3"; has out "^FLOPs per image: "
tail -n 1 "$T/out" | grep -Eq '^test accuracy: [0-9]+\.[0-9]{2}%$' || fail "shrink does not end with the test accuracy"
ACC=$(tail -n 1 "$T/out" | sed 's/test accuracy: //')
no_temp

expect 0 "$NNZ" info base-shrunk.safetensors
has out "^DepthShrinker: keep 0.5 of 6"; has out "merged, one dense conv each: blocks"; has out "FLOPs per image: .* before"
[ "$(grep -c 'blocks\.[0-9]*\.conv  *conv2d' "$T/out")" -eq 3 ] || fail "info: expected 3 merged convs"
grep -q 'relu6' "$T/out" || fail "info: the kept blocks lost their relu6"
expect 0 "$NNZ" info base.safetensors; grep -q DepthShrinker "$T/out" && fail "info: an unshrunk model shows a shrink record"
expect 0 "$NNZ" eval base-shrunk.safetensors --limit $TEST_N --batch $B
has out "^accuracy: $ACC\$"   # the merged model, the same test images: the accuracy shrink reported
expect 0 "$NNZ" bench base-shrunk.safetensors --iters 1 --batch 1; has out "^inference: "

# ---- --cost-aware: blocks.0 (expansion 1) would grow merged, so it is no candidate and stays as it is
expect 0 "$NNZ" shrink base.safetensors --keep 0.6 --cost-aware "${RUN[@]}" --out ca.safetensors
has err "^cost-aware: blocks.0 keeps its activations"; has out "^blocks: 5, kept 3, merged 2"
expect 0 "$NNZ" info ca.safetensors; has out "^DepthShrinker: keep 0.6 of 5 cost-aware"
grep -q 'blocks\.0\.dw ' "$T/out" || fail "info: --cost-aware merged blocks.0"
[ "$(grep -c 'blocks\.[0-9]*\.conv  *conv2d' "$T/out")" -eq 2 ] || fail "info: expected 2 merged convs"

# ---- distillation runs; same seed and threads, same bytes
expect 0 "$NNZ" shrink base.safetensors "${RUN[@]}" --keep 0.2 --distill --out d1.safetensors
has err "distilled from the original"; has out "^blocks: 6, kept 1, merged 5"
expect 0 "$NNZ" shrink base.safetensors "${RUN[@]}" --keep 0.2 --distill --out d2.safetensors
cmp -s d1.safetensors d2.safetensors || fail "two runs with the same seed and threads differ"

# ---- Expand-then-Shrink: mbv2-tiny from random weights, merged to its target; the target trained directly
expect 1 "$NNZ" shrink --from-scratch mlp "${TINY[@]}" --out m.safetensors; has err "no inverted-residual blocks"
[ -e m.safetensors ] && fail "a failed --from-scratch wrote its output"
ETS=(--search-epochs 1 --finetune-epochs 1 --batch $B --log-every 2 "${TINY[@]}")
expect 0 "$NNZ" shrink --from-scratch mbv2-tiny --keep 0.5 "${ETS[@]}"
[ -s mbv2-tiny-ets.safetensors ] || fail "no default output mbv2-tiny-ets.safetensors"
has err "^expand-then-shrink: 'mbv2-tiny' from random weights"; has err "falls from 6 to 3 over 25%"
has err "one cosine from 0.1 to 0"; has err "^merged 3 blocks"; has out "^blocks: 6, kept 3, merged 3"
has out "random init"
expect 0 "$NNZ" info mbv2-tiny-ets.safetensors; has out "^DepthShrinker (Expand-then-Shrink): keep 0.5 of 6"
[ "$(grep -c 'blocks\.[0-9]*\.conv  *conv2d' "$T/out")" -eq 3 ] || fail "info: expected 3 merged convs"
ETS_FLOPS=$(grep '^FLOPs per image' "$T/out")
expect 0 "$NNZ" info mbv2-tiny-ets.safetensors --arch; cp "$T/out" target.json
expect 0 "$NNZ" info target.json; has out "^architecture: target.json"; has out "^${ETS_FLOPS}\$"
expect 0 "$NNZ" info target.json --arch; cmp -s "$T/out" target.json || fail "info ARCH.json --arch changed the graph"
printf '{"format":"nnz-arch"' > broken.json
expect 1 "$NNZ" info broken.json; has err "cannot build the architecture"
grep -q '"name":"blocks\.[0-9]*\.conv"' target.json || fail "info --arch: no merged conv in the architecture"
expect 0 "$NNZ" train --model target.json --epochs 1 --batch $B "${TINY[@]}"   # the baseline: the target, directly
[ -s target-trained.safetensors ] || fail "no default output target-trained.safetensors"
expect 0 "$NNZ" info target-trained.safetensors --arch
cmp -s "$T/out" target.json || fail "the directly trained target's architecture differs from the ETS output's"
expect 0 "$NNZ" info target-trained.safetensors; has out "^${ETS_FLOPS}\$"
expect 2 "$NNZ" train --model no-such-arch.json; has err "unknown model 'no-such-arch.json'"

# ---- Expand-then-Shrink to a given target: that target's dense 3x3 convs expanded, merged back to it exactly
expect 0 "$NNZ" shrink --target target.json --expansion 2 "${ETS[@]}" --out to-target.safetensors
has err "^expand-then-shrink to the target 'target.json': its 3 dense kxk convs"; has err "falls from 3 to 0"
has out "^blocks: 3, kept 0, merged 3"
expect 0 "$NNZ" info to-target.safetensors --arch
cmp -s "$T/out" target.json || fail "--target: the output's architecture is not the target's"
expect 0 "$NNZ" info to-target.safetensors; has out "^DepthShrinker (Expand-then-Shrink to the target 'target.json'): 3"
expect 2 "$NNZ" shrink --target target.json --keep 0.5; has err "--keep and --cost-aware do not apply"
expect 2 "$NNZ" shrink --target target.json --from-scratch mbv2-tiny; has err "not both"
expect 2 "$NNZ" shrink --from-scratch mbv2-tiny --expansion 4; has err "applies to --target only"
expect 1 "$NNZ" shrink --target mlp "${TINY[@]}" --out none.safetensors; has err "no convolution to expand"
[ -e none.safetensors ] && fail "a failed --target wrote its output"
no_temp

echo "cli_shrink: all checks passed"
