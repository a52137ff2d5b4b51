/* libFuzzer target: the Huffman stream decoders of .nnz tensors on arbitrary code
 * lengths and streams, with a differential oracle. Input layout:
 *   byte 0: nsym - 1; bytes 1..nsym: code lengths (taken mod 16);
 *   then n (2 bytes, little-endian, symbols to decode) and four 1-byte stream sizes;
 *   the rest: the four streams back to back (sizes clipped to what is there).
 * The fast table decoder, the float decoder and the bit-by-bit reference must
 * agree: all three fail, or all three succeed with the same symbols. */
#include "pack/pack.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int nsym = data[0] + 1;
    if (size < 1 + (size_t)nsym + 6) return 0;
    uint8_t lengths[NNZ_HUF_MAX_SYMBOLS];
    for (int i = 0; i < nsym; i++) lengths[i] = data[1 + i] % 16;
    const uint8_t *p = data + 1 + nsym;
    int64_t n = p[0] | p[1] << 8;
    uint32_t sizes[4];
    size_t avail = size - (size_t)(p + 6 - data), used = 0;
    for (int k = 0; k < 4; k++) {
        sizes[k] = p[2 + k];
        if (sizes[k] > avail - used) sizes[k] = (uint32_t)(avail - used);
        used += sizes[k];
    }
    /* an exact-size copy of the streams: ASan catches any read past them */
    uint8_t *in = malloc(used ? used : 1);
    if (!in) return 0;
    memcpy(in, p + 6, used);
    nnz_huf_decoder d;
    if (nnz_huf_decoder_init(&d, lengths, nsym, "fuzz") != NNZ_OK) {
        free(in);
        return 0;
    }
    uint8_t *fast = malloc((size_t)n + 1), *ref = malloc((size_t)n + 1);
    float *vals = malloc(((size_t)n + 1) * sizeof *vals), codebook[NNZ_HUF_MAX_SYMBOLS];
    for (int i = 0; i < NNZ_HUF_MAX_SYMBOLS; i++) codebook[i] = (float)i;
    if (fast && ref && vals) {
        nnz_status a = nnz_huf_decode4(&d, in, sizes, fast, n, "fuzz");
        nnz_status b = nnz_huf_decode4_ref(&d, in, sizes, ref, n, "fuzz");
        nnz_status c = nnz_huf_decode4_f32(&d, in, sizes, codebook, vals, n, "fuzz");
        if ((a == NNZ_OK) != (b == NNZ_OK) || (a == NNZ_OK) != (c == NNZ_OK)) abort();
        if (a == NNZ_OK) {
            if (memcmp(fast, ref, (size_t)n) != 0) abort();
            for (int64_t i = 0; i < n; i++)
                if (vals[i] != (float)ref[i]) abort();
        }
    }
    free(fast);
    free(ref);
    free(vals);
    free(in);
    return 0;
}
