/* session_group.h: what sharedGroup (OSSC_SHARED_GROUP) names, read alike by the owner
 * (libossc) and the shim: a gid in decimal, or a group's name. */
#ifndef OSSC_SESSION_GROUP_H
#define OSSC_SESSION_GROUP_H

#include <grp.h>
#include <stdlib.h>

#include "session_layout.h"

/* *gid: the group's id, or OSSC_SESSION_PRIVATE for "". -1 when no such group exists. */
static inline int ossc_session_group(const char *name, long *gid)
{
    *gid = OSSC_SESSION_PRIVATE;
    if (!*name)
        return 0;
    char *end, buf[4096];
    unsigned long n = strtoul(name, &end, 10);
    if (*name >= '0' && *name <= '9' && *end == '\0' && n <= 0x7fffffff) {
        *gid = (long)n;
        return 0;
    }
    struct group gr, *found = NULL;
    if (getgrnam_r(name, &gr, buf, sizeof(buf), &found) != 0 || !found)
        return -1;
    *gid = (long)found->gr_gid;
    return 0;
}

#endif
