/* Learning-rate schedules, as a pure function of the step (0-based), so a
 * resumed run continues on the same curve.
 *
 * cosine:   warm-up lr*(step+1)/warmup for step < warmup, then
 *           min_lr + (base-min_lr)*(1+cos(pi*t/T))/2, t = step-warmup, T = total-warmup
 *           (t is clamped to T, so steps past the end stay at min_lr)
 * step:     base * gamma^floor(step/step_size)           (torch StepLR)
 * onecycle: torch OneCycleLR with its defaults (pct_start 0.3, cos annealing,
 *           div_factor 25, final_div_factor 1e4, two phases): base/25 up to base
 *           over the first 30% of the steps, then down to base/(25*1e4)
 * constant: base
 */
#include "nn/nn.h"

#include <math.h>

static const double pi = 3.14159265358979323846;

const char *nnz_schedule_kind_name(nnz_schedule_kind k) {
    switch (k) {
    case NNZ_SCHED_COSINE: return "cosine";
    case NNZ_SCHED_STEP: return "step";
    case NNZ_SCHED_ONECYCLE: return "onecycle";
    case NNZ_SCHED_CONSTANT: return "constant";
    }
    return "?";
}

/* torch.optim.lr_scheduler.OneCycleLR._annealing_cos */
static double anneal_cos(double start, double end, double pct) {
    return end + (start - end) / 2.0 * (cos(pi * pct) + 1.0);
}

static double onecycle(const nnz_schedule *s, int64_t step) {
    const double max_lr = s->base_lr, initial = max_lr / 25.0, final_lr = initial / 1e4;
    const double total = (double)s->total_steps;
    const double end1 = 0.3 * total - 1.0, end2 = total - 1.0;
    double x = (double)(step < s->total_steps ? step : s->total_steps - 1);
    if (x <= end1) return anneal_cos(initial, max_lr, end1 > 0 ? x / end1 : 1.0);
    return anneal_cos(max_lr, final_lr, end2 > end1 ? (x - end1) / (end2 - end1) : 1.0);
}

float nnz_schedule_lr(const nnz_schedule *s, int64_t step) {
    if (!s) return 0;
    if (step < 0) step = 0;
    const double base = s->base_lr;
    switch (s->kind) {
    case NNZ_SCHED_COSINE: {
        int64_t warm = s->warmup_steps > 0 ? s->warmup_steps : 0;
        if (step < warm) return (float)(base * (double)(step + 1) / (double)warm);
        int64_t T = s->total_steps - warm;
        if (T <= 0) return (float)base;
        double t = (double)(step - warm < T ? step - warm : T);
        return (float)(s->min_lr + (base - s->min_lr) * (1.0 + cos(pi * t / (double)T)) / 2.0);
    }
    case NNZ_SCHED_STEP:
        if (s->step_size <= 0) return (float)base;
        return (float)(base * pow((double)s->gamma, (double)(step / s->step_size)));
    case NNZ_SCHED_ONECYCLE:
        if (s->total_steps < 1) return (float)base;
        return (float)onecycle(s, step);
    case NNZ_SCHED_CONSTANT: return (float)base;
    }
    return (float)base;
}
