/* Huffman decode throughput of a .nnz file, and the byte dumps the peers (zstd, xz) compress.
 *
 *   nnz_pack_decode MODEL.nnz [OUTDIR]
 *
 * Prints one JSON line per measurement: the four-stream table decoder (symbols -> bytes)
 * and the bit-by-bit oracle, single thread, over every Huffman stream of the file, repeated
 * for about a second; GB/s counts decoded symbols (one byte each). A third line decodes
 * every coded tensor whole (nnz_unpack_tensor: codebook floats, and for sparse tensors the
 * gaps and the scatter to positions), counting output weights (Gweights/s). With OUTDIR it writes
 * OUTDIR/indices.u8: the quantized weights as one byte per weight (dense: the codebook index;
 * sparse: 0 for a pruned weight, index+1 otherwise) and the raw fp32 tensors (biases, batch
 * norm) as they are: the "quantized weights" the peers compress. */
#include "io/io.h"
#include "pack/pack.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    nnz_huf_decoder d;
    const uint8_t *in;
    uint32_t sizes[4];
    int64_t n;
} job;

static void lengths(const uint8_t *in, int nsym, uint8_t *len) {
    for (int i = 0; i < nsym; i++) len[i] = (in[i / 2] >> (4 * (i & 1))) & 15;
}

int main(int argc, char **argv) {
    nnz_prefer_startup_env(argv); /* OpenBLAS on its best kernels, passive OpenMP */
    if (argc < 2) {
        fprintf(stderr, "usage: nnz_pack_decode MODEL.nnz [OUTDIR]\n");
        return 2;
    }
    nnz_set_threads(1);
    nnz_nf_file f;
    if (nnz_nf_load(argv[1], &f) != NNZ_OK) {
        fprintf(stderr, "nnz_pack_decode: %s\n", nnz_last_error());
        return 1;
    }
    job *jobs = calloc((size_t)f.n * 2 + 1, sizeof *jobs);
    int nj = 0;
    int64_t total = 0, maxn = 0;
    FILE *dump = NULL;
    if (argc > 2) {
        char p[4096];
        snprintf(p, sizeof p, "%s/indices.u8", argv[2]);
        dump = fopen(p, "wb");
        if (!dump) {
            perror(p);
            return 1;
        }
    }
    for (int i = 0; i < f.n; i++) {
        const nnz_nf_tensor *t = &f.tensors[i];
        if (t->codec == NNZ_CODEC_RAW_F32) { /* the peers get the same raw tensors */
            if (dump) fwrite(t->payload, 1, (size_t)t->payload_bytes, dump);
            continue;
        }
        nnz_nf_sections sec;
        nnz_nf_record_sections(t, argv[1], &sec);
        const uint8_t *il = t->payload + sec.codebook, *gl = il + sec.idx_lengths;
        const uint8_t *is = gl + sec.gap_lengths, *gs = is + sec.idx_streams;
        uint8_t len[256];
        if (t->idx_mode == NNZ_STREAM_HUFFMAN) {
            job *j = &jobs[nj++];
            lengths(il, (int)t->codebook_size, len);
            nnz_huf_decoder_init(&j->d, len, (int)t->codebook_size, "bench");
            j->in = is, j->n = (int64_t)t->nnz;
            memcpy(j->sizes, t->idx_stream_bytes, sizeof j->sizes);
        }
        if (t->codec == NNZ_CODEC_SPARSE && t->gap_mode == NNZ_STREAM_HUFFMAN) {
            job *j = &jobs[nj++];
            lengths(gl, 1 << t->gap_bits, len);
            nnz_huf_decoder_init(&j->d, len, 1 << t->gap_bits, "bench");
            j->in = gs, j->n = (int64_t)t->n_gaps;
            memcpy(j->sizes, t->gap_stream_bytes, sizeof j->sizes);
        }
        if (dump) { /* the quantized weights, one byte each */
            float *w = malloc((size_t)t->numel * sizeof *w + 4);
            uint8_t *s = malloc(nnz_unpack_scratch_bytes(t) + 1), *b = malloc((size_t)t->numel + 1);
            nnz_unpack_tensor(t, w, s, argv[1]);
            const float *cb = (const float *)t->payload;
            for (uint64_t e = 0; e < t->numel; e++) {
                int k = 0;
                while (k + 1 < (int)t->codebook_size && cb[k] != w[e]) k++;
                b[e] = (uint8_t)(t->codec == NNZ_CODEC_SPARSE ? (w[e] == 0.0f ? 0 : k + 1) : k);
            }
            fwrite(b, 1, (size_t)t->numel, dump);
            free(w), free(s), free(b);
        }
    }
    if (dump) fclose(dump);
    for (int j = 0; j < nj; j++) {
        total += jobs[j].n;
        maxn = jobs[j].n > maxn ? jobs[j].n : maxn;
    }
    uint8_t *out = malloc((size_t)maxn + 1);
    for (int path = 0; path < 2; path++) {
        double t0 = nnz_now_sec(), el = 0;
        int reps = 0;
        do {
            for (int j = 0; j < nj; j++) {
                nnz_status s = path == 0 ? nnz_huf_decode4(&jobs[j].d, jobs[j].in, jobs[j].sizes, out, jobs[j].n, "b")
                                         : nnz_huf_decode4_ref(&jobs[j].d, jobs[j].in, jobs[j].sizes, out, jobs[j].n, "b");
                if (s != NNZ_OK) {
                    fprintf(stderr, "nnz_pack_decode: %s\n", nnz_last_error());
                    return 1;
                }
            }
            reps++;
            el = nnz_now_sec() - t0;
        } while (el < 1.0);
        printf("{\"bench\":\"huffman_decode\",\"impl\":\"%s\",\"file\":\"%s\",\"streams\":%d,\"symbols\":%lld,"
               "\"threads\":1,\"reps\":%d,\"gb_per_s\":%.3f}\n",
               path == 0 ? "nnz_huf_decode4" : "nnz_huf_decode4_ref", argv[1], nj, (long long)total, reps,
               (double)total * reps / el * 1e-9);
    }
    /* whole tensors: what nnz run does per layer */
    int64_t maxel = 0, maxs = 0, weights = 0;
    for (int i = 0; i < f.n; i++) {
        const nnz_nf_tensor *t = &f.tensors[i];
        if (t->codec == NNZ_CODEC_RAW_F32) continue;
        weights += (int64_t)t->numel;
        maxel = (int64_t)t->numel > maxel ? (int64_t)t->numel : maxel;
        maxs = (int64_t)nnz_unpack_scratch_bytes(t) > maxs ? (int64_t)nnz_unpack_scratch_bytes(t) : maxs;
    }
    float *wbuf = malloc((size_t)maxel * sizeof *wbuf + 4);
    uint8_t *sbuf = malloc((size_t)maxs + 1);
    double t0 = nnz_now_sec(), el = 0;
    int reps = 0;
    do {
        for (int i = 0; i < f.n; i++) {
            if (f.tensors[i].codec == NNZ_CODEC_RAW_F32) continue;
            if (nnz_unpack_tensor(&f.tensors[i], wbuf, sbuf, argv[1]) != NNZ_OK) {
                fprintf(stderr, "nnz_pack_decode: %s\n", nnz_last_error());
                return 1;
            }
        }
        reps++;
        el = nnz_now_sec() - t0;
    } while (el < 1.0);
    printf("{\"bench\":\"unpack_tensor\",\"impl\":\"nnz_unpack_tensor\",\"file\":\"%s\",\"weights\":%lld,"
           "\"threads\":1,\"reps\":%d,\"gweights_per_s\":%.3f}\n",
           argv[1], (long long)weights, reps, (double)weights * reps / el * 1e-9);
    free(wbuf);
    free(sbuf);
    free(out);
    free(jobs);
    nnz_nf_free(&f);
    return 0;
}
