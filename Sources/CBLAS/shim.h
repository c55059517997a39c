// OpenBLAS's CBLAS interface plus its threading controls (found through pkg-config `openblas`).
#include <cblas.h>
