/* log_line.h: the end of a log line, shared by the engine's log and the shim's (which must not
 * link each other): the message after the caller's prefix, a newline, and one write(2), so
 * processes writing to one file interleave whole lines. errno is left as it was. libc only. */
#ifndef OSSC_LOG_LINE_H
#define OSSC_LOG_LINE_H

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

/* How a log or audit file that ossc may create is opened (logPath, auditPath, owner.log):
 * never through a symbolic link someone planted at the path (ELOOP), readable only by its
 * owner when created. */
#define OSSC_LOG_OPEN_FLAGS (O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC)
#define OSSC_LOG_MODE 0600

/* line[0, n) holds the prefix; cap is sizeof(line). */
static inline void log_line_write(int fd, char *line, size_t cap, int n, const char *fmt,
                                  va_list ap) __attribute__((format(printf, 5, 0)));
static inline void log_line_write(int fd, char *line, size_t cap, int n, const char *fmt,
                                  va_list ap)
{
    int saved = errno;
    int m = vsnprintf(line + n, cap - (size_t)n - 1, fmt, ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > cap - 2)
        len = cap - 2;
    line[len++] = '\n';
    ssize_t w = write(fd, line, len);
    (void)w;
    errno = saved;
}

#endif
