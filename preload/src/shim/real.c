/* real.c: the table of real libc functions, generated from hooks.def. */
#include <dlfcn.h>
#include <stdlib.h>
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

void real_resolve(void)
{
#define HOOK(ret, name, params) \
    extern ret name params;     \
    resolve_one((void **)&real_##name, #name, (void *)name);
#include "hooks.def"
#undef HOOK
    __atomic_store_n(&real_resolved, 1, __ATOMIC_RELEASE); /* a NULL left now is missing */
}
