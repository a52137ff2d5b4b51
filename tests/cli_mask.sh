#!/usr/bin/env bash
# nnz mask end to end: every kind prints its statistics, rbgp its factor graphs and spectral
# gaps, the picture is a well-formed P5 file of the right size, and bad shapes, sparsities and
# blocks exit 2 with a message naming the problem (and leave no picture behind). $1 = nnz.
set -u
. "$(dirname "$0")/support/cli_lib.sh"
cli_setup "$@"

expect 0 "$NNZ" --help;       has out "mask"
expect 0 "$NNZ" mask --help;  has out "usage: nnz mask"; has out "example:"; has out "--sparsity"

# rbgp: structure, both factor graphs with their spectral check, the index sizes, the picture
expect 0 "$NNZ" mask --shape 128x1152 --sparsity 0.875 --pgm m.pgm --scale 2
has out "kept: 18,432 of 147,456 (density 0.1250"
has out "structure: G_o"; has out "G_o [0-9]*x[0-9]*: left degree"; has out "G_i [0-9]*x[0-9]*: left degree"
has out "Ramanujan bound"; has out "succinct [0-9]*, BSR 4x4"; has out "factor graphs"
[ "$(head -c 2 m.pgm)" = "P5" ] || fail "m.pgm is not a P5 file"
head -n 3 m.pgm | tr '\n' ' ' | grep -q "^P5 2304 256 255 " || fail "m.pgm header: $(head -n 3 m.pgm | tr '\n' ' ')"
[ "$(stat -c %s m.pgm)" -eq $((16 + 2304 * 256)) ] || fail "m.pgm size $(stat -c %s m.pgm)"
# the same seed gives the same mask; another seed another
expect 0 "$NNZ" mask --shape 128x1152 --sparsity 0.875 --pgm m2.pgm --scale 2
cmp -s m.pgm m2.pgm || fail "same seed, different picture"
expect 0 "$NNZ" mask --shape 128x1152 --sparsity 0.875 --pgm m3.pgm --scale 2 --seed 7
cmp -s m.pgm m3.pgm && fail "another seed, same picture"
# fixed factors
expect 0 "$NNZ" mask --shape 256x512 --sparsity 0.75 --block 16x16 --core 64x64 --repeat 2x1 --inner-sparsity 0.5
has out "J_r 2x1"; has out "G_i 4x4"; has out "density 0.2500"

# the other kinds: exact counts
expect 0 "$NNZ" mask --kind unstructured --shape 37x53 --sparsity 0.9
has out "kept: 196 of 1,961"
expect 0 "$NNZ" mask --kind block --shape 64x64 --sparsity 0.75 --block 16x16
has out "kept: 1,024 of 4,096"
expect 0 "$NNZ" mask --kind hbsnn --shape 64x128 --sparsity 0.9 --levels 16x16,4x4
has out "kept: 816 of 8,192"   # round(0.1 * 512) = 51 blocks of 4x4
expect 0 "$NNZ" mask --kind dense --shape 3x5 --sparsity 0
has out "kept: 15 of 15"
expect 0 "$NNZ" mask --kind channel-block --shape 64x576 --taps 9 --sparsity 0.75 --pgm cb.pgm
has out "kept: 9,216 of 36,864"   # 4 of 16 blocks of 16x16 channels, at 9 taps
expect 2 "$NNZ" mask --kind channel-block --shape 64x576 --taps 7; has err "taps"
expect 2 "$NNZ" mask --shape 64x576 --taps 9;                   has err "--taps is for --kind channel-block"

# usage errors: exit 2, a message naming the problem, no picture
expect 2 "$NNZ" mask;                                   has err "--shape"
expect 2 "$NNZ" mask --shape 64;                         has err "--shape expects OCxK"
expect 2 "$NNZ" mask --shape 0x64;                       has err "--shape"
expect 2 "$NNZ" mask --shape 64x-3;                      has err "--shape"
expect 2 "$NNZ" mask --shape 64x64 --sparsity 1 --pgm bad.pgm;  has err "--sparsity"
[ -e bad.pgm ] && fail "a failed run left bad.pgm"
expect 2 "$NNZ" mask --shape 64x64 --sparsity -0.5;      has err "--sparsity"
expect 2 "$NNZ" mask --shape 64x64 --sparsity abc;       has err "--sparsity"
expect 2 "$NNZ" mask --kind rgbp --shape 64x64;          has err "--kind must be one of"
expect 2 "$NNZ" mask --shape 8x576 --block 16x16;        has err "micro-block 16x16 does not fit"
expect 2 "$NNZ" mask --shape 64x576 --core 6x32;         has err "core block rows 6"
expect 2 "$NNZ" mask --kind hbsnn --shape 64x64 --levels 16x16,5x5; has err "must divide"
expect 2 "$NNZ" mask --kind hbsnn --shape 64x64 --levels 16x16,4;   has err "--levels expects"
expect 2 "$NNZ" mask --kind block --shape 64x64 --core 32x32;       has err "for --kind rbgp"
# a picture that cannot be written: exit 1, nothing left
expect 1 "$NNZ" mask --shape 64x64 --pgm no/such/dir/m.pgm; has err "picture"
echo "cli_mask: all checks passed"
