/* shim_process.c: fork and exec. A forked child reads through an fd it inherited, or opens
 * the object itself, and waits like its parent would; a program exec'd with MODEL_DIR opens
 * the object through its own shim (attaching to the session itself) and waits too, also with
 * MODEL_DIR spelled through a symbolic link; with OSSC_DISABLE=1 it reads the placeholder and
 * asks for nothing. The exec'd program is this one, run as "--child ...". */
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fixture.h"

/* ---- the child's side ---- */

/* --child read K OFF LEN: object K's bytes [OFF, OFF+LEN) through open and pread. Exits 0
 * when they are right, 1 when not, 2 when a call failed. */
static int child_read(int k, uint64_t off, size_t len)
{
    static unsigned char buf[5 * FX_CHUNK];
    int fd = open(fx_path(k), O_RDONLY);
    ssize_t n = fd >= 0 ? pread(fd, buf, len, (off_t)off) : -1;
    if (n < 0) {
        fprintf(stderr, "  child: %s: %s\n", fx_path(k), strerror(errno));
        return 2;
    }
    close(fd);
    return n == (ssize_t)len && fx_bytes(k, off, buf, len) ? 0 : 1;
}

/* --child placeholder K INO: with the shim disabled, the path is the placeholder (inode
 * INO), which reads as zeros. */
static int child_placeholder(int k, unsigned long long ino)
{
    unsigned char buf[100];
    struct stat st;
    int fd = open(fx_path(k), O_RDONLY);
    bool ok = fd >= 0 && fstat(fd, &st) == 0 && st.st_ino == ino &&
              pread(fd, buf, sizeof(buf), 0) == (ssize_t)sizeof(buf) && fx_zeros(buf, 100) &&
              stat(fx_path(k), &st) == 0 && st.st_ino == ino;
    if (fd >= 0)
        close(fd);
    return ok ? 0 : 1;
}

static int child(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[2], "quiet") == 0)
        return 0; /* what the shim did before main is all there is to see */
    fx_paths_init();
    if (argc == 6 && strcmp(argv[2], "read") == 0)
        return child_read(atoi(argv[3]), strtoull(argv[4], NULL, 10), strtoul(argv[5], NULL, 10));
    if (argc == 5 && strcmp(argv[2], "placeholder") == 0)
        return child_placeholder(atoi(argv[3]), strtoull(argv[4], NULL, 10));
    fprintf(stderr, "unknown child: %s\n", argc > 2 ? argv[2] : "");
    return 2;
}

/* ---- the parent's side ---- */

/* A child process; one that may ask for chunks is expected to (fx_expect_waits). */
static pid_t start_child(bool may_wait)
{
    if (may_wait)
        fx_expect_waits(true);
    return fork();
}

/* The child's exit code, 128 + signal when killed; after killing it if it is stuck. */
static int reap(pid_t pid, bool stuck, bool may_wait)
{
    int status;
    if (stuck)
        kill(pid, SIGKILL);
    pid_t r = waitpid(pid, &status, 0);
    if (may_wait)
        fx_expect_waits(false);
    if (r != pid)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* This program again as "--child WHAT A B C" in a child process, with env (NAME=VALUE) set. */
static pid_t exec_child(bool may_wait, const char *env, const char *what, const char *a,
                        const char *b, const char *c)
{
    pid_t pid = start_child(may_wait);
    if (pid == 0) {
        if (env)
            putenv((char *)env);
        execl("/proc/self/exe", "shim_process", "--child", what, a, b, c, (char *)NULL);
        _exit(127);
    }
    return pid;
}

SHIM_TEST(fork)
{
    /* Through an fd opened before the fork. */
    int fd = open(fx_path(0), O_RDONLY);
    uint32_t seen = fx_wanted();
    pid_t pid = start_child(true);
    if (pid == 0) {
        static unsigned char buf[FX_CHUNK];
        ssize_t n = pread(fd, buf, 100, FX_CHUNK + 50);
        _exit(n == 100 && fx_bytes(0, FX_CHUNK + 50, buf, 100) ? 0 : 1);
    }
    bool asked = fx_child_asks(pid, &seen, 0, 1);
    CHECK(asked);
    fx_land(0, 1);
    CHECK(reap(pid, !asked, true) == 0);
    /* The fd table came along: a duplicate made in the child waits too. */
    seen = fx_wanted();
    pid = start_child(true);
    if (pid == 0) {
        static unsigned char buf[FX_CHUNK];
        int copy = dup(fd);
        close(fd);
        ssize_t n = pread(copy, buf, 10, 2 * FX_CHUNK);
        _exit(n == 10 && fx_bytes(0, 2 * FX_CHUNK, buf, 10) ? 0 : 1);
    }
    asked = fx_child_asks(pid, &seen, 0, 2);
    CHECK(asked);
    fx_land(0, 2);
    CHECK(reap(pid, !asked, true) == 0);
    close(fd);

    /* An open in the child, through the session its parent attached. */
    seen = fx_wanted();
    pid = start_child(true);
    if (pid == 0) {
        static unsigned char buf[FX_CHUNK];
        int own = open(fx_path(1), O_RDONLY);
        ssize_t n = own >= 0 ? pread(own, buf, 10, FX_CHUNK) : -1;
        _exit(n == 10 && fx_bytes(1, FX_CHUNK, buf, 10) ? 0 : 1);
    }
    asked = fx_child_asks(pid, &seen, 1, 1);
    CHECK(asked);
    fx_land(1, 1);
    CHECK(reap(pid, !asked, true) == 0);

    /* An object that fails: the child gets its errno. */
    fd = open(fx_path(2), O_RDONLY);
    seen = fx_wanted();
    pid = start_child(true);
    if (pid == 0) {
        unsigned char buf[10];
        _exit(pread(fd, buf, 10, 0) == -1 && errno == EACCES ? 0 : 1);
    }
    asked = fx_child_asks(pid, &seen, 2, 0);
    CHECK(asked);
    fx_fail(2, EACCES);
    CHECK(reap(pid, !asked, true) == 0);
    close(fd);
}

SHIM_TEST(exec)
{
    /* A program that opens the object itself, through its own shim. */
    char off[32], len[32];
    snprintf(off, sizeof(off), "%u", FX_CHUNK + 1);
    snprintf(len, sizeof(len), "%u", FX_CHUNK);
    uint32_t seen = fx_wanted();
    pid_t pid = exec_child(true, NULL, "read", "0", off, len);
    bool asked = fx_child_asks(pid, &seen, 0, 1);
    CHECK(asked);
    fx_land(0, 1);
    if (asked)
        CHECK(fx_child_asks(pid, &seen, 0, 2));
    fx_land(0, 2);
    CHECK(reap(pid, !asked, true) == 0);

    /* MODEL_DIR spelled through a symbolic link: the same session, the same waits. */
    char alias[4200], env[4300];
    snprintf(alias, sizeof(alias), "%s/alias", fx_base());
    CHECK(symlink(fx_model_dir(), alias) == 0);
    snprintf(env, sizeof(env), "MODEL_DIR=%s", alias);
    seen = fx_wanted();
    pid = exec_child(true, env, "read", "1", "0", "8192");
    asked = fx_child_asks(pid, &seen, 1, 0);
    CHECK(asked);
    fx_land(1, 0);
    fx_land(1, 1);
    CHECK(reap(pid, !asked, true) == 0);
    unlink(alias);

    /* A present range: at once. */
    CHECK(reap(exec_child(false, NULL, "read", "1", "100", "200"), false, false) == 0);
}

SHIM_TEST(disable)
{
    /* OSSC_DISABLE=1: a pure pass-through, the placeholder's zeros, no request. */
    char ino[32];
    snprintf(ino, sizeof(ino), "%llu", fx_placeholder(0).ino);
    uint32_t w = fx_wanted();
    CHECK(reap(exec_child(false, "OSSC_DISABLE=1", "placeholder", "0", ino, NULL), false, false) ==
          0);
    CHECK(fx_wanted() == w);
}

/* The lines of a file that contain needle, with fd 2 of `run` going to that file. */
static int stderr_lines(void (*run)(void), const char *needle)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/stderr.txt", fx_base());
    int out = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600), saved = dup(2);
    CHECK(out >= 0 && saved >= 0 && dup2(out, 2) == 2);
    run();
    CHECK(dup2(saved, 2) == 2);
    close(saved);
    close(out);
    return fx_log_count(path, needle);
}

static void exec_quiet_child(void) /* a log path through a planted link, a line to log */
{
    char env[4300];
    snprintf(env, sizeof(env), "OSSC_LOG_PATH=%s/planted.log", fx_base());
    pid_t pid = fork();
    if (pid == 0) {
        putenv(env);
        putenv("MODEL_DIR=not-absolute"); /* a WARN at init */
        execl("/proc/self/exe", "shim_process", "--child", "quiet", (char *)NULL);
        _exit(127);
    }
    CHECK(reap(pid, false, false) == 0);
}

static void close_an_object(void) /* its audit line */
{
    int fd = open(fx_path(0), O_RDONLY);
    CHECK(fd >= 0 && close(fd) == 0);
}

/* The shim's own logs (OSSC_LOG_PATH, the session's logPath, the audit) are files of this
 * user's only, and never written through a symbolic link planted at their path: the target
 * stays untouched, one line on stderr says so, and the program goes on without that log. */
SHIM_TEST(log_nofollow)
{
    CHECK((fx_id_of_path(fx_shim_log()).mode & 0777) == 0600);

    char link[4200], target[4200], line[4400];
    snprintf(link, sizeof(link), "%s/planted.log", fx_base());
    snprintf(target, sizeof(target), "%s/target.log", fx_base());
    CHECK(symlink(target, link) == 0);
    snprintf(line, sizeof(line), "cannot open log file %s: it is a symbolic link", link);
    CHECK(stderr_lines(exec_quiet_child, line) == 1);
    CHECK(fx_id_of_path(target).ino == 0); /* not created */
    unlink(link);

    /* The audit log, opened at the first close of an object's fd. */
    FILE *f = fopen(target, "w");
    CHECK(f && fputs("untouched\n", f) >= 0);
    if (f)
        fclose(f);
    CHECK(symlink(target, fx_audit_log()) == 0);
    snprintf(line, sizeof(line), "cannot open log file %s: it is a symbolic link", fx_audit_log());
    CHECK(stderr_lines(close_an_object, line) == 1);
    CHECK(fx_log_count(target, "") == 1 && fx_log_count(target, "untouched") == 1);
    unlink(fx_audit_log());
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--child") == 0)
        return child(argc, argv);
    return fx_main(argc, argv);
}
