/* error.c: filling ossc_error, and the names of the status codes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

void err_clear(ossc_error *err)
{
    if (err)
        memset(err, 0, sizeof(*err));
}

void err_set(ossc_error *err, int code, const char *fmt, ...)
{
    if (!err)
        return;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
}

OSSC_API const char *ossc_status_name(int status)
{
    static const char *const names[] = {
        [OSSC_OK] = "ok",
        [OSSC_E_CONFIG] = "config",
        [OSSC_E_CREDENTIALS] = "credentials",
        [OSSC_E_AUTH] = "auth",
        [OSSC_E_NOT_FOUND] = "not-found",
        [OSSC_E_NETWORK] = "network",
        [OSSC_E_PROTOCOL] = "protocol",
        [OSSC_E_INTEGRITY] = "integrity",
        [OSSC_E_IO] = "io",
        [OSSC_E_CANCELLED] = "cancelled",
        [OSSC_E_NOMEM] = "nomem",
        [OSSC_E_SERVER] = "server",
    };
    if (status < 0 || (size_t)status >= sizeof(names) / sizeof(names[0]) || !names[status])
        return "unknown";
    return names[status];
}

OSSC_API void ossc_free(void *p) { free(p); }

OSSC_API const char *ossc_version(void) { return OSSC_VERSION; }
