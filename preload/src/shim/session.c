/* session.c: the shim's view of the session: attach to the control file, find objects by
 * path, open their data files, and wait for ranges (futex on the header's progress word). */
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "session_check.h"
#include "shim.h"

#if !__GLIBC_PREREQ(2, 32)
/* glibc 2.31 (Debian 11) has no strerrorname_np: the names a failed fetch may carry. */
static const char *strerrorname_np(int e) {
    switch (e) {
    case EIO: return "EIO";
    case ENOENT: return "ENOENT";
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    case ETIMEDOUT: return "ETIMEDOUT";
    case ECONNREFUSED: return "ECONNREFUSED";
    case ENOSPC: return "ENOSPC";
    case ENOMEM: return "ENOMEM";
    case EINVAL: return "EINVAL";
    default: return NULL;
    }
}
#endif

#define OWNER_SILENCE_MS 3000 /* a heartbeat older than this: check whether the owner lives */
#define POLL_MS 100
#define REASK_MS 500

static ossc_session_header *hdr; /* NULL until attached */
static pthread_mutex_t attach_lock = PTHREAD_MUTEX_INITIALIZER;
static uint32_t *slots;          /* open-addressing hash of object names: index + 1 */
static uint32_t n_slots;
static int control_fd = -1;      /* our own open of the control file: its lock tells */
static int users_fd = -1;        /* holds LOCK_SH on the users file while we are attached */
static char session_path[OSSC_SESSION_PATH_MAX];
static bool read_only;           /* another uid's session, shared with our sharedGroup */

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint32_t hash(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static ossc_session_object *objects(void)
{
    return (ossc_session_object *)((char *)hdr + hdr->objects_offset);
}

static const char *name_of(const ossc_session_object *o)
{
    return (const char *)hdr + hdr->names_offset + o->name_offset;
}

/* Whether fd is what this uid made for itself (a file or directory of ours that nobody else
 * can open), or what a member of OSSC_SHARED_GROUP shared with it (ossc_session_access).
 * Anything else in a session's place was planted, and is never used. */
static const char *not_ours(int fd, bool dir, uid_t *uid)
{
    struct stat st;
    if (fstat(fd, &st) != 0 || (dir ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode)))
        return dir ? "it is not a directory" : "it is not a regular file";
    *uid = st.st_uid;
    return ossc_session_access(st.st_uid, st.st_gid, st.st_mode, geteuid(), shim.group);
}

static int open_ours(int dirfd, const char *name, int flags, bool dir, const char *shown,
                     uid_t *uid)
{
    int fd = real_openat(dirfd, name, flags | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ELOOP || errno == ENOTDIR)
            shim_log("WARN", "ignoring %s: it is a symbolic link or not a directory", shown);
        return -1;
    }
    const char *why = not_ours(fd, dir, uid);
    if (why) {
        shim_log("WARN", "ignoring %s: %s", shown, why);
        real_close(fd);
        return -1;
    }
    return fd;
}

/* Attaches to the session in dir: holds its users file (LOCK_SH: the owner ends the session
 * only once nobody does) and maps its control file after checking it. 1 attached, 0 no
 * session here (or it ended), -1 not ours: try the next name. */
static int attach_dir(const char *dir, const char *real)
{
    uid_t owner, uid;
    int dfd = open_ours(AT_FDCWD, dir, O_RDONLY | O_DIRECTORY, true, dir, &owner);
    if (dfd < 0)
        return errno == ENOENT ? 0 : -1;
    /* Another member's shared session: read, never written (no wanted chunk, no expiry). */
    bool foreign = owner != geteuid();
    int ufd = open_ours(dfd, "users", O_RDONLY, false, dir, &uid);
    int cfd = ufd >= 0 ? open_ours(dfd, "control", foreign ? O_RDONLY : O_RDWR, false, dir, &uid)
                       : -1;
    struct stat st, now, users;
    ossc_session_header *h = MAP_FAILED;
    int rc = 0;
    /* Blocks while an owner is ending the session, which it then marks ended. */
    if (cfd >= 0 && flock(ufd, LOCK_SH) == 0 && fstat(cfd, &st) == 0 && st.st_size > 0)
        h = real_mmap(NULL, (size_t)st.st_size, foreign ? PROT_READ : PROT_READ | PROT_WRITE,
                      MAP_SHARED, cfd, 0);
    if (h != MAP_FAILED) {
        const char *bad = ossc_session_check(h, (uint64_t)st.st_size);
        if (bad)
            shim_log("WARN", "ignoring the session in %s: %s", dir, bad);
        else if (strcmp(h->model_dir, real) != 0)
            rc = -1; /* another MODEL_DIR's, by a hash collision */
        else if (__atomic_load_n(&h->state, __ATOMIC_ACQUIRE) != OSSC_SESSION_ENDED &&
                 real_fstatat(dfd, "users", &now, AT_SYMLINK_NOFOLLOW) == 0 &&
                 fstat(ufd, &users) == 0 && now.st_ino == users.st_ino)
            rc = 1; /* and the users file is still this session's */
    }
    if (rc == 1) {
        hdr = h;
        control_fd = cfd;
        users_fd = ufd;
        read_only = foreign;
        snprintf(session_path, sizeof(session_path), "%s", dir);
    } else {
        if (h != MAP_FAILED)
            munmap(h, (size_t)st.st_size);
        if (cfd >= 0)
            real_close(cfd);
        if (ufd >= 0)
            real_close(ufd);
    }
    real_close(dfd);
    return rc;
}

/* Placeholder identities, for a file reached by a spelling the path lookup does not take
 * (a symbolic link into MODEL_DIR, "..", a relative path, a hard link): object i's
 * placeholder as stat(2) saw it, and an open-addressing hash of their inode numbers (index
 * + 1), n_slots long like the names'. A placeholder not there yet when we attached (the
 * owner publishes the control file first) is looked for again when a sparse file misses. */
typedef struct placeholder_id {
    uint64_t dev, ino; /* ino 0: not found yet */
    _Atomic uint64_t data_ino; /* the data file we last opened for the object (0: none) */
} placeholder_id;
static _Atomic uint64_t data_dev; /* the data files' device, once one was opened */
static placeholder_id *ids;
static uint32_t *id_slots;
static bool ids_missing; /* some placeholder was not found; under attach_lock */

static uint32_t ino_hash(uint64_t ino) { return hash((const char *)&ino, sizeof(ino)); }

/* Finds the placeholders not found yet; with attach_lock held. */
static void find_placeholders(void)
{
    ids_missing = false;
    for (uint32_t i = 0; i < hdr->n_objects; i++) {
        if (ids[i].ino)
            continue;
        char path[PATH_MAX];
        struct stat st;
        const ossc_session_object *o = &objects()[i];
        int n = snprintf(path, sizeof(path), "%s/%.*s", hdr->model_dir, (int)o->name_len,
                         name_of(o));
        if (n < 0 || (size_t)n >= sizeof(path) ||
            real_fstatat(AT_FDCWD, path, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) {
            ids_missing = true;
            continue;
        }
        ids[i].dev = (uint64_t)st.st_dev;
        __atomic_store_n(&ids[i].ino, (uint64_t)st.st_ino, __ATOMIC_RELEASE);
        uint32_t k = ino_hash(st.st_ino) & (n_slots - 1);
        while (id_slots[k])
            k = (k + 1) & (n_slots - 1);
        __atomic_store_n(&id_slots[k], i + 1, __ATOMIC_RELEASE);
    }
}

static bool attach_locked(void)
{
    char real[PATH_MAX];
    const char *key = realpath(shim.model_dir, real) ? real : shim.model_dir;
    ossc_session_header *h = NULL;
    for (int c = 0; c < OSSC_SESSION_CANDIDATES && !h; c++) {
        char dir[OSSC_SESSION_PATH_MAX];
        ossc_session_name(dir, sizeof(dir), OSSC_SESSION_ROOT, (unsigned)geteuid(), shim.group, key,
                          c);
        int rc = attach_dir(dir, key);
        if (rc == 0)
            return false;
        if (rc == 1)
            h = hdr;
    }
    if (!h)
        return false;
    uint32_t n = 16;
    while (n < 2 * h->n_objects)
        n *= 2;
    /* One private mapping: the name slots, the inode slots, the placeholder identities. */
    size_t bytes = 2 * n * sizeof(uint32_t) + h->n_objects * sizeof(placeholder_id);
    uint32_t *table = real_mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                                MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (table == MAP_FAILED) {
        hdr = NULL;
        return false;
    }
    id_slots = table + n;
    ids = (placeholder_id *)(table + 2 * n);
    for (uint32_t i = 0; i < h->n_objects; i++) {
        const ossc_session_object *o = &objects()[i];
        uint32_t k = hash(name_of(o), o->name_len) & (n - 1);
        while (table[k])
            k = (k + 1) & (n - 1);
        table[k] = i + 1;
    }
    n_slots = n;
    find_placeholders();
    __atomic_store_n(&slots, table, __ATOMIC_RELEASE);
    shim_log_to(h->log_path);
    return true;
}

void session_atfork_child(void) { pthread_mutex_init(&attach_lock, NULL); }

static bool attached(void)
{
    static __thread bool attaching; /* a libc call of ours that came back through a hook */
    if (__atomic_load_n(&slots, __ATOMIC_ACQUIRE))
        return true;
    if (attaching)
        return false;
    attaching = true;
    pthread_mutex_lock(&attach_lock);
    bool ok = slots || attach_locked();
    pthread_mutex_unlock(&attach_lock);
    attaching = false;
    return ok;
}

bool session_attach(void) { return attached(); }

bool session_owner_lives(void)
{
    if (!attached() || flock(control_fd, LOCK_SH | LOCK_NB) != 0)
        return attached(); /* its owner holds LOCK_EX */
    flock(control_fd, LOCK_UN);
    return false;
}

void session_detach(void)
{
    if (!slots)
        return;
    real_close(control_fd); /* and the users file's lock with it: see users_fd */
    real_close(users_fd);
    munmap(slots, 2 * n_slots * sizeof(uint32_t) + hdr->n_objects * sizeof(placeholder_id));
    munmap(hdr, hdr->control_size);
    slots = id_slots = NULL;
    ids = NULL;
    ids_missing = false;
    hdr = NULL;
    control_fd = users_fd = -1;
}

const char *session_oss_path(void) { return attached() ? hdr->oss_path : NULL; }

/* rel: a normalized path below MODEL_DIR. */
static int lookup_rel(const char *rel, size_t len)
{
    if (!attached())
        return -1;
    for (uint32_t k = hash(rel, len) & (n_slots - 1); slots[k]; k = (k + 1) & (n_slots - 1)) {
        const ossc_session_object *o = &objects()[slots[k] - 1];
        if (o->name_len == len && memcmp(name_of(o), rel, len) == 0)
            return (int)(slots[k] - 1);
    }
    return -1;
}

/* rel as an object's name: "//" collapsed. A spelling the kernel could resolve otherwise
 * than the letters say is not taken: "." or ".." (after a symbolic link, ".." leaves it
 * where it points) and a trailing "/" (a file is not a directory: ENOTDIR). Those open the
 * real path, and what they reach is recognized by its identity (session_identify). */
static bool plain_name(const char *rel, char *out, size_t cap, size_t *len)
{
    size_t n = 0;
    for (const char *p = rel; *p;) {
        while (*p == '/')
            p++;
        size_t seg = strcspn(p, "/");
        if (seg == 0)
            return false; /* a trailing "/" */
        if ((seg == 1 && p[0] == '.') || (seg == 2 && p[0] == '.' && p[1] == '.'))
            return false;
        if (n + seg + 2 > cap)
            return false;
        if (n)
            out[n++] = '/';
        memcpy(out + n, p, seg);
        n += seg;
        p += seg;
    }
    out[n] = '\0';
    *len = n;
    return n > 0;
}

int session_lookup(const char *path)
{
    const char *rest = NULL;
    if (strncmp(path, shim.model_dir, shim.model_dir_len) == 0 &&
        path[shim.model_dir_len] == '/')
        rest = path + shim.model_dir_len + 1;
    else if (shim.real_dir_len && strncmp(path, shim.real_dir, shim.real_dir_len) == 0 &&
             path[shim.real_dir_len] == '/')
        rest = path + shim.real_dir_len + 1;
    if (!rest)
        return -1;
    char rel[4096];
    size_t len;
    if (!plain_name(rest, rel, sizeof(rel), &len))
        return -1;
    return lookup_rel(rel, len);
}

static int identify(uint64_t dev, uint64_t ino)
{
    uint32_t k = ino_hash(ino) & (n_slots - 1), i;
    for (; (i = __atomic_load_n(&id_slots[k], __ATOMIC_ACQUIRE)); k = (k + 1) & (n_slots - 1))
        if (ids[i - 1].ino == ino && ids[i - 1].dev == dev)
            return (int)(i - 1);
    return -1;
}

void session_opened_data(int object, const struct stat *st)
{
    atomic_store_explicit(&data_dev, (uint64_t)st->st_dev, memory_order_relaxed);
    atomic_store_explicit(&ids[object].data_ino, (uint64_t)st->st_ino, memory_order_relaxed);
}

int session_data_identify(uint64_t dev, uint64_t ino, const char *path)
{
    if (!__atomic_load_n(&slots, __ATOMIC_ACQUIRE) ||
        dev != atomic_load_explicit(&data_dev, memory_order_relaxed) || !path ||
        strncmp(path, hdr->data_dir, strlen(hdr->data_dir)) == 0)
        return -1;
    for (uint32_t i = 0; i < hdr->n_objects; i++) {
        if (atomic_load_explicit(&ids[i].data_ino, memory_order_relaxed) != ino)
            continue;
        /* Still the object's data file (one stat): a released one was complete, and its
         * inode number may since name another file. */
        char data[sizeof(hdr->data_dir) + 16];
        struct stat st;
        session_data_path((int)i, data, sizeof(data));
        return real_fstatat(AT_FDCWD, data, &st, 0) == 0 && (uint64_t)st.st_ino == ino &&
                       (uint64_t)st.st_dev == dev
                   ? (int)i
                   : -1;
    }
    return -1;
}

int session_identify(uint64_t dev, uint64_t ino, mode_t mode, int64_t size, int64_t blocks)
{
    if (!S_ISREG(mode) || size <= 0)
        return -1;
    /* A placeholder is a hole, as big as its object: a file with as many bytes allocated as
     * it has is never one we have yet to learn of (it costs no attach, no stat). */
    bool sparse = (uint64_t)blocks * 512 < (uint64_t)size;
    if (!__atomic_load_n(&slots, __ATOMIC_ACQUIRE) && (!sparse || !attached()))
        return -1;
    int object = identify(dev, ino);
    if (object < 0 && sparse && __atomic_load_n(&ids_missing, __ATOMIC_RELAXED)) {
        pthread_mutex_lock(&attach_lock);
        if (ids_missing)
            find_placeholders();
        pthread_mutex_unlock(&attach_lock);
        object = identify(dev, ino);
    }
    return object;
}

static int wait_range(int object, uint64_t offset, uint64_t length);

void session_data_path(int object, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/%d", hdr->data_dir, object);
}

int session_open_data(int object, int flags)
{
    if (!read_only) { /* expiry counts from here; cacheLimit releases the least recent */
        uint64_t now = mono_ms();
        __atomic_store_n(&objects()[object].last_open_ms, now, __ATOMIC_RELAXED);
        __atomic_store_n(&hdr->last_open_ms, now, __ATOMIC_RELAXED);
    }
    char path[sizeof(hdr->data_dir) + 16];
    session_data_path(object, path, sizeof(path));
    /* Read-only whatever was asked: the bytes are the object's, not the caller's to change. */
    flags = (flags & (O_CLOEXEC | O_NONBLOCK | O_DIRECT)) | O_RDONLY;
    int fd = real_open(path, flags);
    for (int tries = 0; fd < 0 && errno == ENOENT && tries < 3; tries++) {
        /* Not fetched yet (lazy, past cacheLimit) or released: asking for its first chunk
         * has the owner fetch the whole object, this open's ask first. */
        int e = wait_range(object, 0, 1);
        if (e) {
            errno = e;
            return -1;
        }
        fd = real_open(path, flags);
    }
    return fd;
}


uint64_t session_object_size(int object) { return objects()[object].size; }

bool session_object_whole(int object)
{
    const ossc_session_object *o = &objects()[object];
    return __atomic_load_n(&o->chunks_ready, __ATOMIC_ACQUIRE) == o->n_chunks;
}

static bool chunk_ready(uint32_t chunk)
{
    const uint64_t *bits = (const uint64_t *)((const char *)hdr + hdr->bits_offset);
    return __atomic_load_n(&bits[chunk / 64], __ATOMIC_ACQUIRE) & (1ULL << (chunk % 64));
}

/* The owner holds an exclusive lock on the control file while it lives (a zombie or a
 * reused pid cannot fool this); only a silent heartbeat makes us look, through our own open
 * of the file we mapped (the path may name a later session by now). */
static bool owner_gone(void)
{
    uint64_t beat = __atomic_load_n(&hdr->heartbeat_ms, __ATOMIC_RELAXED);
    if (mono_ms() <= beat + OWNER_SILENCE_MS)
        return false;
    if (flock(control_fd, LOCK_SH | LOCK_NB) != 0)
        return false;
    flock(control_fd, LOCK_UN);
    return true;
}

int session_wait(int object, uint64_t offset, uint64_t length, uint32_t *waited_ms)
{
    uint64_t start = mono_ms();
    int e = wait_range(object, offset, length);
    if (waited_ms)
        *waited_ms += (uint32_t)(mono_ms() - start);
    return e;
}

void session_audit(int object, uint32_t waited_ms)
{
    static int audit_fd = -2;
    if (audit_fd == -2) /* opened once per process, on first use */
        audit_fd = hdr->audit_path[0] ? shim_open_log(hdr->audit_path) : -1;
    if (audit_fd < 0)
        return;
    const ossc_session_object *o = &objects()[object];
    char line[OSSC_MODEL_DIR_MAX + 256];
    int n = snprintf(line, sizeof(line), "%llu pid=%d path=%s/%s bytes=%llu waited_ms=%u\n",
                     (unsigned long long)time(NULL), (int)getpid(), hdr->model_dir, name_of(o),
                     (unsigned long long)o->size, waited_ms);
    if (n > 0 && (size_t)n < sizeof(line)) {
        ssize_t w = write(audit_fd, line, (size_t)n);
        (void)w;
    }
}

/* The chunks [*first, *last] that hold [offset, offset+length) of o, their end in *end;
 * false when nothing there can be missing. */
static bool chunks_of(const ossc_session_object *o, uint64_t offset, uint64_t length,
                      uint32_t *first, uint32_t *last, uint64_t *end)
{
    if (__atomic_load_n(&o->chunks_ready, __ATOMIC_ACQUIRE) == o->n_chunks)
        return false; /* the common case once loading is done */
    if (length == 0 || offset >= o->size)
        return false;
    *end = offset + length > o->size ? o->size : offset + length;
    *first = o->first_chunk + (uint32_t)(offset / hdr->chunk_size);
    *last = o->first_chunk + (uint32_t)((*end - 1) / hdr->chunk_size);
    return true;
}

bool session_present(int object, uint64_t offset, uint64_t length)
{
    uint32_t first, last;
    uint64_t end;
    if (!chunks_of(&objects()[object], offset, length, &first, &last, &end))
        return true;
    while (first <= last && chunk_ready(first))
        first++;
    return first > last;
}

static int wait_range(int object, uint64_t offset, uint64_t length)
{
    ossc_session_object *o = &objects()[object];
    uint32_t first, last;
    uint64_t end;
    if (!chunks_of(o, offset, length, &first, &last, &end))
        return 0;
    uint64_t start = mono_ms(), deadline = start + hdr->read_timeout_ms;
    uint32_t asked = UINT32_MAX;
    uint64_t asked_ms = 0;
    for (;;) {
        uint32_t seen = __atomic_load_n(&hdr->progress, __ATOMIC_ACQUIRE);
        while (first <= last && chunk_ready(first))
            first++;
        if (first > last)
            return 0;
        int error = __atomic_load_n(&o->error, __ATOMIC_ACQUIRE);
        const char *why = error ? "it could not be fetched"
                          : hdr->state == OSSC_SESSION_FAILED ? "the prefetch was stopped"
                          : owner_gone() ? "the owner process died"
                          : mono_ms() >= deadline ? "the read timeout passed" : NULL;
        if (why) {
            int e = error ? error : EIO;
            const char *name = strerrorname_np(e);
            shim_log("ERROR", "%s/%s: bytes %llu-%llu are not here and %s: %s", shim.model_dir,
                     name_of(o), (unsigned long long)offset, (unsigned long long)end - 1, why,
                     name ? name : "an error");
            return e;
        }
        /* Move what this reader needs to the front; ask again now and then, as one slot
         * serves every reader and another's request may have overwritten ours. */
        if (!read_only && (asked != first || mono_ms() >= asked_ms + REASK_MS)) {
            asked = first;
            asked_ms = mono_ms();
            __atomic_store_n(&hdr->wanted_chunk, first, __ATOMIC_RELEASE);
            __atomic_fetch_add(&hdr->wanted, 1, __ATOMIC_RELEASE);
            syscall(SYS_futex, &hdr->wanted, FUTEX_WAKE, 1, NULL, NULL, 0);
        }
        struct timespec ts = {0, POLL_MS * 1000000L};
        syscall(SYS_futex, &hdr->progress, FUTEX_WAIT, seen, &ts, NULL, 0);
    }
}
