/* blasguard: an LD_PRELOAD shim that notices BLAS calls in a competition worker.
 *
 * Why: `a @ b`, `ndarray.dot` and `np.einsum(..., optimize=True)` reach
 * OpenBLAS from inside numpy's C code without any Python call, so patching
 * Python names cannot see them. Preloaded into the worker, this library
 * defines the gemm/gemv/syrk/dot entry points that numpy (scipy_cblas_*64_),
 * scipy (scipy_cblas_*, scipy_*_) and a system BLAS (cblas_*, *_) export;
 * the dynamic linker binds callers to these definitions first. Once the
 * worker has armed the guard (tinytorch_blasguard_arm(), after its own
 * imports: importing numpy itself calls sdot once), each one
 *   1. counts the call (tinytorch_blasguard_calls(), read through ctypes),
 *   2. on the first call of that symbol writes "tinytorch-blasguard: NAME\n"
 *      to the file descriptor named by $TINYTORCH_BLASGUARD_FD (default 2),
 *      so the parent hears of it even if the worker later lies,
 *   3. forwards to the real function with the same arguments, so results and
 *      speed are unchanged.
 * The real function is found with dlsym(RTLD_NEXT) or, because numpy loads
 * its OpenBLAS with RTLD_LOCAL (invisible to RTLD_NEXT), by asking every
 * loaded object for the symbol.
 *
 * A plain C shared object: it references no Python API; PyInit__blasguard
 * only exists so setuptools builds it as an extension inside the package.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int armed;
static unsigned long long calls;
static const char *last_symbol = "";

/* Start counting and reporting; there is deliberately no way to stop. */
void tinytorch_blasguard_arm(void) {
    __atomic_store_n(&armed, 1, __ATOMIC_SEQ_CST);
}

/* A process the armed worker starts (subprocess, exec) is armed from its first call. */
__attribute__((constructor)) static void arm_from_environment(void) {
    const char *text = getenv("TINYTORCH_BLASGUARD_ARMED");
    if (text && strcmp(text, "1") == 0)
        tinytorch_blasguard_arm();
}

/* Number of guarded BLAS calls made in this process so far. */
unsigned long long tinytorch_blasguard_calls(void) {
    return __atomic_load_n(&calls, __ATOMIC_SEQ_CST);
}

/* Name of the most recently called guarded symbol ("" if none). */
const char *tinytorch_blasguard_last(void) {
    return __atomic_load_n(&last_symbol, __ATOMIC_SEQ_CST);
}

static int report_fd(void) {
    const char *text = getenv("TINYTORCH_BLASGUARD_FD");
    return text && *text ? atoi(text) : 2;
}

/* Once armed, count the call; tell the report descriptor the first time `name` is used. */
static void note_call(const char *name, int *reported) {
    if (!__atomic_load_n(&armed, __ATOMIC_SEQ_CST))
        return;
    __atomic_add_fetch(&calls, 1, __ATOMIC_SEQ_CST);
    __atomic_store_n(&last_symbol, name, __ATOMIC_SEQ_CST);
    if (!__atomic_exchange_n(reported, 1, __ATOMIC_SEQ_CST)) {
        char line[160];
        int n = snprintf(line, sizeof line, "tinytorch-blasguard: %s\n", name);
        if (n > 0 && write(report_fd(), line, (size_t)n) < 0) {
            /* Nothing useful to do: the counter still records the call. */
        }
    }
}

struct lookup {
    const char *name;
    void *self;       /* our own definition, never the answer */
    const char *own_file;
    void *found;
};

static int search_object(struct dl_phdr_info *info, size_t size, void *data) {
    struct lookup *want = data;
    (void)size;
    if (!info->dlpi_name || !info->dlpi_name[0] || strcmp(info->dlpi_name, want->own_file) == 0)
        return 0;
    void *handle = dlopen(info->dlpi_name, RTLD_LAZY | RTLD_NOLOAD);
    if (!handle)
        return 0;
    void *candidate = dlsym(handle, want->name);
    dlclose(handle);
    if (candidate && candidate != want->self) {
        want->found = candidate;
        return 1;
    }
    return 0;
}

/* The real `name` behind our definition `self`; resolved once, then cached in *slot. */
static void *real_function(const char *name, void *self, void **slot) {
    void *real = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    if (real)
        return real;
    real = dlsym(RTLD_NEXT, name);
    if (!real || real == self) {
        Dl_info own;
        struct lookup want = {name, self, "", NULL};
        if (dladdr(self, &own) && own.dli_fname)
            want.own_file = own.dli_fname;
        dl_iterate_phdr(search_object, &want);
        real = want.found;
    }
    if (!real) {
        fprintf(stderr, "tinytorch-blasguard: %s was called but no loaded library defines it\n",
                name);
        abort();
    }
    __atomic_store_n(slot, real, __ATOMIC_RELEASE);
    return real;
}

/* One guarded entry point: count, report once, forward. PARAMS and ARGS are parenthesised. */
#define GUARD(RET, NAME, PARAMS, ARGS)                                              \
    RET NAME PARAMS {                                                               \
        static void *real;                                                          \
        static int reported;                                                        \
        note_call(#NAME, &reported);                                                \
        RET (*forward) PARAMS = (RET (*) PARAMS)real_function(#NAME, (void *)NAME, &real); \
        return forward ARGS;                                                        \
    }

#define GUARD_VOID(NAME, PARAMS, ARGS)                                              \
    void NAME PARAMS {                                                              \
        static void *real;                                                          \
        static int reported;                                                        \
        note_call(#NAME, &reported);                                                \
        void (*forward) PARAMS = (void (*) PARAMS)real_function(#NAME, (void *)NAME, &real); \
        forward ARGS;                                                               \
    }

/* CBLAS signatures; T is the float type, I the BLAS integer (int or int64_t). */
#define CBLAS_GEMM(NAME, T, I)                                                      \
    GUARD_VOID(NAME, (int order, int ta, int tb, I m, I n, I k, T alpha, const T *a, I lda, \
                      const T *b, I ldb, T beta, T *c, I ldc),                      \
               (order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc))
#define CBLAS_GEMV(NAME, T, I)                                                      \
    GUARD_VOID(NAME, (int order, int ta, I m, I n, T alpha, const T *a, I lda, const T *x, \
                      I incx, T beta, T *y, I incy),                                \
               (order, ta, m, n, alpha, a, lda, x, incx, beta, y, incy))
#define CBLAS_SYRK(NAME, T, I)                                                      \
    GUARD_VOID(NAME, (int order, int uplo, int trans, I n, I k, T alpha, const T *a, I lda, \
                      T beta, T *c, I ldc),                                         \
               (order, uplo, trans, n, k, alpha, a, lda, beta, c, ldc))
#define CBLAS_DOT(NAME, T, I)                                                       \
    GUARD(T, NAME, (I n, const T *x, I incx, const T *y, I incy), (n, x, incx, y, incy))

#define CBLAS_FAMILY(PREFIX, SUFFIX, I)                                             \
    CBLAS_GEMM(PREFIX##sgemm##SUFFIX, float, I)                                     \
    CBLAS_GEMM(PREFIX##dgemm##SUFFIX, double, I)                                    \
    CBLAS_GEMV(PREFIX##sgemv##SUFFIX, float, I)                                     \
    CBLAS_GEMV(PREFIX##dgemv##SUFFIX, double, I)                                    \
    CBLAS_SYRK(PREFIX##ssyrk##SUFFIX, float, I)                                     \
    CBLAS_SYRK(PREFIX##dsyrk##SUFFIX, double, I)                                    \
    CBLAS_DOT(PREFIX##sdot##SUFFIX, float, I)                                       \
    CBLAS_DOT(PREFIX##ddot##SUFFIX, double, I)

/* Fortran BLAS passes everything by pointer, plus hidden lengths of the
 * character arguments, which are forwarded untouched. */
typedef void *P;
typedef size_t L;
#define FORTRAN_FAMILY(PREFIX, SUFFIX)                                              \
    GUARD_VOID(PREFIX##sgemm##SUFFIX, (P ta, P tb, P m, P n, P k, P al, P a, P lda, P b, \
                                       P ldb, P be, P c, P ldc, L lta, L ltb),      \
               (ta, tb, m, n, k, al, a, lda, b, ldb, be, c, ldc, lta, ltb))         \
    GUARD_VOID(PREFIX##dgemm##SUFFIX, (P ta, P tb, P m, P n, P k, P al, P a, P lda, P b, \
                                       P ldb, P be, P c, P ldc, L lta, L ltb),      \
               (ta, tb, m, n, k, al, a, lda, b, ldb, be, c, ldc, lta, ltb))         \
    GUARD_VOID(PREFIX##sgemv##SUFFIX, (P t, P m, P n, P al, P a, P lda, P x, P incx, P be, \
                                       P y, P incy, L lt),                          \
               (t, m, n, al, a, lda, x, incx, be, y, incy, lt))                     \
    GUARD_VOID(PREFIX##dgemv##SUFFIX, (P t, P m, P n, P al, P a, P lda, P x, P incx, P be, \
                                       P y, P incy, L lt),                          \
               (t, m, n, al, a, lda, x, incx, be, y, incy, lt))                     \
    GUARD(float, PREFIX##sdot##SUFFIX, (P n, P x, P incx, P y, P incy), (n, x, incx, y, incy)) \
    GUARD(double, PREFIX##ddot##SUFFIX, (P n, P x, P incx, P y, P incy), (n, x, incx, y, incy))

CBLAS_FAMILY(scipy_cblas_, 64_, int64_t)   /* numpy's bundled scipy-openblas64_ */
CBLAS_FAMILY(scipy_cblas_, , int)          /* scipy's bundled scipy-openblas */
CBLAS_FAMILY(cblas_, , int)                /* a system CBLAS (OpenBLAS, BLIS, MKL, ATLAS) */
CBLAS_FAMILY(cblas_, 64_, int64_t)         /* a system ILP64 OpenBLAS with symbol suffix */
FORTRAN_FAMILY(scipy_, _)                  /* scipy.linalg.blas, scipy's cython_blas */
FORTRAN_FAMILY(scipy_, _64_)
FORTRAN_FAMILY(, _)                        /* a system Fortran BLAS */
FORTRAN_FAMILY(, _64_)

/* Lets setuptools build this file as an extension; never imported. */
void *PyInit__blasguard(void) { return NULL; }
