/* ossc-owner: the process that owns a session, started by the shim (env-var mode) or by
 * ossc-run, never the application itself, so exec, _exit, nohup or a crash of the
 * application cannot hurt the download.
 *
 *   ossc-owner --oss-path URL --model-dir DIR [--set key=value]... [--prog NAME]
 *
 * Credentials come from the environment (never argv, which every user can read in ps).
 * The first process returns once the session is published (exit 0), found already served
 * by a live owner of the same store path (exit 0), or failed (one "NAME: message" line on
 * stderr and the ossc exit code of the failure). Behind it, detached in a session of its
 * own, a guardian waits on the owner; if the owner dies by a signal (SIGKILL, the OOM
 * killer), the guardian removes the session once no process uses it. */
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ossc.h"
#include "log_line.h"
#include "session_layout.h"

#define REAP_POLL_SEC 1
#define MAX_SETTINGS 128

typedef struct status_record {
    int code;
    char message[512];
} status_record;

static ossc_session *serving;
static volatile sig_atomic_t stop_signal;
static pid_t guardian_group;

/* In the first process: a stop (Ctrl-C, ossc-run's SIGTERM) while the owner starts goes on
 * to the owner, which unwinds and leaves nothing behind; the guardian ignores it. */
static void forward_stop(int sig)
{
    stop_signal = sig;
    if (guardian_group > 0)
        kill(-guardian_group, SIGTERM);
}

static void set_handlers(void (*handler)(int))
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = handler;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

static void on_stop(int sig)
{
    (void)sig;
    if (serving)
        ossc_session_request_end(serving);
}

static int usage(const char *prog)
{
    fprintf(stderr, "%s: usage: ossc-owner --oss-path URL --model-dir DIR [--set key=value]... "
            "[--prog NAME]\n", prog);
    return 2;
}

static void to_devnull(int fd)
{
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null >= 0) {
        dup2(null, fd);
        close(null);
    }
}

/* The owner: start, report to the first process, serve until no process uses the session,
 * remove it. shared gets the session's path for the guardian. */
static int run_owner(const char *url, const char *dir, const char *const *sets, size_t n_sets,
                     int report_fd, char *shared)
{
    status_record st;
    memset(&st, 0, sizeof(st));
    ossc_error err;
    ossc_session *s = ossc_session_start(url, dir, sets, n_sets, &err);
    if (s) {
        snprintf(shared, OSSC_SESSION_PATH_MAX, "%s", ossc_session_path(s));
        char log[OSSC_SESSION_PATH_MAX + 16];
        snprintf(log, sizeof(log), "%s/owner.log", ossc_session_path(s));
        /* From here on the application's stderr is not ours to hold (a parent reading it
         * to EOF would wait for us): the log goes to logPath or the session's owner.log. */
        int fd = ossc_session_attached(s) ? -1
                 : open(log, OSSC_LOG_OPEN_FLAGS, OSSC_LOG_MODE);
        if (fd >= 0) {
            dup2(fd, 2);
            close(fd);
        } else {
            to_devnull(2);
        }
    } else {
        st.code = err.code ? err.code : OSSC_E_IO;
        snprintf(st.message, sizeof(st.message), "%s", err.message);
        to_devnull(2);
    }
    ssize_t w = write(report_fd, &st, sizeof(st));
    (void)w;
    close(report_fd);
    if (!s)
        return 1;
    if (ossc_session_attached(s)) {
        ossc_session_stop(s, 0);
        return 0;
    }
    serving = s;
    set_handlers(on_stop);
    ossc_session_serve(s);
    ossc_session_stop(s, 1);
    return 0;
}

/* The guardian: if the owner dies by a signal, nobody else would remove its session (or,
 * dead while starting, what it had begun: every name it may have taken for dir). */
static int guard(pid_t owner, const char *shared, const char *dir)
{
    int status;
    while (waitpid(owner, &status, 0) < 0 && errno == EINTR)
        ;
    if (!WIFSIGNALED(status))
        return 0;
    char real[PATH_MAX], path[OSSC_SESSION_PATH_MAX];
    const char *key = realpath(dir, real) ? real : dir;
    for (int c = 0; c < OSSC_SESSION_CANDIDATES; c++) {
        if (shared[0])
            snprintf(path, sizeof(path), "%s", shared);
        else
            ossc_session_name(path, sizeof(path), OSSC_SESSION_ROOT, (unsigned)geteuid(),
                              OSSC_SESSION_PRIVATE, key, c);
        /* Readers fail with EIO (the owner's lock is gone); the session goes once they do. */
        while (ossc_session_reap(path, 0) == 0)
            sleep(REAP_POLL_SEC);
        if (shared[0])
            break;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *url = NULL, *dir = NULL, *prog = "ossc-owner";
    const char *sets[MAX_SETTINGS];
    size_t n_sets = 0;
    for (int i = 1; i < argc; i++) {
        const char *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (!value)
            return usage(prog);
        if (strcmp(argv[i], "--oss-path") == 0)
            url = value;
        else if (strcmp(argv[i], "--model-dir") == 0)
            dir = value;
        else if (strcmp(argv[i], "--prog") == 0)
            prog = value;
        else if (strcmp(argv[i], "--set") == 0 && n_sets < MAX_SETTINGS)
            sets[n_sets++] = value;
        else
            return usage(prog);
        i++;
    }
    if (!url || !dir)
        return usage(prog);

    int report[2];
    char *shared = mmap(NULL, OSSC_SESSION_PATH_MAX, PROT_READ | PROT_WRITE,
                        MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared == MAP_FAILED || pipe2(report, O_CLOEXEC) != 0) {
        fprintf(stderr, "%s: cannot start the session owner: %s\n", prog, strerror(errno));
        return ossc_exit_code(OSSC_E_IO);
    }
    shared[0] = '\0';
    pid_t guardian = fork();
    if (guardian < 0) {
        fprintf(stderr, "%s: cannot start the session owner: %s\n", prog, strerror(errno));
        return ossc_exit_code(OSSC_E_IO);
    }
    if (guardian > 0) {
        guardian_group = guardian;
        set_handlers(forward_stop);
        close(report[1]);
        status_record st;
        ssize_t n;
        while ((n = read(report[0], &st, sizeof(st))) < 0 && errno == EINTR)
            ;
        waitpid(guardian, NULL, WNOHANG);
        if (stop_signal)
            return 128 + stop_signal; /* whoever sent it reports it */
        if (n != (ssize_t)sizeof(st)) {
            fprintf(stderr, "%s: the session owner for %s died while starting\n", prog, dir);
            return ossc_exit_code(OSSC_E_IO);
        }
        if (st.code) {
            st.message[sizeof(st.message) - 1] = '\0';
            fprintf(stderr, "%s: %s\n", prog, st.message);
        }
        return ossc_exit_code(st.code);
    }
    /* Detached: its own session, no terminal, no hold on the application's cwd or pipes. */
    close(report[0]);
    setsid();
    set_handlers(SIG_IGN);
    if (chdir("/") != 0)
        return 1;
    to_devnull(0);
    to_devnull(1);
    pid_t owner = fork();
    if (owner == 0) {
        set_handlers(SIG_DFL); /* a stop while starting ends it; the guardian cleans up */
        _exit(run_owner(url, dir, sets, n_sets, report[1], shared));
    }
    close(report[1]);
    to_devnull(2);
    if (owner < 0)
        return 1;
    return guard(owner, shared, dir);
}
