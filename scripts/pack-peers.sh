# Sourced by scripts/pack-bench and scripts/pack-sparse: the peers of `nnz pack` on the same bytes
# (docs/BENCHMARKS.md, "Compressed models"). Needs zstd, xz and python3 (scripts/install-deps --bench).

pack_peers_check() {
  local t
  for t in zstd xz python3; do
    command -v $t >/dev/null || { echo "$1: $t missing: scripts/install-deps --bench" >&2; exit 1; }
  done
}

# pack_fp32 CKPT OUT: the checkpoint's tensors back to back: the fp32 weights. Optimizer state and
# AutoSparse's *.threshold tensors (a record of the training, not part of the model) are left out.
pack_fp32() {
  python3 - "$1" "$2" <<'PY'
import json, struct, sys
b = open(sys.argv[1], 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8+n]); base = 8 + n
with open(sys.argv[2], 'wb') as f:
    for k, v in h.items():
        if k == '__metadata__' or k.startswith('optimizer.') or k.endswith('.threshold'): continue
        s, e = v['data_offsets']; f.write(b[base+s:base+e])
PY
}

# pack_peers BUILD_DIR CKPT FILE.nnz PREFIX: writes PREFIX.f32 (pack_fp32 of CKPT), PREFIX.u8 (the
# quantized weights of FILE.nnz, one byte per weight, and its raw fp32 tensors: bench/pack_decode.c)
# and PREFIX.decode.jsonl (Huffman decode throughput), and sets PEER_FP (fp32 bytes), PEER_NZ (.nnz
# bytes), PEER_ZF / PEER_XF (zstd -19 / xz -9 of the fp32 weights) and PEER_ZQ / PEER_XQ (of the
# quantized weights), all in bytes.
pack_peers() {
  local b=$1 ck=$2 pk=$3 p=$4 d
  d=$(dirname "$p")
  pack_fp32 "$ck" "$p.f32"
  "$b/nnz_pack_decode" "$pk" "$d" > "$p.decode.jsonl"; mv "$d/indices.u8" "$p.u8"
  PEER_FP=$(stat -c %s "$p.f32"); PEER_NZ=$(stat -c %s "$pk")
  PEER_ZF=$(zstd -19 -c -q "$p.f32" | wc -c); PEER_XF=$(xz -9 -c "$p.f32" | wc -c)
  PEER_ZQ=$(zstd -19 -c -q "$p.u8" | wc -c); PEER_XQ=$(xz -9 -c "$p.u8" | wc -c)
}

# pack_ratio FP32_BYTES BYTES: "12.3x"
pack_ratio() { python3 -c "print('%.1fx' % ($1/$2))"; }

# pack_acc NNZ_CLI FILE LIMIT THREADS: the test accuracy of a checkpoint or .nnz file, "88.78%"
pack_acc() {
  "$1" eval "$2" --limit "$3" --threads "$4" --json |
    python3 -c 'import json,sys; print("%.2f%%" % (100*json.load(sys.stdin)["accuracy"]))'
}
