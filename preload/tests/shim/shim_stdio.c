/* shim_stdio.c: fopen, fopen64, freopen, freopen64. stdio reads inside libc, past every hook,
 * so a stream of a large object is handed out once the whole object is present: the call
 * waits chunk by chunk, fails with the object's errno, refuses w/a/+ modes with EROFS, and
 * forgets its fd (fclose closes it inside libc). Elsewhere they are the real call. */
#include <fcntl.h>
#include <unistd.h>

#include "fixture.h"

#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/lsan_interface.h>
#endif

typedef FILE *(*opener)(const char *path, const char *mode, FILE *stream);

static FILE *by_fopen(const char *p, const char *m, FILE *s) { (void)s; return fopen(p, m); }
static FILE *by_fopen64(const char *p, const char *m, FILE *s) { (void)s; return fopen64(p, m); }
static FILE *by_freopen(const char *p, const char *m, FILE *s) { return freopen(p, m, s); }
static FILE *by_freopen64(const char *p, const char *m, FILE *s) { return freopen64(p, m, s); }

/* c->ctx the opener, c->path, c->ptr the stream for freopen and then the result; c->flags
 * for mode "re" (O_CLOEXEC) rather than "r". */
static long call_open(fx_call *c)
{
    opener o = (opener)(uintptr_t)c->ctx;
    c->ptr = o(c->path, c->flags ? "re" : "r", c->ptr);
    return c->ptr ? 0 : -1;
}

/* A stream to reopen: on the outside file. NULL for fopen. */
static FILE *stream_for(opener o)
{
    FILE *f = o == by_freopen || o == by_freopen64 ? fopen(fx_outside(), "r") : NULL;
#ifdef __SANITIZE_ADDRESS__
    if (f) /* glibc's failed freopen closes the stream and unlinks it, but keeps it */
        __lsan_ignore_object(f);
#endif
    return f;
}

/* Whether f reads object k, whole. */
static bool reads_object(FILE *f, int k)
{
    static unsigned char buf[5 * FX_CHUNK];
    size_t n = fread(buf, 1, sizeof(buf), f);
    return n == fx_size(k) && fx_bytes(k, 0, buf, n);
}

static void check_opener(opener o, int error)
{
    /* Waits for every chunk of the object, the first missing one asked for first. */
    fx_reset();
    fx_land(0, 1);
    fx_call c = {.fn = call_open, .ctx = (const void *)(uintptr_t)o, .path = fx_path(0),
                 .ptr = stream_for(o), .flags = 1};
    fx_start(&c);
    CHECK(fx_asks(&c, 0, 0));
    fx_land(0, 0);
    CHECK(fx_asks(&c, 0, 2));
    fx_land(0, 2);
    CHECK(fx_asks(&c, 0, 3));
    fx_land(0, 3);
    CHECK(fx_finish(&c) == 0);
    FILE *f = c.ptr;
    CHECK(f && reads_object(f, 0));
    int fd = f ? fileno(f) : -1;
    CHECK(fx_same_file(fx_id_of_fd(fd), fx_id_of_path(fx_data_path(0))));
    CHECK(fcntl(fd, F_GETFD) & FD_CLOEXEC); /* "re" */
    if (f)
        fclose(f);
    /* Its fd was forgotten: the next file to get that number is not taken for the object's. */
    fx_release(0);
    int other = open(fx_outside(), O_RDONLY);
    CHECK(other == fd);
    CHECK(fx_reads_outside(other));
    close(other);

    /* A complete object: at once, and the stream reads it whole. */
    fx_reset();
    fx_land_all(1);
    uint32_t w = fx_wanted();
    f = o(fx_path(1), "rb", stream_for(o));
    CHECK(f && reads_object(f, 1));
    CHECK(f && !(fcntl(fileno(f), F_GETFD) & FD_CLOEXEC));
    CHECK(fx_wanted() == w);
    if (f)
        fclose(f);

    /* An object that cannot be fetched: NULL with its errno, while waiting or at once. */
    fx_reset();
    c = (fx_call){.fn = call_open, .ctx = (const void *)(uintptr_t)o, .path = fx_path(1),
                  .ptr = stream_for(o)};
    fx_start(&c);
    CHECK(fx_asks(&c, 1, 0));
    fx_land(1, 0);
    CHECK(fx_asks(&c, 1, 1));
    fx_fail(1, error);
    CHECK(fx_finish(&c) == -1 && errno == error);
    CHECK(c.ptr == NULL);
    errno = 0; /* failed before: one request for a new fetch, unanswered here */
    fx_expect_waits(true);
    CHECK(o(fx_path(1), "r", stream_for(o)) == NULL && errno == error);
    fx_expect_waits(false);

    /* Writing modes: EROFS, without a wait or a request. */
    fx_reset();
    static const char *const writing[] = {"w", "a", "r+", "w+", "a+", "rb+"};
    w = fx_wanted();
    for (size_t i = 0; i < sizeof(writing) / sizeof(writing[0]); i++) {
        errno = 0;
        CHECK(o(fx_path(0), writing[i], stream_for(o)) == NULL && errno == EROFS);
    }
    CHECK(fx_wanted() == w);
    CHECK(fx_id_of_path(fx_data_path(0)).size == fx_size(0));

    /* Outside MODEL_DIR and small files in it: the real call, writing modes included. */
    f = o(fx_outside(), "r", stream_for(o));
    unsigned char out[100];
    CHECK(f && fread(out, 1, sizeof(out), f) == sizeof(out));
    CHECK(fx_bytes(FX_OUTSIDE_KEY, 0, out, sizeof(out)));
    if (f)
        fclose(f);
    f = o(fx_small(), "r+", stream_for(o));
    char text[256] = "";
    CHECK(f && fgets(text, sizeof(text), f) && strcmp(text, FX_SMALL_TEXT) == 0);
    if (f)
        fclose(f);
    char path[4200];
    snprintf(path, sizeof(path), "%s/written-by-the-test", fx_model_dir());
    f = o(path, "w", stream_for(o));
    CHECK(f && fputs("x", f) >= 0);
    if (f)
        fclose(f);
    CHECK(unlink(path) == 0);
    snprintf(path, sizeof(path), "%s/no-such-file", fx_model_dir());
    errno = 0;
    CHECK(o(path, "r", stream_for(o)) == NULL && errno == ENOENT);
    CHECK(fx_wanted() == w);
}

SHIM_TEST(fopen) { check_opener(by_fopen, EACCES); }
SHIM_TEST(fopen64) { check_opener(by_fopen64, ENOENT); }
SHIM_TEST(freopen) { check_opener(by_freopen, EIO); }
SHIM_TEST(freopen64) { check_opener(by_freopen64, EACCES); }

/* Whether stream's fd (fd) was closed by a failed freopen, which returned NULL with e. */
static bool failed_closed(FILE *got, int fd, int e)
{
    int got_errno = errno;
    bool closed = fcntl(fd, F_GETFD) == -1 && errno == EBADF;
    if (!closed)
        fprintf(stderr, "  the stream's fd %d is still open after the failed freopen\n", fd);
    return got == NULL && got_errno == e && closed;
}

/* freopen that fails closes the stream (POSIX; glibc's does), ours as much as the real one:
 * writing modes (EROFS), an object that cannot be fetched (its errno). And the stream's old
 * fd, closed inside libc, is forgotten: its number names the new file. */
SHIM_TEST(freopen_closes)
{
    FILE *stream = stream_for(by_freopen);
    int fd = fileno(stream);
    errno = 0;
    CHECK(failed_closed(freopen(fx_path(0), "r+", stream), fd, EROFS));
    fx_fail(1, EACCES);
    stream = stream_for(by_freopen);
    fd = fileno(stream);
    errno = 0;
    fx_expect_waits(true); /* it asks once for a new fetch, unanswered here */
    CHECK(failed_closed(freopen(fx_path(1), "r", stream), fd, EACCES));
    fx_expect_waits(false);

    fd = open(fx_path(0), O_RDONLY); /* ours, object 0 missing */
    stream = fdopen(fd, "r");
    FILE *f = stream ? freopen(fx_outside(), "r", stream) : NULL;
    CHECK(f != NULL);
    if (f) {
        CHECK(fx_reads_outside(fileno(f)));
        fclose(f);
    }
}

int main(int argc, char **argv) { return fx_main(argc, argv); }
