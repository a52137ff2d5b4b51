/* The pruning-during-training settings: names, defaults, Gradient Annealing's alpha schedules
 * and GMP's cubic sparsity schedule (docs/AUTOSPARSE.md has the equations). */
#include "sparse/sparse.h"

#include <math.h>
#include <string.h>

static const char *const PRUNE_NAMES[] = {"none", "autosparse", "gmp"};
static const char *const ANNEAL_NAMES[] = {"cosine-sigmoid", "cosine", "sigmoid", "linear", "constant"};

void nnz_prune_config_init(nnz_prune_config *p) {
    memset(p, 0, sizeof *p);
    p->kind = NNZ_PRUNE_NONE;
    p->alpha0 = 0.5f;
    p->anneal = NNZ_ANNEAL_COSINE_SIGMOID;
    p->threshold_init = -10.0f;
    p->threshold_decay = -1.0f;
    p->gmp_begin = 0.0f;
    p->gmp_end = 0.75f;
    p->bn_recalibrate = 2048;
}

const char *nnz_prune_kind_name(nnz_prune_kind k) {
    return (unsigned)k < sizeof PRUNE_NAMES / sizeof *PRUNE_NAMES ? PRUNE_NAMES[k] : "?";
}
const char *nnz_anneal_name(nnz_anneal_kind k) {
    return (unsigned)k < sizeof ANNEAL_NAMES / sizeof *ANNEAL_NAMES ? ANNEAL_NAMES[k] : "?";
}

nnz_status nnz_prune_kind_parse(const char *name, nnz_prune_kind *out) {
    for (int i = 0; i < (int)(sizeof PRUNE_NAMES / sizeof *PRUNE_NAMES); i++)
        if (name && strcmp(name, PRUNE_NAMES[i]) == 0) {
            *out = (nnz_prune_kind)i;
            return NNZ_OK;
        }
    return nnz_fail(NNZ_ERR_INVALID_ARG, "unknown pruning '%s': use none, autosparse or gmp", name ? name : "(null)");
}

nnz_status nnz_anneal_parse(const char *name, nnz_anneal_kind *out) {
    for (int i = 0; i < (int)(sizeof ANNEAL_NAMES / sizeof *ANNEAL_NAMES); i++)
        if (name && strcmp(name, ANNEAL_NAMES[i]) == 0) {
            *out = (nnz_anneal_kind)i;
            return NNZ_OK;
        }
    return nnz_fail(NNZ_ERR_INVALID_ARG,
                    "unknown annealing schedule '%s': use cosine-sigmoid, cosine, sigmoid, linear or constant",
                    name ? name : "(null)");
}

static double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

float nnz_anneal_alpha(nnz_anneal_kind k, float alpha0, double f) {
    if (!(f > 0)) f = 0; /* also NaN */
    if (f > 1) f = 1;
    const double pi = 3.14159265358979323846;
    const double cosine = (1.0 + cos(pi * f)) / 2.0, sig = 1.0 - sigmoid(-6.0 + 12.0 * f);
    double d;
    switch (k) {
    case NNZ_ANNEAL_COSINE_SIGMOID: d = cosine > sig ? cosine : sig; break;
    case NNZ_ANNEAL_COSINE: d = cosine; break;
    case NNZ_ANNEAL_SIGMOID: d = sig; break;
    case NNZ_ANNEAL_LINEAR: d = 1.0 - f; break;
    default: d = 1.0; break;
    }
    return (float)(alpha0 * d);
}

double nnz_gmp_sparsity(double target, int64_t begin, int64_t end, int64_t step) {
    if (step < begin) return 0.0;
    double p = end > begin ? (double)(step - begin) / (double)(end - begin) : 1.0;
    if (p > 1) p = 1;
    const double r = 1.0 - p;
    return target * (1.0 - r * r * r); /* s_f + (s_i - s_f)(1 - p)^3 with s_i = 0 */
}
