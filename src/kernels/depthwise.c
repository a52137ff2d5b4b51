/* Depthwise convolution: picks the variant from nnz_isa_active() and owns the threading.
 * Contract in kernels.h. ISA ref runs the single-threaded oracles; avx2 / avx512 run the
 * SIMD row kernels, OpenMP over (image, row). The weight gradient is summed per fixed image
 * slot and the slots reduced in order, so it does not depend on the thread count. */
#include "kernels/kernels.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

typedef void (*dw_fwd_row_fn)(const nnz_conv_window *, int, const float *, const float *, const float *, int,
                              const nnz_epilogue *, float *);
typedef void (*dw_bwd_data_row_fn)(const nnz_conv_window *, int, const float *, const float *, int, float *);
typedef void (*dw_bwd_weight_img_fn)(const nnz_conv_window *, int, const float *, const float *, float *);

typedef struct {
    dw_fwd_row_fn fwd_row;
    dw_bwd_data_row_fn bwd_data_row;
    dw_bwd_weight_img_fn bwd_weight_img;
} dw_variant;

/* false: use the reference path */
static bool pick_variant(dw_variant *v) {
    nnz_isa isa = nnz_isa_active();
    if (isa >= NNZ_ISA_AVX512) {
        *v = (dw_variant){nnz_dwconv_fwd_row_f32_avx512, nnz_dwconv_bwd_data_row_f32_avx512,
                          nnz_dwconv_bwd_weight_img_f32_avx512};
        return true;
    }
    if (isa == NNZ_ISA_AVX2) {
        *v = (dw_variant){nnz_dwconv_fwd_row_f32_avx2, nnz_dwconv_bwd_data_row_f32_avx2,
                          nnz_dwconv_bwd_weight_img_f32_avx2};
        return true;
    }
    return false;
}

static int weight_slots(int N) { return N < NNZ_DW_SLOTS ? N : NNZ_DW_SLOTS; }
int nnz_dwconv_slots(int N) { return weight_slots(N); }

size_t nnz_dwconv_work_floats(const nnz_conv_window *g, int N, int C) {
    return (size_t)weight_slots(N) * g->KH * g->KW * C;
}

void nnz_dwconv_forward_ep(const nnz_conv_window *g, int N, int C, const float *inp, const float *weight_t,
                           const float *bias, const nnz_epilogue *ep, float *out) {
    dw_variant v;
    if (!pick_variant(&v)) {
        nnz_dwconv_forward_ref(g, N, C, inp, weight_t, bias, out);
        if (ep) nnz_epilogue_apply((int64_t)N * g->OH * g->OW, C, ep, out);
        return;
    }
    const size_t in_img = (size_t)g->H * g->W * C, out_row = (size_t)g->OW * C;
    const int rows = N * g->OH;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        int n = r / g->OH, oh = r % g->OH;
        v.fwd_row(g, C, inp + n * in_img, weight_t, bias, oh, ep, out + (size_t)r * out_row);
    }
}

/* The reference path with a prologue: the whole batch transformed first (the oracles take a batch) */
static float *transformed_batch(const nnz_conv_window *g, int N, int C, const float *inp,
                                const nnz_input_prologue *pro) {
    const size_t floats = (size_t)N * g->H * g->W * C;
    float *t = malloc((floats > 0 ? floats : 1) * sizeof(float));
    if (t) pro->fn(pro->ctx, (int64_t)N * g->H * g->W, inp, t);
    return t;
}

/* one buffer of an image per thread */
static float *image_buffers(const nnz_conv_window *g, int C) {
    const size_t in_img = (size_t)g->H * g->W * C;
    return malloc((size_t)omp_get_max_threads() * (in_img ? in_img : 1) * sizeof(float));
}

bool nnz_dwconv_forward_pro(const nnz_conv_window *g, int N, int C, const float *inp, const nnz_input_prologue *pro,
                            const float *weight_t, const float *bias, const nnz_epilogue *ep, float *out) {
    dw_variant v;
    if (!pick_variant(&v)) {
        float *t = transformed_batch(g, N, C, inp, pro);
        if (!t) return false;
        nnz_dwconv_forward_ep(g, N, C, t, weight_t, bias, ep, out);
        free(t);
        return true;
    }
    float *buf = image_buffers(g, C);
    if (!buf) return false;
    const size_t in_img = (size_t)g->H * g->W * C, out_row = (size_t)g->OW * C;
    /* by image (the transform's unit), each output row as in nnz_dwconv_forward_ep */
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        float *b = buf + (size_t)omp_get_thread_num() * in_img;
        pro->fn(pro->ctx, (int64_t)g->H * g->W, inp + n * in_img, b);
        for (int oh = 0; oh < g->OH; oh++)
            v.fwd_row(g, C, b, weight_t, bias, oh, ep, out + ((size_t)n * g->OH + oh) * out_row);
    }
    free(buf);
    return true;
}

void nnz_dwconv_forward(const nnz_conv_window *g, int N, int C, const float *inp, const float *weight_t,
                        const float *bias, float *out) {
    nnz_dwconv_forward_ep(g, N, C, inp, weight_t, bias, NULL, out);
}

/* Stride 1, square window: the data gradient is the forward convolution of dout with the window
 * turned 180 degrees and padding K-1-pad, so it runs the forward's register-blocked rows instead
 * of the per-pixel gather. Accumulating, each row is made in a per-thread row buffer and added:
 * onto zeros that is the overwriting result exactly (0 + T = T). false when it does not apply
 * or its buffers could not be allocated: the caller gathers. */
static bool backward_data_as_forward(const dw_variant *v, const nnz_conv_window *g, int N, int C, const float *dout,
                                     const float *weight_t, float *dinp, bool accumulate) {
    const int K = g->KH;
    if (g->stride != 1 || g->KW != K || g->pad > K - 1) return false;
    const size_t in_row = (size_t)g->W * C, out_img = (size_t)g->OH * g->OW * C;
    const int threads = omp_get_max_threads();
    float *turned = malloc((size_t)K * K * C * sizeof(float));
    float *rowbuf = accumulate ? malloc((size_t)threads * in_row * sizeof(float)) : NULL;
    if (!turned || (accumulate && !rowbuf)) {
        free(turned), free(rowbuf);
        return false;
    }
    for (int t = 0; t < K * K; t++)
        memcpy(turned + (size_t)t * C, weight_t + (size_t)(K * K - 1 - t) * C, (size_t)C * sizeof(float));
    const nnz_conv_window f = {.H = g->OH, .W = g->OW, .KH = K, .KW = K, .stride = 1, .pad = K - 1 - g->pad,
                               .OH = g->H, .OW = g->W};
    const int rows = N * g->H;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        const int n = r / g->H, ih = r % g->H;
        float *d = dinp + (size_t)r * in_row;
        float *o = accumulate ? rowbuf + (size_t)omp_get_thread_num() * in_row : d;
        v->fwd_row(&f, C, dout + n * out_img, turned, NULL, ih, NULL, o);
        if (accumulate)
            for (size_t i = 0; i < in_row; i++) d[i] += o[i];
    }
    free(turned), free(rowbuf);
    return true;
}

void nnz_dwconv_backward_data_ex(const nnz_conv_window *g, int N, int C, const float *dout, const float *weight_t,
                                 float *dinp, bool accumulate) {
    dw_variant v;
    const size_t out_img = (size_t)g->OH * g->OW * C, in_row = (size_t)g->W * C;
    const int rows = N * g->H;
    if (!pick_variant(&v)) {
        if (!accumulate) memset(dinp, 0, (size_t)rows * in_row * sizeof(float));
        nnz_dwconv_backward_data_ref(g, N, C, dout, weight_t, dinp);
        return;
    }
    if (backward_data_as_forward(&v, g, N, C, dout, weight_t, dinp, accumulate)) return;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        int n = r / g->H, ih = r % g->H;
        float *d = dinp + (size_t)r * in_row;
        if (!accumulate) memset(d, 0, in_row * sizeof(float)); /* the row stays in cache for the kernel */
        v.bwd_data_row(g, C, dout + n * out_img, weight_t, ih, d);
    }
}

void nnz_dwconv_backward_data(const nnz_conv_window *g, int N, int C, const float *dout, const float *weight_t,
                              float *dinp) {
    nnz_dwconv_backward_data_ex(g, N, C, dout, weight_t, dinp, true);
}

/* One image's data gradient, input rows [0, H), from its dout image: the turned-window forward
 * (turned non-NULL: stride 1, square window; rowbuf one input row when accumulating) or the
 * gather, as nnz_dwconv_backward_data_ex does for each row */
static void backward_data_image(const dw_variant *v, const nnz_conv_window *g, int C, const float *dout_img,
                                const float *weight_t, const float *turned, float *rowbuf, bool accumulate,
                                float *dinp_img) {
    const size_t in_row = (size_t)g->W * C;
    const int K = g->KH;
    const nnz_conv_window f = {.H = g->OH, .W = g->OW, .KH = K, .KW = K, .stride = 1, .pad = K - 1 - g->pad,
                               .OH = g->H, .OW = g->W};
    for (int ih = 0; ih < g->H; ih++) {
        float *d = dinp_img + (size_t)ih * in_row;
        if (turned) {
            float *o = accumulate ? rowbuf : d;
            v->fwd_row(&f, C, dout_img, turned, NULL, ih, NULL, o);
            if (accumulate)
                for (size_t i = 0; i < in_row; i++) d[i] += o[i];
        } else {
            if (!accumulate) memset(d, 0, in_row * sizeof(float));
            v->bwd_data_row(g, C, dout_img, weight_t, ih, d);
        }
    }
}

/* the weight gradient's fixed-order reduction: slot 0, 1, 2, ... */
static void add_slots(int slots, size_t taps, const float *work, float *dweight_t) {
    for (int sl = 0; sl < slots; sl++) {
        const float *partial = work + sl * taps;
#pragma omp simd
        for (size_t i = 0; i < taps; i++) dweight_t[i] += partial[i];
    }
}

void nnz_dwconv_backward_weight(const nnz_conv_window *g, int N, int C, const float *inp, const float *dout,
                                float *dweight_t, float *work) {
    (void)nnz_dwconv_backward_weight_pro(g, N, C, inp, NULL, dout, dweight_t, work); /* no buffers: cannot fail */
}

bool nnz_dwconv_backward_weight_pro(const nnz_conv_window *g, int N, int C, const float *inp,
                                    const nnz_input_prologue *pro, const float *dout, float *dweight_t, float *work) {
    dw_variant v;
    if (!pick_variant(&v)) {
        float *t = pro ? transformed_batch(g, N, C, inp, pro) : NULL;
        if (pro && !t) return false;
        nnz_dwconv_backward_weight_ref(g, N, C, pro ? t : inp, dout, dweight_t);
        free(t);
        return true;
    }
    if (N <= 0) return true;
    const size_t in_img = (size_t)g->H * g->W * C, out_img = (size_t)g->OH * g->OW * C;
    float *buf = pro ? image_buffers(g, C) : NULL;
    if (pro && !buf) return false;
    const int slots = weight_slots(N);
    const size_t taps = (size_t)g->KH * g->KW * C;
#pragma omp parallel for schedule(static)
    for (int sl = 0; sl < slots; sl++) {
        float *partial = work + sl * taps, *b = pro ? buf + (size_t)omp_get_thread_num() * in_img : NULL;
        memset(partial, 0, taps * sizeof(float));
        int n0 = (int)((int64_t)N * sl / slots), n1 = (int)((int64_t)N * (sl + 1) / slots);
        for (int n = n0; n < n1; n++) {
            const float *img = inp + n * in_img;
            if (pro) pro->fn(pro->ctx, (int64_t)g->H * g->W, img, b), img = b;
            v.bwd_weight_img(g, C, img, dout + n * out_img, partial);
        }
    }
    add_slots(slots, taps, work, dweight_t);
    free(buf);
    return true;
}

/* An output written image by image (`pixels` rows of C floats each) in runs of whole images, one
 * thread per run, handed to a sink in groups of `unit` rows, each group exactly once: a group
 * that lies inside one run goes as soon as the run has written its last row (still in cache,
 * sink_ready); a group across the border of two runs goes after all runs (sink_straddling). */
typedef struct {
    const nnz_row_sink *sink;
    const float *out;
    int64_t pixels, rows; /* per image; in all */
    int C, unit;
} image_sink;

/* The run that starts at row `first` has written its rows up to `end`; *next is the run's first
 * row not yet sunk (start it at `first`) */
static void sink_ready(const image_sink *k, int64_t first, int64_t end, int64_t *next) {
    const int64_t from = *next > first ? *next : (first + k->unit - 1) / k->unit * k->unit;
    const int64_t to = end == k->rows ? end : end / k->unit * k->unit;
    if (to > from) k->sink->fn(k->sink->ctx, from, (int)(to - from), k->out + from * k->C);
    *next = to > from ? to : from;
}

/* the groups with a border between two runs inside them, each by the first such border (small
 * images: most groups); runs of images [N*r/runs, N*(r+1)/runs) */
static void sink_straddling(const image_sink *k, int N, int runs) {
#pragma omp parallel for schedule(static)
    for (int r = 1; r < runs; r++) {
        const int64_t border = (int64_t)N * r / runs * k->pixels, grp = border / k->unit;
        const int64_t before = (int64_t)N * (r - 1) / runs * k->pixels; /* the previous border (r > 1) */
        if (border % k->unit == 0 || border >= k->rows) continue;
        if (r > 1 && before / k->unit == grp && before % k->unit != 0) continue; /* that border's group */
        const int64_t r0 = grp * k->unit, n = k->rows - r0 < k->unit ? k->rows - r0 : k->unit;
        k->sink->fn(k->sink->ctx, r0, (int)n, k->out + r0 * k->C);
    }
}

/* nnz_dwconv_backward_src and _images: dinp stored (dsink on its rows) or handed to isink */
static bool backward_src(const nnz_conv_window *g, int N, int C, const nnz_row_source *src, const float *inp,
                         const nnz_input_prologue *pro, const float *weight_t, float *dweight_t, float *work,
                         float *dinp, bool accumulate, const nnz_row_sink *dsink, int unit,
                         const nnz_image_sink *isink) {
    dw_variant v;
    if (N <= 0) return true;
    if (dsink && (accumulate || unit < 1)) return false;
    const size_t in_img = (size_t)g->H * g->W * C, out_img = (size_t)g->OH * g->OW * C;
    const int64_t out_pixels = (int64_t)g->OH * g->OW;
    const image_sink ks = {dsink, dinp, (int64_t)g->H * g->W, (int64_t)N * g->H * g->W, C, unit};
    const int K = g->KH, slots = weight_slots(N), threads = omp_get_max_threads();
    if (!pick_variant(&v)) { /* the reference path: all of dout (and pro(inp)) first */
        float *dout = malloc((size_t)N * out_img * sizeof(float));
        float *t = pro ? transformed_batch(g, N, C, inp, pro) : NULL;
        float *d = isink ? malloc((size_t)N * in_img * sizeof(float)) : dinp;
        const bool ok = dout && (!pro || t) && d;
        if (ok) {
            for (int n = 0; n < N; n++) src->fn(src->ctx, n * out_pixels, (int)out_pixels, dout + n * out_img);
            nnz_dwconv_backward_weight_ref(g, N, C, pro ? t : inp, dout, dweight_t);
            if (!accumulate || isink) memset(d, 0, (size_t)N * in_img * sizeof(float));
            nnz_dwconv_backward_data_ref(g, N, C, dout, weight_t, d);
            if (dsink) dsink->fn(dsink->ctx, 0, (int)ks.rows, dinp); /* one block: all rows */
            for (int sl = 0; isink && sl < slots; sl++)
                for (int n = (int)((int64_t)N * sl / slots); n < (int)((int64_t)N * (sl + 1) / slots); n++)
                    isink->fn(isink->ctx, sl, n, d + n * in_img);
        }
        free(dout), free(t);
        if (isink) free(d);
        return ok;
    }
    const bool turn = g->stride == 1 && g->KW == K && g->pad <= K - 1;
    const size_t taps = (size_t)g->KH * g->KW * C, in_row = (size_t)g->W * C;
    const size_t per_thread = out_img + (pro ? in_img : 0) + in_row + (isink ? in_img : 0);
    float *buf = malloc((size_t)threads * per_thread * sizeof(float));
    float *turned = turn ? malloc((size_t)K * K * C * sizeof(float)) : NULL;
    if (!buf || (turn && !turned)) {
        free(buf), free(turned);
        return false;
    }
    for (int t = 0; turn && t < K * K; t++)
        memcpy(turned + (size_t)t * C, weight_t + (size_t)(K * K - 1 - t) * C, (size_t)C * sizeof(float));
    /* by image, in the weight gradient's slots: the image's dout made once, then both gradients */
#pragma omp parallel for schedule(static)
    for (int sl = 0; sl < slots; sl++) {
        float *db = buf + (size_t)omp_get_thread_num() * per_thread, *ib = db + out_img;
        float *rowbuf = ib + (pro ? in_img : 0), *own = rowbuf + in_row, *partial = work + sl * taps;
        memset(partial, 0, taps * sizeof(float));
        int n0 = (int)((int64_t)N * sl / slots), n1 = (int)((int64_t)N * (sl + 1) / slots);
        int64_t next = n0 * ks.pixels;
        for (int n = n0; n < n1; n++) {
            src->fn(src->ctx, n * out_pixels, (int)out_pixels, db);
            const float *img = inp + n * in_img;
            if (pro) pro->fn(pro->ctx, (int64_t)g->H * g->W, img, ib), img = ib;
            v.bwd_weight_img(g, C, img, db, partial);
            float *d = isink ? own : dinp + n * in_img;
            backward_data_image(&v, g, C, db, weight_t, turned, rowbuf, accumulate && !isink, d);
            if (isink) isink->fn(isink->ctx, sl, n, d);
            if (dsink) sink_ready(&ks, n0 * ks.pixels, (n + 1) * ks.pixels, &next);
        }
    }
    if (dsink) sink_straddling(&ks, N, slots);
    add_slots(slots, taps, work, dweight_t);
    free(buf), free(turned);
    return true;
}

bool nnz_dwconv_backward_src(const nnz_conv_window *g, int N, int C, const nnz_row_source *src, const float *inp,
                             const nnz_input_prologue *pro, const float *weight_t, float *dweight_t, float *work,
                             float *dinp, bool accumulate, const nnz_row_sink *dsink, int unit) {
    return backward_src(g, N, C, src, inp, pro, weight_t, dweight_t, work, dinp, accumulate, dsink, unit, NULL);
}

bool nnz_dwconv_backward_src_images(const nnz_conv_window *g, int N, int C, const nnz_row_source *src,
                                    const float *inp, const nnz_input_prologue *pro, const float *weight_t,
                                    float *dweight_t, float *work, const nnz_image_sink *isink) {
    return backward_src(g, N, C, src, inp, pro, weight_t, dweight_t, work, NULL, false, NULL, 1, isink);
}
