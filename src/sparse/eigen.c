/* All eigenvalues of a small dense symmetric matrix: Householder tridiagonalisation, then
 * the implicit QL iteration (the EISPACK tred/tql scheme, eigenvalues only). Used for the
 * spectral check of RBGP's factor graphs (sides up to a few thousand), where LAPACK is not a
 * dependency and a Jacobi sweep would be O(n^3) per sweep with several sweeps. */
#include "sparse/sparse.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Reduces the symmetric a (n x n, overwritten) to tridiagonal form: diagonal d[n],
 * sub-diagonal e[n] with e[i] coupling d[i] and d[i+1] (e[n-1] = 0). */
static void tridiagonalize(int n, double *a, double *d, double *e, double *v, double *w) {
    for (int k = 0; k + 2 < n; k++) {
        const int m = n - k - 1; /* length of the column below the diagonal */
        double *x = v;
        double norm2 = 0.0;
        for (int i = 0; i < m; i++) {
            x[i] = a[(size_t)(k + 1 + i) * n + k];
            norm2 += x[i] * x[i];
        }
        d[k] = a[(size_t)k * n + k];
        double norm = sqrt(norm2);
        if (norm == 0.0) { /* already zero below the sub-diagonal */
            e[k] = 0.0;
            continue;
        }
        const double alpha = x[0] > 0 ? -norm : norm;
        e[k] = alpha;
        x[0] -= alpha; /* v = x - alpha*e1, H = I - beta v v^T */
        double vtv = 0.0;
        for (int i = 0; i < m; i++) vtv += x[i] * x[i];
        if (vtv == 0.0) continue;
        const double beta = 2.0 / vtv;
        /* trailing block A' = H A H: w = beta A v; K = beta/2 v.w; q = w - K v; A -= v q^T + q v^T */
        double vw = 0.0;
        for (int i = 0; i < m; i++) {
            const double *row = a + (size_t)(k + 1 + i) * n + k + 1;
            double s = 0.0;
            for (int j = 0; j < m; j++) s += row[j] * x[j];
            w[i] = beta * s;
            vw += x[i] * w[i];
        }
        const double K = 0.5 * beta * vw;
        for (int i = 0; i < m; i++) w[i] -= K * x[i];
        for (int i = 0; i < m; i++) {
            double *row = a + (size_t)(k + 1 + i) * n + k + 1;
            for (int j = 0; j < m; j++) row[j] -= x[i] * w[j] + w[i] * x[j];
        }
    }
    if (n >= 2) {
        d[n - 2] = a[(size_t)(n - 2) * n + n - 2];
        e[n - 2] = a[(size_t)(n - 1) * n + n - 2];
    }
    d[n - 1] = a[(size_t)(n - 1) * n + n - 1];
    e[n - 1] = 0.0;
}

/* Implicit QL with shifts on the tridiagonal (d, e); eigenvalues left in d. */
static bool tridiagonal_ql(int n, double *d, double *e) {
    for (int l = 0; l < n; l++) {
        int iter = 0, m;
        do {
            for (m = l; m < n - 1; m++) {
                const double dd = fabs(d[m]) + fabs(d[m + 1]);
                if (fabs(e[m]) <= DBL_EPSILON * dd) break;
            }
            if (m != l) {
                if (iter++ == 60) return false;
                double g = (d[l + 1] - d[l]) / (2.0 * e[l]);
                double r = hypot(g, 1.0);
                g = d[m] - d[l] + e[l] / (g + copysign(r, g));
                double s = 1.0, c = 1.0, p = 0.0;
                int i;
                bool underflow = false;
                for (i = m - 1; i >= l; i--) {
                    double f = s * e[i], b = c * e[i];
                    r = hypot(f, g);
                    e[i + 1] = r;
                    if (r == 0.0) { /* recover from underflow */
                        d[i + 1] -= p;
                        e[m] = 0.0;
                        underflow = true;
                        break;
                    }
                    s = f / r;
                    c = g / r;
                    g = d[i + 1] - p;
                    r = (d[i] - g) * s + 2.0 * c * b;
                    p = s * r;
                    d[i + 1] = g + p;
                    g = c * r - b;
                }
                if (underflow) continue;
                d[l] -= p;
                e[l] = g;
                e[m] = 0.0;
            }
        } while (m != l);
    }
    return true;
}

nnz_status nnz_sym_eigenvalues(int n, const double *a, double *w) {
    if (n < 0 || (n > 0 && (!a || !w))) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_sym_eigenvalues: n = %d, a or w NULL", n);
    if (n == 0) return NNZ_OK;
    size_t nn;
    if (!nnz_mul_size((size_t)n, (size_t)n, &nn) || !nnz_mul_size(nn, sizeof(double), &nn))
        return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_sym_eigenvalues: n = %d is too large", n);
    for (size_t i = 0; i < (size_t)n * n; i++)
        if (!isfinite(a[i])) return nnz_fail(NNZ_ERR_NUMERIC, "nnz_sym_eigenvalues: entry %zu is not finite", i);
    double *work = nnz_alloc(nn, "eigen matrix");
    double *vec = nnz_alloc((size_t)n * 3 * sizeof(double), "eigen vectors");
    if (!work || !vec) {
        nnz_free(work), nnz_free(vec);
        return NNZ_ERR_NOMEM;
    }
    memcpy(work, a, nn);
    double *e = vec, *v = vec + n, *tmp = vec + 2 * n;
    tridiagonalize(n, work, w, e, v, tmp);
    bool ok = tridiagonal_ql(n, w, e);
    nnz_free(work), nnz_free(vec);
    if (!ok) return nnz_fail(NNZ_ERR_NUMERIC, "nnz_sym_eigenvalues: QL iteration did not converge (n = %d)", n);
    qsort(w, (size_t)n, sizeof(double), cmp_double);
    return NNZ_OK;
}
