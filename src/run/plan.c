/* The per-layer batch planner (run.h): a super-batch, its stages and their chunk sizes, chosen
 * for the highest estimated throughput under a memory budget and a latency budget. */
#include "run/run.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int a, e, b;
    size_t w, act, sticky;
    double t;
} stage_opt;

double nnz_plan_stage_seconds(const nnz_plan_problem *p, int first, int last, int chunk, int super) {
    double t = 0;
    const double chunks = (double)((super + chunk - 1) / chunk);
    for (int i = first; i <= last; i++) {
        const nnz_plan_layer *l = &p->layer[i];
        t += l->decode_seconds + chunks * (double)l->weight_bytes / p->byte_rate + (double)super * l->flops / p->flop_rate;
    }
    return t;
}

static double stage_decode(const nnz_plan_problem *p, int first, int last) {
    double t = 0;
    for (int i = first; i <= last; i++) t += p->layer[i].decode_seconds;
    return t;
}

/* The weight buffer a stage needs: streamed (chunk = super-batch) its largest layer, held the sum. */
static size_t stage_weights(const nnz_plan_problem *p, int first, int last, bool held) {
    size_t w = 0;
    for (int i = first; i <= last; i++) {
        size_t b = p->layer[i].weight_bytes;
        w = held ? w + b : (b > w ? b : w);
    }
    return w;
}

static int cmp_size(const void *x, const void *y) {
    size_t a = *(const size_t *)x, b = *(const size_t *)y;
    return a < b ? -1 : a > b;
}

static size_t dedupe(size_t *v, size_t n) {
    qsort(v, n, sizeof *v, cmp_size);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (k == 0 || v[i] != v[k - 1]) v[k++] = v[i];
    return k;
}

static size_t sat_add(size_t a, size_t b) { return a > SIZE_MAX - b ? SIZE_MAX : a + b; }

typedef struct {
    bool found;
    double t;
    size_t bytes, w, act, sticky;
    int n_stages;
    int *pick; /* per layer e: the option ending a stage at e (index into opts), along the best path */
} best_plan;

/* The best partition of the layers for one super-batch S; *any_need gets the smallest estimated
 * peak of any partition (fitting or not). */
static nnz_status best_for_super(const nnz_plan_problem *p, int S, best_plan *out, size_t *any_need) {
    const int n = p->n;
    int nch = 0, chunks[40];
    if (p->fixed) chunks[nch++] = S;
    else {
        for (int b = 1; b < S && nch < 39; b *= 2) chunks[nch++] = b;
        chunks[nch++] = S;
    }
    size_t cap = (size_t)n * (size_t)n * (size_t)nch;
    stage_opt *opts = malloc(cap * sizeof *opts);
    size_t *ws = malloc((cap + 1) * sizeof *ws), *rs = malloc((cap + 1) * sizeof *rs);
    double *best = malloc(((size_t)n + 1) * sizeof *best);
    size_t *bw = malloc(((size_t)n + 1) * sizeof *bw), *ba = malloc(((size_t)n + 1) * sizeof *ba),
           *bs = malloc(((size_t)n + 1) * sizeof *bs);
    int *choice = malloc(((size_t)n + 1) * sizeof *choice);
    int *bc = malloc(((size_t)n + 1) * sizeof *bc); /* stages along the best path */
    nnz_status s = NNZ_OK;
    if (!opts || !ws || !rs || !best || !bw || !ba || !bs || !choice || !bc) {
        s = nnz_fail(NNZ_ERR_NOMEM, "out of memory planning the per-layer batches");
        goto done;
    }
    size_t k = 0;
    for (int a = 0; a < n; a++) {
        if (a > 0 && !p->layer[a].cut_before) continue;
        if (p->fixed && a > 0) break;
        for (int e = a; e < n; e++) {
            if (e < n - 1 && !p->layer[e + 1].cut_before) continue;
            if (p->fixed && e < n - 1) continue;
            for (int c = 0; c < nch; c++) {
                stage_opt *o = &opts[k];
                o->a = a, o->e = e, o->b = chunks[c];
                if ((s = p->bytes(p->ctx, a, e, o->b, S, &o->act, &o->sticky))) goto done;
                o->w = stage_weights(p, a, e, o->b < S);
                o->t = nnz_plan_stage_seconds(p, a, e, o->b, S);
                ws[k] = o->w, rs[k] = o->sticky;
                k++;
            }
        }
    }
    size_t nw = dedupe(ws, k), nr = dedupe(rs, k);
    out->found = false;
    *any_need = SIZE_MAX;
    /* the weight buffer and the sticky bytes are maxima over the stages: try every pair of caps,
     * and within them the fastest partition whose stages' act fits what is left */
    for (size_t iw = 0; iw < nw; iw++) {
        for (size_t ir = 0; ir < nr; ir++) {
            const size_t base = sat_add(sat_add(p->fixed_bytes, ws[iw]), rs[ir]);
            /* act allowed: the budget left (for *any_need, no limit) */
            for (int pass = 0; pass < 2; pass++) {
                size_t act_cap = SIZE_MAX;
                if (pass == 0) {
                    if (base > p->budget) continue;
                    act_cap = p->budget - base;
                }
                best[0] = 0, bw[0] = ba[0] = bs[0] = 0, bc[0] = 0;
                for (int e = 1; e <= n; e++) best[e] = INFINITY;
                for (int e = 0; e < n; e++) { /* prefixes ending at layer e, in increasing e */
                    for (size_t j = 0; j < k; j++) {
                        const stage_opt *o = &opts[j];
                        if (o->e != e || o->w > ws[iw] || o->sticky > rs[ir] || o->act > act_cap) continue;
                        if (!isfinite(best[o->a])) continue;
                        double t = best[o->a] + o->t;
                        size_t act = o->act > ba[o->a] ? o->act : ba[o->a];
                        /* ties: less memory, then fewer stages */
                        if (t < best[e + 1] || (t == best[e + 1] && (act < ba[e + 1] ||
                                                                     (act == ba[e + 1] && bc[o->a] + 1 < bc[e + 1])))) {
                            bc[e + 1] = bc[o->a] + 1;
                            best[e + 1] = t;
                            ba[e + 1] = act;
                            bw[e + 1] = o->w > bw[o->a] ? o->w : bw[o->a];
                            bs[e + 1] = o->sticky > bs[o->a] ? o->sticky : bs[o->a];
                            choice[e + 1] = (int)j;
                        }
                    }
                }
                if (!isfinite(best[n])) continue;
                size_t bytes = sat_add(sat_add(sat_add(p->fixed_bytes, bw[n]), bs[n]), ba[n]);
                if (pass == 1) {
                    if (bytes < *any_need) *any_need = bytes;
                    continue;
                }
                if (bytes > p->budget) continue; /* cannot happen: each term is within its cap */
                if (!out->found || best[n] < out->t || (best[n] == out->t && bytes < out->bytes) ||
                    (best[n] == out->t && bytes == out->bytes && bc[n] < out->n_stages)) {
                    out->found = true;
                    out->t = best[n];
                    out->bytes = bytes, out->w = bw[n], out->act = ba[n], out->sticky = bs[n];
                    /* the stages, from the back */
                    int ns = 0;
                    for (int e = n; e > 0; e = opts[choice[e]].a) out->pick[ns++] = choice[e];
                    out->n_stages = ns;
                    for (int i = 0; i < ns / 2; i++) {
                        int t2 = out->pick[i];
                        out->pick[i] = out->pick[ns - 1 - i];
                        out->pick[ns - 1 - i] = t2;
                    }
                }
                if (*any_need > bytes) *any_need = bytes;
            }
        }
    }
    /* turn option indices into stages */
    if (out->found) {
        for (int i = 0; i < out->n_stages; i++) {
            const stage_opt *o = &opts[out->pick[i]];
            out->pick[i] = o->a;
            out->pick[n + i] = o->e;
            out->pick[2 * n + i] = o->b;
        }
    }
done:
    free(opts), free(ws), free(rs), free(best), free(bw), free(ba), free(bs), free(choice), free(bc);
    return s;
}

void nnz_plan_free(nnz_plan *plan) {
    if (!plan) return;
    free(plan->first);
    memset(plan, 0, sizeof *plan);
}

nnz_status nnz_plan_choose(const nnz_plan_problem *p, nnz_plan *out) {
    memset(out, 0, sizeof *out);
    if (!p || p->n < 1 || !p->layer || !p->bytes || !(p->flop_rate > 0) || !(p->byte_rate > 0) || p->max_super < 1 ||
        p->super < 0 || p->latency < 0)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_plan_choose: a problem needs layers, a bytes function, positive "
                                             "rates and a super-batch of at least 1");
    const int n = p->n;
    int *pick = malloc(3 * (size_t)n * sizeof *pick), *keep = malloc(3 * (size_t)n * sizeof *keep);
    if (!pick || !keep) {
        free(pick), free(keep);
        return nnz_fail(NNZ_ERR_NOMEM, "out of memory planning the per-layer batches");
    }
    int supers[40], ns = 0;
    if (p->super) supers[ns++] = p->super;
    else {
        for (int S = 1; S < p->max_super && ns < 39; S *= 2) supers[ns++] = S;
        supers[ns++] = p->max_super;
    }
    bool found = false, any_fit = false;
    double best_rate = 0, fastest_fit = INFINITY;
    int fastest_super = 0;
    size_t smallest = SIZE_MAX;
    best_plan bp = {.pick = pick}, win = {0};
    int win_super = 0;
    nnz_status s = NNZ_OK;
    for (int i = 0; i < ns; i++) {
        const int S = supers[i];
        size_t any_need = SIZE_MAX;
        if ((s = best_for_super(p, S, &bp, &any_need))) break;
        if (any_need < smallest) smallest = any_need;
        if (!bp.found) continue;
        any_fit = true;
        if (bp.t < fastest_fit) fastest_fit = bp.t, fastest_super = S;
        if (p->latency > 0 && bp.t > p->latency) continue;
        double rate = S / bp.t;
        if (!found || rate > best_rate) {
            found = true;
            best_rate = rate;
            win = bp;
            win_super = S;
            memcpy(keep, pick, 3 * (size_t)n * sizeof *pick);
        }
    }
    free(pick);
    if (s != NNZ_OK) {
        free(keep);
        return s;
    }
    if (!found) {
        free(keep);
        if (!any_fit)
            return nnz_fail(NNZ_ERR_NOMEM,
                            "no plan fits the memory budget of %zu bytes: the smallest (a super-batch of %d) needs an "
                            "estimated %zu bytes",
                            p->budget, supers[0], smallest);
        return nnz_fail(NNZ_ERR_INVALID_ARG,
                        "no plan meets the latency budget of %.3f ms: the fastest super-batch that fits the memory "
                        "(%d image%s) takes an estimated %.3f ms",
                        p->latency * 1e3, fastest_super, fastest_super == 1 ? "" : "s", fastest_fit * 1e3);
    }
    out->first = keep;
    out->last = keep + n;
    out->chunk = keep + 2 * n;
    out->super = win_super;
    out->n_stages = win.n_stages;
    out->weight_bytes = win.w;
    out->bytes = win.bytes;
    out->act_bytes = win.act;
    out->sticky_bytes = win.sticky;
    out->seconds = win.t;
    out->decode_seconds = 0;
    for (int i = 0; i < win.n_stages; i++) out->decode_seconds += stage_decode(p, out->first[i], out->last[i]);
    out->images_per_sec = win_super / win.t;
    return NNZ_OK;
}
