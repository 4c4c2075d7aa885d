/* session_audit.c: the owner's lines in the audit log (auditPath): which large file it fetched
 * or released, when and why ("<unix time> owner=<pid> fetch=<path> bytes=<n> reason=prefetch",
 * reasons: prefetch, open, refetch; release: cacheLimit, expireTimeSec). The shim's lines in
 * the same file ("... pid=<pid> path=<path> ... waited_ms=<ms>") say who read what. Opened as
 * the shim opens it: 0600, never through a symbolic link. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log_line.h"
#include "session.h"

void session_audit_open(ossc_session *s)
{
    s->audit_fd = *s->client->s.audit_path
                      ? open(s->client->s.audit_path, OSSC_LOG_OPEN_FLAGS, OSSC_LOG_MODE)
                      : -1;
    if (*s->client->s.audit_path && s->audit_fd < 0)
        LOGW("cannot open the audit log %s: %s", s->client->s.audit_path, strerror(errno));
}

void session_audit(ossc_session *s, size_t object, const char *event, const char *why)
{
    if (s->audit_fd < 0 || !s->hdr)
        return;
    const ossc_session_object *o = &session_objects(s->hdr)[object];
    char line[OSSC_MODEL_DIR_MAX + 512];
    int n = snprintf(line, sizeof(line), "%llu owner=%d %s=%s/%s bytes=%llu reason=%s\n",
                     (unsigned long long)time(NULL), (int)getpid(), event, s->model_dir,
                     (const char *)s->hdr + s->hdr->names_offset + o->name_offset,
                     (unsigned long long)o->size, why);
    if (n > 0 && (size_t)n < sizeof(line)) {
        ssize_t w = write(s->audit_fd, line, (size_t)n);
        (void)w;
    }
}
