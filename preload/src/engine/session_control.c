/* session_control.c: the control file and the data files of a session's owner: publishing
 * them (header, object table, ready bits, names; data files sized to their objects, in the
 * session directory or cacheDir; then the placeholders), and what a landed or failed chunk
 * changes in them (its ready bit, the object's error, the progress futex readers wait on). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "session.h"

long session_futex(uint32_t *word, int op, uint32_t val, const struct timespec *ts)
{
    return syscall(SYS_futex, word, op, val, ts, NULL, 0);
}

ossc_session_object *session_objects(ossc_session_header *h)
{
    return (ossc_session_object *)((char *)h + h->objects_offset);
}

uint64_t *session_bits(ossc_session_header *h)
{
    return (uint64_t *)((char *)h + h->bits_offset);
}

void session_wake_readers(ossc_session_header *h)
{
    atomic_fetch_add((_Atomic uint32_t *)&h->progress, 1);
    session_futex(&h->progress, FUTEX_WAKE, INT32_MAX, NULL);
}

void session_set_state(ossc_session_header *h, uint32_t state)
{
    atomic_store((_Atomic uint32_t *)&h->state, state);
    session_wake_readers(h);
}

void session_object_failed(ossc_session_header *h, ossc_session_object *o, int e)
{
    if (!atomic_exchange((_Atomic int32_t *)&o->error, e))
        atomic_fetch_add((_Atomic uint32_t *)&h->objects_failed, 1); /* once per object */
}

void session_chunk_landed(ossc_session *s, uint32_t object, uint64_t offset, uint64_t length,
                         int status)
{
    ossc_session_header *h = s->hdr;
    ossc_session_object *o = &session_objects(h)[object];
    if (status == 0) {
        uint32_t chunk = o->first_chunk + (uint32_t)(offset / h->chunk_size);
        uint64_t bit = 1ULL << (chunk % 64);
        /* Counted once: with verifyBeforeRead=no a CRC mismatch lands the chunks again. */
        if (!(atomic_fetch_or((_Atomic uint64_t *)&session_bits(h)[chunk / 64], bit) & bit)) {
            atomic_fetch_add((_Atomic uint32_t *)&o->chunks_ready, 1);
            atomic_fetch_add((_Atomic uint64_t *)&h->bytes_done, length);
        }
        atomic_store((_Atomic int32_t *)&h->current_object, (int32_t)object);
    } else {
        int e = status == OSSC_E_AUTH ? EACCES : status == OSSC_E_NOT_FOUND ? ENOENT : EIO;
        session_object_failed(h, o, e);
    }
    session_wake_readers(h);
}

void session_data_path(const ossc_session *s, size_t object, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/%zu", s->data_dir, object);
}

int session_create_data_file(const ossc_session *s, size_t object, uint64_t size)
{
    char path[OSSC_DATA_PATH_MAX];
    session_data_path(s, object, path, sizeof(path));
    /* O_EXCL: a file still there belongs to readers and is never truncated. */
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd >= 0 && (session_file_share(fd, s->group) != 0 || ftruncate(fd, (off_t)size) != 0)) {
        int e = errno;
        close(fd);
        unlink(path);
        errno = e;
        return -1;
    }
    return fd;
}

/* Why cacheDir may not hold data files: someone else could rename or replace what we put
 * there. It must be this uid's or root's, and writable by others only if sticky (/tmp). */
static const char *cache_dir_unsafe(const char *cache)
{
    struct stat st;
    if (stat(cache, &st) != 0 || !S_ISDIR(st.st_mode))
        return "it is not a directory";
    if (st.st_uid != geteuid() && st.st_uid != 0)
        return "another user owns it";
    if ((st.st_mode & 022) && !(st.st_mode & S_ISVTX))
        return "other users can write it (and it is not sticky)";
    return NULL;
}

/* Where the data files go: the session directory, or cacheDir (a directory of ours there,
 * checked like the session's, under a name nobody can guess and plant). The owner's pid in
 * the name keeps a dead owner's readers, which still hold its control file, from ever finding
 * a later owner's files. */
static int make_data_dir(ossc_session *s, ossc_error *err)
{
    const char *cache = s->client->s.cache_dir;
    if (*cache) {
        int rc = materialize_dirs(-1, cache, err);
        if (rc)
            return rc;
        const char *why = cache_dir_unsafe(cache);
        if (why) {
            err_set(err, OSSC_E_CONFIG, "cacheDir %s: %s; refusing to keep the model there",
                    cache, why);
            return OSSC_E_CONFIG;
        }
        uint64_t nonce = 0;
        if (getrandom(&nonce, sizeof(nonce), 0) != (ssize_t)sizeof(nonce))
            nonce = now_ms() ^ ((uint64_t)getpid() << 32);
        snprintf(s->data_dir, sizeof(s->data_dir),
                 "%s/" OSSC_SESSION_PREFIX "%u-%016llx-%d-%016llx", cache, (unsigned)geteuid(),
                 (unsigned long long)ossc_session_hash(s->model_dir), (int)getpid(),
                 (unsigned long long)nonce);
    } else {
        snprintf(s->data_dir, sizeof(s->data_dir), "%s/data.%d", s->path, (int)getpid());
    }
    const char *why;
    int fd = session_dir_open(s->data_dir, true, s->group, &why);
    if (fd < 0) {
        err_set(err, OSSC_E_IO, "cannot use %s for the data files: %s", s->data_dir,
                why ? why : strerror(errno));
        return OSSC_E_IO;
    }
    close(fd);
    return 0;
}

int session_publish(ossc_session *s, const size_t *large, size_t n, ossc_error *err)
{
    const uint64_t chunk = s->client->s.chunk_size;
    size_t names = 0;
    uint32_t n_chunks = 0;
    uint64_t bytes = 0;
    const char *prefix = ossc_client_prefix(s->client);
    for (size_t i = 0; i < n; i++) {
        const ossc_object *o = &s->listing->objects[large[i]];
        names += strlen(o->key) + 1;
        n_chunks += (uint32_t)((o->size + chunk - 1) / chunk);
        bytes += o->size;
    }
    size_t objects_off = (sizeof(ossc_session_header) + 63) & ~(size_t)63;
    size_t bits_off = objects_off + n * sizeof(ossc_session_object);
    size_t names_off = bits_off + ((n_chunks + 63) / 64) * 8;
    s->control_size = names_off + names;

    int rc = make_data_dir(s, err);
    if (rc)
        return rc;
    unlinkat(s->dir_fd, "control.new", 0);
    int fd = session_file_open(s->dir_fd, "control.new", O_RDWR | O_CREAT | O_EXCL, s->group);
    if (fd < 0 || ftruncate(fd, (off_t)s->control_size) != 0 || flock(fd, LOCK_EX) != 0) {
        err_set(err, OSSC_E_IO, "cannot create the control file in %s: %s", s->path,
                strerror(errno));
        if (fd >= 0)
            close(fd);
        return OSSC_E_IO;
    }
    s->control_fd = fd;
    void *map = mmap(NULL, s->control_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        err_set(err, OSSC_E_IO, "cannot map the control file: %s", strerror(errno));
        return OSSC_E_IO;
    }
    ossc_session_header *h = s->hdr = map;
    h->magic = OSSC_SESSION_MAGIC;
    h->version = OSSC_SESSION_VERSION;
    h->header_size = sizeof(*h);
    h->state = OSSC_SESSION_FETCHING;
    h->owner_pid = (uint32_t)getpid();
    h->n_objects = (uint32_t)n;
    h->n_chunks = n_chunks;
    h->chunk_size = chunk;
    h->objects_offset = objects_off;
    h->bits_offset = bits_off;
    h->names_offset = names_off;
    h->control_size = s->control_size;
    h->read_timeout_ms = (uint32_t)s->client->s.read_timeout_sec * 1000;
    h->heartbeat_ms = h->last_open_ms = now_ms();
    h->log_level = (uint32_t)s->client->s.log_level;
    h->expire_time_sec = (uint32_t)s->client->s.expire_time_sec;
    h->bytes_total = bytes;
    h->started_unix = (uint64_t)time(NULL);
    h->current_object = -1;
    h->fetch_policy = (uint32_t)s->client->s.fetch_policy;
    h->cache_limit = s->cache_limit;
    snprintf(h->model_dir, sizeof(h->model_dir), "%s", s->model_dir);
    snprintf(h->log_path, sizeof(h->log_path), "%s", s->client->s.log_path);
    snprintf(h->audit_path, sizeof(h->audit_path), "%s", s->client->s.audit_path);
    snprintf(h->data_dir, sizeof(h->data_dir), "%s", s->data_dir);
    snprintf(h->oss_path, sizeof(h->oss_path), "%s", s->url);

    ossc_session_object *objs = session_objects(h);
    char *name_area = (char *)h + names_off;
    size_t name_pos = 0;
    uint32_t next_chunk = 0;
    for (size_t i = 0; i < n; i++) {
        const ossc_object *o = &s->listing->objects[large[i]];
        const char *rel;
        ossc_relative_name(o->key, prefix, &rel, err);
        size_t len = strlen(rel);
        memcpy(name_area + name_pos, rel, len + 1);
        objs[i] = (ossc_session_object){o->size, next_chunk,
                                        (uint32_t)((o->size + chunk - 1) / chunk),
                                        (uint32_t)name_pos, (uint32_t)len, 0, 0, 0};
        next_chunk += objs[i].n_chunks;
        name_pos += len + 1;
        /* Past the prefetched prefix, no data file until a process asks for the object. */
        int dfd = i < s->n_eager ? session_create_data_file(s, i, o->size) : -1;
        if (i < s->n_eager && dfd < 0) {
            err_set(err, OSSC_E_IO, "cannot create a data file in %s: %s", s->data_dir,
                    strerror(errno));
            return OSSC_E_IO;
        }
        s->data_fds[s->n_data++] = dfd;
    }
    /* Readers see the control file only once it is whole. */
    if (renameat(s->dir_fd, "control.new", s->dir_fd, "control") != 0) {
        err_set(err, OSSC_E_IO, "cannot publish the control file in %s: %s", s->path,
                strerror(errno));
        return OSSC_E_IO;
    }
    /* Only now the size-correct placeholders: whoever finds one also finds the session, so
     * no process reads a placeholder's holes as if they were the object. */
    for (size_t i = 0; i < n; i++) {
        char path[OSSC_MODEL_DIR_MAX + OSSC_DATA_PATH_MAX];
        snprintf(path, sizeof(path), "%s/%s", s->model_dir, name_area + objs[i].name_offset);
        int pfd = materialize_file(s->manifest_fd, path, err);
        /* Only the owner may open a placeholder: any other process gets EACCES, never its
         * holes (the shim serves the data file in its place, and a stat needs no access). */
        if (pfd < 0 || ftruncate(pfd, (off_t)objs[i].size) != 0 || fchmod(pfd, 0600) != 0) {
            err_set(err, OSSC_E_IO, "cannot create placeholder %s: %s", path, strerror(errno));
            if (pfd >= 0)
                close(pfd);
            return OSSC_E_IO;
        }
        close(pfd);
    }
    return 0;
}
