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
        [OSSC_E_CONFLICT] = "conflict",
    };
    if (status < 0 || (size_t)status >= sizeof(names) / sizeof(names[0]) || !names[status])
        return "unknown";
    return names[status];
}

OSSC_API int ossc_exit_code(int status)
{
    static const int codes[] = {
        [OSSC_OK] = 0,
        [OSSC_E_CONFIG] = 3,
        [OSSC_E_CREDENTIALS] = 4,
        [OSSC_E_AUTH] = 5,
        [OSSC_E_NOT_FOUND] = 6,
        [OSSC_E_NETWORK] = 7,
        [OSSC_E_PROTOCOL] = 8,
        [OSSC_E_INTEGRITY] = 9,
        [OSSC_E_IO] = 10,
        [OSSC_E_CANCELLED] = 130,
        [OSSC_E_NOMEM] = 12,
        [OSSC_E_SERVER] = 11,
        [OSSC_E_CONFLICT] = 13,
    };
    return status >= 0 && (size_t)status < sizeof(codes) / sizeof(codes[0]) ? codes[status] : 1;
}

OSSC_API void ossc_free(void *p) { free(p); }

OSSC_API const char *ossc_version(void) { return OSSC_VERSION; }
