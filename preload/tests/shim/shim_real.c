/* shim_real.c: the table of real functions (real.c) is resolved once. A function this libc
 * lacks is remembered as missing, not looked up again on every call of its hook (which
 * then fails with ENOSYS). The program plays a libc without close_range: it defines dlsym
 * (exported: the shim's calls of dlsym reach it first), answers the shim's lookups of
 * close_range with NULL and counts them, and answers every other lookup as dlsym would. */
#include <dlfcn.h>
#include <fcntl.h>
#include <link.h>
#include <linux/close_range.h>
#include <unistd.h>

#include "fixture.h"

#ifndef __SANITIZE_ADDRESS__ /* ASan resolves its interceptors through dlsym before it can run */
static atomic_int lookups; /* the shim's dlsym(RTLD_NEXT, "close_range") */

static void *(*libc_dlsym)(void *, const char *);

/* dlsym(RTLD_NEXT, name) as seen from the object at `caller`: the first definition in the
 * objects loaded after it. (glibc's dlsym finds the caller by its return address, so a
 * plain call from here would search after this program instead.) */
static void *next_after(const void *caller, const char *name)
{
    Dl_info info;
    struct link_map *map = NULL;
    void *self = dlopen(NULL, RTLD_LAZY | RTLD_NOLOAD);
    if (!dladdr(caller, &info) || !self || dlinfo(self, RTLD_DI_LINKMAP, &map) != 0)
        return NULL;
    bool past = false;
    for (; map; map = map->l_next) {
        if (!past) {
            past = (void *)map->l_addr == info.dli_fbase ||
                   (map->l_name[0] && strcmp(map->l_name, info.dli_fname) == 0);
            continue;
        }
        void *h = map->l_name[0] ? dlopen(map->l_name, RTLD_LAZY | RTLD_NOLOAD) : NULL;
        void *p = h ? libc_dlsym(h, name) : NULL;
        if (h)
            dlclose(h);
        if (p)
            return p;
    }
    return NULL;
}

void *dlsym(void *handle, const char *name)
{
    if (!libc_dlsym)
        libc_dlsym = (void *(*)(void *, const char *))dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.34");
    if (handle != RTLD_NEXT)
        return libc_dlsym(handle, name);
    const void *caller = __builtin_extract_return_addr(__builtin_return_address(0));
    Dl_info info;
    if (strcmp(name, "close_range") == 0 && dladdr(caller, &info) && info.dli_fname &&
        strstr(info.dli_fname, "libossc_preload")) {
        atomic_fetch_add(&lookups, 1);
        return NULL;
    }
    return next_after(caller, name);
}
#endif

SHIM_TEST(resolve_once)
{
#ifdef __SANITIZE_ADDRESS__
    fx_skip("the ASan runtime looks its interceptors up through this program's dlsym");
#else
    /* The constructor resolved the table: close_range was asked for once, and found missing. */
    int before = atomic_load(&lookups);
    CHECK(before == 1);
    for (int i = 0; i < 3; i++)
        CHECK_ERRNO(close_range(1000, 1001, 0), ENOSYS);
    int fd = open(fx_path(0), O_RDONLY); /* the other hooks found theirs */
    CHECK(fx_fd_waits(fd, 0, 0));
    CHECK(close(fd) == 0);
    CHECK(atomic_load(&lookups) == before);
#endif
}

int main(int argc, char **argv) { return fx_main(argc, argv); }
