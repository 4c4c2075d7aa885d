/* error.c: filling ossc_error, and the names of the status codes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exit_codes.h"
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

/* Every status once: its name and the exit code of the ossc commands (Python reads both). */
static const struct status_info {
    const char *name;
    int exit_code;
} statuses[] = {
    [OSSC_OK] = {"ok", OSSC_EXIT_OK},
    [OSSC_E_CONFIG] = {"config", OSSC_EXIT_CONFIG},
    [OSSC_E_CREDENTIALS] = {"credentials", OSSC_EXIT_CREDENTIALS},
    [OSSC_E_AUTH] = {"auth", OSSC_EXIT_AUTH},
    [OSSC_E_NOT_FOUND] = {"not-found", OSSC_EXIT_NOT_FOUND},
    [OSSC_E_NETWORK] = {"network", OSSC_EXIT_NETWORK},
    [OSSC_E_PROTOCOL] = {"protocol", OSSC_EXIT_PROTOCOL},
    [OSSC_E_INTEGRITY] = {"integrity", OSSC_EXIT_INTEGRITY},
    [OSSC_E_IO] = {"io", OSSC_EXIT_IO},
    [OSSC_E_CANCELLED] = {"cancelled", OSSC_EXIT_CANCELLED},
    [OSSC_E_NOMEM] = {"nomem", OSSC_EXIT_NOMEM},
    [OSSC_E_SERVER] = {"server", OSSC_EXIT_SERVER},
    [OSSC_E_CONFLICT] = {"conflict", OSSC_EXIT_CONFLICT},
    [OSSC_E_NO_SPACE] = {"no-space", OSSC_EXIT_NO_SPACE},
};

static const struct status_info *status_info(int status)
{
    bool known = status >= 0 && (size_t)status < sizeof(statuses) / sizeof(statuses[0]) &&
                 statuses[status].name;
    return known ? &statuses[status] : NULL;
}

OSSC_API const char *ossc_status_name(int status)
{
    const struct status_info *info = status_info(status);
    return info ? info->name : "unknown";
}

OSSC_API int ossc_exit_code(int status)
{
    const struct status_info *info = status_info(status);
    return info ? info->exit_code : 1;
}

OSSC_API void ossc_free(void *p) { free(p); }

OSSC_API const char *ossc_version(void) { return OSSC_VERSION; }
