#!/usr/bin/env bash
# The size policy from the command line: NNZ_SIZE_LIMIT caps what one file may
# declare (a gzip'd data set after decompression, a model's weights and
# activations), a malformed value is a usage error. $1 = the nnz binary.
set -u
. "$(dirname "$0")/support/cli_lib.sh"
cli_setup "$@"

expect 0 "$NNZ" --help; has out "NNZ_SIZE_LIMIT"
expect 2 env NNZ_SIZE_LIMIT=lots "$NNZ" info x.safetensors; has err "NNZ_SIZE_LIMIT='lots' is not a size"
expect 2 env NNZ_SIZE_LIMIT=0 "$NNZ" info x.safetensors; has err "not a size"
# the training images are 47 MB after gunzip: a 10 MB limit stops the read, naming the file and the knob
expect 1 env NNZ_SIZE_LIMIT=10M "$NNZ" train --model mlp --epochs 1 --test-limit 64 --out a.safetensors
has err "train-images-idx3-ubyte.gz' is larger than the limit of 10485760 bytes after decompression"
has err "raise NNZ_SIZE_LIMIT"
[ ! -e a.safetensors ] || fail "a checkpoint was written"
# a model over the limit is refused before its weights are allocated
expect 1 env NNZ_SIZE_LIMIT=1M "$NNZ" bench --model vgg8 --iters 1
has err "too large for the size limit of 1048576 bytes"
# --train-limit reads only the first images: far below the limit
expect 0 env NNZ_SIZE_LIMIT=10M "$NNZ" train --model mlp --epochs 1 --train-limit 64 --test-limit 64 --batch 32 \
    --out a.safetensors
rm -f a.safetensors
# under the default limit the same commands work
expect 0 "$NNZ" train --model mlp --epochs 1 --train-limit 64 --test-limit 64 --batch 32 --out a.safetensors
# a checkpoint larger than the limit is refused by size before it is parsed
size=$(stat -c %s a.safetensors)
expect 1 env NNZ_SIZE_LIMIT=$((size - 1)) "$NNZ" info a.safetensors; has err "larger than the limit of $((size - 1)) bytes"
expect 0 env NNZ_SIZE_LIMIT=$size "$NNZ" info a.safetensors
echo "cli_limits: ok"
