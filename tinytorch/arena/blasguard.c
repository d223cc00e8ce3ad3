/* blasguard: a preloaded shim that stops BLAS and LAPACK calls in a competition worker.
 *
 * Why: `a @ b`, `ndarray.dot` and `numpy.linalg` reach OpenBLAS from inside
 * numpy's C code without any Python call, so patching Python names cannot
 * see them. Preloaded into every process of the worker's sandbox (through
 * the sandbox's read-only /etc/ld.so.preload, so no environment variable can
 * leave it out), this library defines the BLAS and LAPACK entry points numpy
 * (scipy_cblas_*64_, scipy_*_64_), scipy (scipy_cblas_*, scipy_*_) and a
 * system library (cblas_*, *_) export; the dynamic linker binds callers to
 * these definitions first.
 *
 * It is armed by the parent, not by code in the worker: the parent creates
 * GUARD_DIR/armed (read-only to the worker) once the harness has imported
 * numpy, whose import runs one sdot of its own. From then on any guarded call
 *   1. writes "NAME\n" to the FIFO GUARD_DIR/guard, which the parent reads,
 *   2. kills its process with SIGKILL, so the call never returns a result.
 * Before arming, the real-valued gemm/gemv/syrk/dot forward to the real
 * function unchanged; every other symbol (complex BLAS, LAPACK) is never
 * called by the harness, so it reports and dies whether armed or not.
 *
 * Nothing here reads an environment variable after the library is loaded,
 * and nothing here can be switched off: there is no disarm. Inside the
 * sandbox GUARD_DIR is the constant /run/tinytorch and a process started with
 * LD_PRELOAD, LD_LIBRARY_PATH or LD_AUDIT (a way to put its own definitions
 * before these) is reported and killed at load. Files and signals go through
 * raw system calls, so a preloaded library of the submission's cannot
 * intercept them either. Unsandboxed (a trusted field), the directory comes
 * from $TINYTORCH_GUARD_DIR, read once at load.
 *
 * What remains outside its reach is written in docs/security.md: a function
 * pointer looked up on numpy's OpenBLAS handle (tinytorch's ctypes audit hook
 * and the static check of compiled extensions cover the usual routes), and
 * BLAS kernels pasted into a submission's own source (code review, and the
 * impossible-rate bound of the scores).
 *
 * A plain C shared object: it references no Python API; PyInit__blasguard
 * only exists so setuptools builds it as an extension inside the package.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <link.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define SANDBOX_GUARD_DIR "/run/tinytorch"

/* ------------------------------------------------------------ raw system calls */

/* System calls made directly, never through libc symbols a preloaded library could replace. */
static long raw_syscall3(long number, long a, long b, long c) {
#if defined(__x86_64__)
    long result;
    __asm__ volatile("syscall" : "=a"(result) : "a"(number), "D"(a), "S"(b), "d"(c)
                     : "rcx", "r11", "memory");
    return result;
#elif defined(__aarch64__)
    register long x8 __asm__("x8") = number;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2) : "memory");
    return x0;
#else
    return syscall(number, a, b, c);
#endif
}

static long raw_syscall4(long number, long a, long b, long c, long d) {
#if defined(__x86_64__)
    long result;
    register long r10 __asm__("r10") = d;
    __asm__ volatile("syscall" : "=a"(result) : "a"(number), "D"(a), "S"(b), "d"(c), "r"(r10)
                     : "rcx", "r11", "memory");
    return result;
#elif defined(__aarch64__)
    register long x8 __asm__("x8") = number;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    register long x3 __asm__("x3") = d;
    __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3) : "memory");
    return x0;
#else
    return syscall(number, a, b, c, d);
#endif
}

static int exists(const char *path) {
    return raw_syscall4(SYS_faccessat, AT_FDCWD, (long)path, F_OK, 0) == 0;
}

/* ------------------------------------------------------------ configuration and arming */

static char guard_dir[256];   /* "" when this process is not a guarded worker */
static int sandboxed;
static int armed;

static void join(char *out, size_t size, const char *name) {
    size_t used = strlen(guard_dir), extra = strlen(name);
    if (used + 1 + extra + 1 > size) {
        out[0] = '\0';
        return;
    }
    memcpy(out, guard_dir, used);
    out[used] = '/';
    memcpy(out + used + 1, name, extra + 1);
}

/* Tell the parent which symbol was called (best effort), then end this process for good. */
__attribute__((noreturn)) static void report_and_die(const char *what) {
    char fifo[300], line[200];
    join(fifo, sizeof fifo, "guard");
    size_t n = strlen(what);
    if (n > sizeof line - 2)
        n = sizeof line - 2;
    memcpy(line, what, n);
    line[n++] = '\n';
    if (fifo[0]) {
        long fd = raw_syscall4(SYS_openat, AT_FDCWD, (long)fifo,
                               O_WRONLY | O_NONBLOCK | O_CLOEXEC, 0);
        if (fd >= 0) {
            raw_syscall3(SYS_write, fd, (long)line, (long)n);
            raw_syscall3(SYS_close, fd, 0, 0);
        }
    }
    for (;;)
        raw_syscall3(SYS_kill, raw_syscall3(SYS_getpid, 0, 0, 0), SIGKILL, 0);
}

/* Read once, when the library is loaded, before any code of the process's own runs. */
__attribute__((constructor)) static void configure(void) {
    if (exists(SANDBOX_GUARD_DIR "/guard")) {
        strcpy(guard_dir, SANDBOX_GUARD_DIR);
        sandboxed = 1;
    } else {
        const char *dir = getenv("TINYTORCH_GUARD_DIR");
        if (dir && strlen(dir) < sizeof guard_dir - 16)
            strcpy(guard_dir, dir);
    }
    if (sandboxed) {
        static const char *const loader_overrides[] = {"LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT"};
        for (size_t i = 0; i < sizeof loader_overrides / sizeof *loader_overrides; i++) {
            const char *value = getenv(loader_overrides[i]);
            if (value && value[0])
                report_and_die(loader_overrides[i]);
        }
    }
}

/* Armed once the parent has created GUARD_DIR/armed; stays armed for the process's life. */
static int is_armed(void) {
    if (__atomic_load_n(&armed, __ATOMIC_ACQUIRE))
        return 1;
    char marker[300];
    join(marker, sizeof marker, "armed");
    if (guard_dir[0] && marker[0] && exists(marker)) {
        __atomic_store_n(&armed, 1, __ATOMIC_RELEASE);
        return 1;
    }
    return 0;
}

/* ------------------------------------------------------------ forwarding before arming */

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

/* The real `name` behind our definition `self`; resolved once, then cached in *slot.
 * numpy loads its OpenBLAS with RTLD_LOCAL (invisible to RTLD_NEXT), so every loaded
 * object is asked too. */
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
    if (!real)
        report_and_die(name);    /* called, but no loaded library defines it */
    __atomic_store_n(slot, real, __ATOMIC_RELEASE);
    return real;
}

/* A guarded entry point that forwards until armed. PARAMS and ARGS are parenthesised. */
#define GUARD(RET, NAME, PARAMS, ARGS)                                              \
    RET NAME PARAMS {                                                               \
        static void *real;                                                          \
        if (is_armed())                                                             \
            report_and_die(#NAME);                                                  \
        RET (*forward) PARAMS = (RET (*) PARAMS)real_function(#NAME, (void *)NAME, &real); \
        return forward ARGS;                                                        \
    }

#define GUARD_VOID(NAME, PARAMS, ARGS)                                              \
    void NAME PARAMS {                                                              \
        static void *real;                                                          \
        if (is_armed())                                                             \
            report_and_die(#NAME);                                                  \
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

#define CBLAS_FORWARDED(PREFIX, SUFFIX, I)                                          \
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
#define FORTRAN_FORWARDED(PREFIX, SUFFIX)                                           \
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

/* ------------------------------------------------------------ never called by the harness */

/* Complex and remaining real BLAS, and the LAPACK drivers numpy.linalg and scipy.linalg
 * reach: no call is legitimate in a guarded worker, so no signature is needed. */
#define FORBID(NAME) \
    void NAME(void) { report_and_die(#NAME); }

#define BLAS_ROUTINES(X, PREFIX, SUFFIX)                                            \
    X(PREFIX##cgemm##SUFFIX) X(PREFIX##zgemm##SUFFIX)                               \
    X(PREFIX##cgemm3m##SUFFIX) X(PREFIX##zgemm3m##SUFFIX)                           \
    X(PREFIX##cgemv##SUFFIX) X(PREFIX##zgemv##SUFFIX)                               \
    X(PREFIX##csyrk##SUFFIX) X(PREFIX##zsyrk##SUFFIX)                               \
    X(PREFIX##cherk##SUFFIX) X(PREFIX##zherk##SUFFIX)                               \
    X(PREFIX##ssymm##SUFFIX) X(PREFIX##dsymm##SUFFIX)                               \
    X(PREFIX##csymm##SUFFIX) X(PREFIX##zsymm##SUFFIX)                               \
    X(PREFIX##chemm##SUFFIX) X(PREFIX##zhemm##SUFFIX)                               \
    X(PREFIX##strmm##SUFFIX) X(PREFIX##dtrmm##SUFFIX)                               \
    X(PREFIX##ctrmm##SUFFIX) X(PREFIX##ztrmm##SUFFIX)                               \
    X(PREFIX##strsm##SUFFIX) X(PREFIX##dtrsm##SUFFIX)                               \
    X(PREFIX##ctrsm##SUFFIX) X(PREFIX##ztrsm##SUFFIX)                               \
    X(PREFIX##ssyr2k##SUFFIX) X(PREFIX##dsyr2k##SUFFIX)                             \
    X(PREFIX##sger##SUFFIX) X(PREFIX##dger##SUFFIX)                                 \
    X(PREFIX##cgeru##SUFFIX) X(PREFIX##zgeru##SUFFIX)                               \
    X(PREFIX##saxpy##SUFFIX) X(PREFIX##daxpy##SUFFIX)                               \
    X(PREFIX##caxpy##SUFFIX) X(PREFIX##zaxpy##SUFFIX)                               \
    X(PREFIX##scopy##SUFFIX) X(PREFIX##dcopy##SUFFIX)                               \
    X(PREFIX##ccopy##SUFFIX) X(PREFIX##zcopy##SUFFIX)                               \
    X(PREFIX##sscal##SUFFIX) X(PREFIX##dscal##SUFFIX)                               \
    X(PREFIX##cdotu_sub##SUFFIX) X(PREFIX##zdotu_sub##SUFFIX)                       \
    X(PREFIX##cdotc_sub##SUFFIX) X(PREFIX##zdotc_sub##SUFFIX)

#define LAPACK_DRIVER(X, PREFIX, NAME, SUFFIX)                                      \
    X(PREFIX##s##NAME##SUFFIX) X(PREFIX##d##NAME##SUFFIX)                           \
    X(PREFIX##c##NAME##SUFFIX) X(PREFIX##z##NAME##SUFFIX)

#define LAPACK_ROUTINES(X, PREFIX, SUFFIX)                                          \
    LAPACK_DRIVER(X, PREFIX, gesv, SUFFIX) LAPACK_DRIVER(X, PREFIX, getrf, SUFFIX)  \
    LAPACK_DRIVER(X, PREFIX, getrs, SUFFIX) LAPACK_DRIVER(X, PREFIX, getri, SUFFIX) \
    LAPACK_DRIVER(X, PREFIX, gesdd, SUFFIX) LAPACK_DRIVER(X, PREFIX, gesvd, SUFFIX) \
    LAPACK_DRIVER(X, PREFIX, geev, SUFFIX) LAPACK_DRIVER(X, PREFIX, potrf, SUFFIX)  \
    LAPACK_DRIVER(X, PREFIX, potrs, SUFFIX) LAPACK_DRIVER(X, PREFIX, posv, SUFFIX)  \
    LAPACK_DRIVER(X, PREFIX, geqrf, SUFFIX) LAPACK_DRIVER(X, PREFIX, gelsd, SUFFIX) \
    LAPACK_DRIVER(X, PREFIX, gels, SUFFIX) LAPACK_DRIVER(X, PREFIX, trtrs, SUFFIX)  \
    X(PREFIX##ssyevd##SUFFIX) X(PREFIX##dsyevd##SUFFIX)                             \
    X(PREFIX##cheevd##SUFFIX) X(PREFIX##zheevd##SUFFIX)                             \
    X(PREFIX##sorgqr##SUFFIX) X(PREFIX##dorgqr##SUFFIX)                             \
    X(PREFIX##cungqr##SUFFIX) X(PREFIX##zungqr##SUFFIX)

/* The library families: numpy's bundled scipy-openblas64_ (ILP64, suffix 64_), scipy's
 * bundled scipy-openblas, and a system BLAS/LAPACK (OpenBLAS, BLIS, MKL, reference). */
CBLAS_FORWARDED(scipy_cblas_, 64_, int64_t)
CBLAS_FORWARDED(scipy_cblas_, , int)
CBLAS_FORWARDED(cblas_, , int)
CBLAS_FORWARDED(cblas_, 64_, int64_t)
FORTRAN_FORWARDED(scipy_, _)
FORTRAN_FORWARDED(scipy_, _64_)
FORTRAN_FORWARDED(, _)
FORTRAN_FORWARDED(, _64_)

BLAS_ROUTINES(FORBID, scipy_cblas_, 64_)
BLAS_ROUTINES(FORBID, scipy_cblas_, )
BLAS_ROUTINES(FORBID, cblas_, )
BLAS_ROUTINES(FORBID, cblas_, 64_)
BLAS_ROUTINES(FORBID, scipy_, _)
BLAS_ROUTINES(FORBID, scipy_, _64_)
BLAS_ROUTINES(FORBID, , _)
BLAS_ROUTINES(FORBID, , _64_)
LAPACK_ROUTINES(FORBID, scipy_, _)
LAPACK_ROUTINES(FORBID, scipy_, _64_)
LAPACK_ROUTINES(FORBID, , _)
LAPACK_ROUTINES(FORBID, , _64_)

/* Called by tinytorch's ctypes audit hook (through a pointer it took before arming) when
 * Python code looks a BLAS routine up directly on a library handle. */
void tinytorch_blasguard_refuse(const char *what) {
    report_and_die(what && what[0] ? what : "ctypes lookup of BLAS");
}

/* Lets setuptools build this file as an extension; never imported. */
void *PyInit__blasguard(void) { return NULL; }
