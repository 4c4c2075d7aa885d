/* real.c: the table of real libc functions, generated from hooks.def. */
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shim.h"

#define HOOK(ret, name, params) ret(*real_##name) params;
#include "hooks.def"
#undef HOOK
volatile int real_resolved;

static void resolve_one(void **slot, const char *name, void *ours)
{
    void *p = dlsym(RTLD_NEXT, name);
    if (p == ours) {
        static const char msg[] = "ossc: dlsym returned the shim's own wrapper; aborting\n";
        ssize_t w = write(2, msg, sizeof(msg) - 1);
        (void)w;
        abort();
    }
    *slot = p; /* may be NULL: a libc without, e.g., preadv64v2; the wrapper says ENOSYS */
}

#ifdef _STAT_VER
/* glibc before 2.33 (Debian 11) exports no fstatat, only __fxstatat: the shim's own calls of
 * real_fstatat go through it. */
static int fstatat_by_fxstatat(int dirfd, const char *path, struct stat *st, int flags)
{
    return real___fxstatat(_STAT_VER, dirfd, path, st, flags);
}
#endif

void real_resolve(void)
{
#define HOOK(ret, name, params) \
    extern ret name params;     \
    resolve_one((void **)&real_##name, #name, (void *)name);
#include "hooks.def"
#undef HOOK
#ifdef _STAT_VER
    if (!real_fstatat && real___fxstatat)
        real_fstatat = fstatat_by_fxstatat;
#endif
    __atomic_store_n(&real_resolved, 1, __ATOMIC_RELEASE); /* a NULL left now is missing */
}
