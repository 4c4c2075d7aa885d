/* log.c: leveled log lines to a file or stderr; one write(2) per line so processes interleave
 * whole lines. Never pass secrets here. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "internal.h"
#include "log_line.h"

static int log_level = LOG_INFO;
static int log_fd = 2;

void log_configure(int level, const char *path)
{
    log_level = level == LOG_OFF ? -1 : level;
    if (path && *path) {
        int fd = open(path, OSSC_LOG_OPEN_FLAGS, OSSC_LOG_MODE);
        if (fd >= 0) {
            if (log_fd > 2)
                close(log_fd);
            log_fd = fd;
        } else {
            int e = errno;
            struct stat st; /* a symlink may fail as EACCES (a sticky directory), not ELOOP */
            fprintf(stderr, "ossc: cannot open log file %s: %s; logging to stderr\n", path,
                    lstat(path, &st) == 0 && S_ISLNK(st.st_mode)
                        ? "it is a symbolic link, which ossc does not follow"
                        : strerror(e));
        }
    }
}

void log_msg(int level, const char *fmt, ...)
{
    static const char *const tags[] = {"ERROR", "WARN", "INFO", "DEBUG"};
    if (level > log_level)
        return;
    char line[2048];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ ossc[%d] %s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, (int)(tv.tv_usec / 1000), (int)getpid(), tags[level]);
    va_list ap;
    va_start(ap, fmt);
    log_line_write(log_fd, line, sizeof(line), n, fmt, ap);
    va_end(ap);
}
