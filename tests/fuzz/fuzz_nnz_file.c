/* libFuzzer target: the .nnz reader and the tensor decoders on arbitrary bytes.
 * Parsed once with checksums (what users get) and once without, so the fuzzer
 * reaches the structural checks and the Huffman/gap decoders behind the CRCs.
 * Every accepted tensor is decoded (up to 2^20 elements: CONST streams can declare
 * huge tensors in a few bytes; nnz run bounds them by the architecture). */
#include "io/io.h"
#include "pack/pack.h"

#include <stdlib.h>

static void decode_all(const nnz_nf_file *f, const uint8_t *data, size_t size) {
    for (int i = 0; i < f->n; i++) {
        const nnz_nf_tensor *t = &f->tensors[i];
        if (!(t->payload >= data && t->payload + t->payload_bytes <= data + size)) abort(); /* also in Release replays, where assert is off */
        if (t->numel > (1u << 20)) continue;
        float *out = malloc(((size_t)t->numel + 1) * sizeof *out);
        uint8_t *scratch = malloc(nnz_unpack_scratch_bytes(t) + 1);
        if (out && scratch) (void)nnz_unpack_tensor(t, out, scratch, "fuzz");
        free(out);
        free(scratch);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    for (int verify = 1; verify >= 0; verify--) {
        nnz_nf_file f;
        if (nnz_nf_parse_ex(data, size, "fuzz", verify, &f) != NNZ_OK) continue;
        decode_all(&f, data, size);
        nnz_nf_free(&f);
    }
    return 0;
}
