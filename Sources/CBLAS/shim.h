// OpenBLAS's CBLAS interface plus its threading controls (found through pkg-config `openblas`).
#include <cblas.h>
#include <stddef.h>

// LAPACK's divide-and-conquer SVD in single precision, column-major. libopenblas bundles LAPACK, so the Fortran
// symbol is there without lapacke.h; the last argument is gfortran's hidden length of `jobz` (1).
void sgesdd_(const char *jobz, const blasint *m, const blasint *n, float *a, const blasint *lda, float *s,
             float *u, const blasint *ldu, float *vt, const blasint *ldvt, float *work, const blasint *lwork,
             blasint *iwork, blasint *info, size_t jobz_len);
