/* session.c: the shim's view of the sessions, one per mount (MODEL_DIR, or each of
 * OSSC_MOUNTS): attach to a control file, find objects by path, open their data files, and
 * wait for ranges (futex on the header's progress word). An object's id is its mount in the
 * bits from MOUNT_SHIFT up and its index in that mount's session below. */
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
#define ANSWER_MS 2000 /* a failed object's open waits this long for the owner to fetch again */

/* Placeholder identities, for a file reached by a spelling the path lookup does not take
 * (a symbolic link into MODEL_DIR, "..", a relative path, a hard link): object i's
 * placeholder as stat(2) saw it, and an open-addressing hash of their inode numbers (index
 * + 1), n_slots long like the names'. A placeholder not there yet when we attached (the
 * owner publishes the control file first) is looked for again when a sparse file misses. */
typedef struct placeholder_id {
    uint64_t dev, ino; /* ino 0: not found yet */
    _Atomic uint64_t data_ino; /* the data file we last opened for the object (0: none) */
} placeholder_id;

/* One mount's session, as this process sees it. */
typedef struct mount_state {
    ossc_session_header *hdr; /* NULL until attached */
    pthread_mutex_t attach_lock;
    uint32_t *slots;          /* open-addressing hash of object names: index + 1 */
    uint32_t n_slots;
    int control_fd;           /* our own open of the control file: its lock tells */
    int users_fd;             /* holds LOCK_SH on the users file while we are attached */
    char session_path[OSSC_SESSION_PATH_MAX];
    bool read_only;           /* another uid's session, shared with our sharedGroup */
    _Atomic uint64_t data_dev; /* the data files' device, once one was opened */
    placeholder_id *ids;
    uint32_t *id_slots;
    bool ids_missing;         /* some placeholder was not found; under attach_lock */
    int audit_fd;             /* -2 until first used */
} mount_state;

static mount_state mounts[SHIM_MOUNTS_MAX];
static pthread_once_t mounts_once = PTHREAD_ONCE_INIT;

static void mounts_init(void)
{
    for (int i = 0; i < SHIM_MOUNTS_MAX; i++) {
        pthread_mutex_init(&mounts[i].attach_lock, NULL);
        mounts[i].control_fd = mounts[i].users_fd = -1;
        mounts[i].audit_fd = -2;
    }
}

/* The mount of an object id, and its index there. */
static mount_state *mount_of(int object) { return &mounts[object >> MOUNT_SHIFT]; }
static int index_of(int object) { return object & ((1 << MOUNT_SHIFT) - 1); }
static int object_id(const mount_state *m, int index)
{
    return (int)((m - mounts) << MOUNT_SHIFT) | index;
}
static const shim_mount *config_of(const mount_state *m) { return &shim.mounts[m - mounts]; }

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

static ossc_session_object *objects(const mount_state *m)
{
    return (ossc_session_object *)((char *)m->hdr + m->hdr->objects_offset);
}

static ossc_session_object *object_of(int object)
{
    return &objects(mount_of(object))[index_of(object)];
}

static const char *name_of(const mount_state *m, const ossc_session_object *o)
{
    return (const char *)m->hdr + m->hdr->names_offset + o->name_offset;
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

/* Whether the owner holds its control file's lock (LOCK_EX while it serves). */
static bool owner_holds(int control_fd)
{
    if (flock(control_fd, LOCK_SH | LOCK_NB) != 0)
        return true;
    flock(control_fd, LOCK_UN);
    return false;
}

/* Attaches to the session in dir: holds its users file (LOCK_SH: the owner ends the session
 * only once nobody does) and maps its control file after checking it. 1 attached, 0 no
 * session here (or it ended), -1 not ours, 2 (with live_only) its owner is dead: try the
 * next name. */
static int attach_dir(mount_state *m, const char *dir, const char *real, bool live_only)
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
            rc = live_only && !owner_holds(cfd) ? 2 : 1; /* the users file is still its */
    }
    if (rc == 1) {
        m->hdr = h;
        m->control_fd = cfd;
        m->users_fd = ufd;
        m->read_only = foreign;
        snprintf(m->session_path, sizeof(m->session_path), "%s", dir);
    } else {
        if (h != MAP_FAILED)
            real_munmap(h, (size_t)st.st_size);
        if (cfd >= 0)
            real_close(cfd);
        if (ufd >= 0)
            real_close(ufd);
    }
    real_close(dfd);
    return rc;
}

static uint32_t ino_hash(uint64_t ino) { return hash((const char *)&ino, sizeof(ino)); }

/* Finds the placeholders not found yet; with attach_lock held. */
static void find_placeholders(mount_state *m)
{
    m->ids_missing = false;
    for (uint32_t i = 0; i < m->hdr->n_objects; i++) {
        if (m->ids[i].ino)
            continue;
        char path[PATH_MAX];
        struct stat st;
        const ossc_session_object *o = &objects(m)[i];
        int n = snprintf(path, sizeof(path), "%s/%.*s", m->hdr->model_dir, (int)o->name_len,
                         name_of(m, o));
        if (n < 0 || (size_t)n >= sizeof(path) ||
            real_fstatat(AT_FDCWD, path, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) {
            m->ids_missing = true;
            continue;
        }
        m->ids[i].dev = (uint64_t)st.st_dev;
        __atomic_store_n(&m->ids[i].ino, (uint64_t)st.st_ino, __ATOMIC_RELEASE);
        uint32_t k = ino_hash(st.st_ino) & (m->n_slots - 1);
        while (m->id_slots[k])
            k = (k + 1) & (m->n_slots - 1);
        __atomic_store_n(&m->id_slots[k], i + 1, __ATOMIC_RELEASE);
    }
}

static bool attach_locked(mount_state *m)
{
    char real[PATH_MAX];
    const char *dir = config_of(m)->model_dir;
    const char *key = realpath(dir, real) ? real : dir;
    ossc_session_header *h = NULL;
    /* A live owner's session first: a dead owner's stays while its users hold it, and a new
     * owner may have taken the next name (the dead one's directory was another member's). */
    bool dead_seen = false;
    for (int pass = 0; pass < 1 + dead_seen && !h; pass++)
        for (int c = 0; c < OSSC_SESSION_CANDIDATES && !h; c++) {
            char path[OSSC_SESSION_PATH_MAX];
            ossc_session_name(path, sizeof(path), OSSC_SESSION_ROOT, (unsigned)geteuid(),
                              shim.group, key, c);
            int rc = attach_dir(m, path, key, pass == 0);
            if (rc == 0)
                break;
            if (rc == 1)
                h = m->hdr;
            dead_seen |= rc == 2;
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
        m->hdr = NULL;
        return false;
    }
    m->id_slots = table + n;
    m->ids = (placeholder_id *)(table + 2 * n);
    for (uint32_t i = 0; i < h->n_objects; i++) {
        const ossc_session_object *o = &objects(m)[i];
        uint32_t k = hash(name_of(m, o), o->name_len) & (n - 1);
        while (table[k])
            k = (k + 1) & (n - 1);
        table[k] = i + 1;
    }
    m->n_slots = n;
    find_placeholders(m);
    __atomic_store_n(&m->slots, table, __ATOMIC_RELEASE);
    shim_log_to(h->log_path);
    return true;
}

void session_atfork_child(void)
{
    for (int i = 0; i < SHIM_MOUNTS_MAX; i++)
        pthread_mutex_init(&mounts[i].attach_lock, NULL);
}

static bool attached(mount_state *m)
{
    static __thread bool attaching; /* a libc call of ours that came back through a hook */
    if (__atomic_load_n(&m->slots, __ATOMIC_ACQUIRE))
        return true;
    if (attaching || m - mounts >= shim.n_mounts)
        return false;
    attaching = true;
    pthread_once(&mounts_once, mounts_init);
    pthread_mutex_lock(&m->attach_lock);
    bool ok = m->slots || attach_locked(m);
    pthread_mutex_unlock(&m->attach_lock);
    attaching = false;
    return ok;
}

bool session_attach(int mount) { return attached(&mounts[mount]); }

bool session_owner_lives(int mount)
{
    mount_state *m = &mounts[mount];
    return attached(m) && owner_holds(m->control_fd);
}

void session_detach(int mount)
{
    mount_state *m = &mounts[mount];
    if (!m->slots)
        return;
    real_close(m->control_fd); /* and the users file's lock with it: see users_fd */
    real_close(m->users_fd);
    real_munmap(m->slots,
                2 * m->n_slots * sizeof(uint32_t) + m->hdr->n_objects * sizeof(placeholder_id));
    real_munmap(m->hdr, m->hdr->control_size);
    m->slots = m->id_slots = NULL;
    m->ids = NULL;
    m->ids_missing = false;
    m->hdr = NULL;
    m->control_fd = m->users_fd = -1;
}

const char *session_oss_path(int mount)
{
    return attached(&mounts[mount]) ? mounts[mount].hdr->oss_path : NULL;
}

/* rel: a normalized path below the mount's MODEL_DIR. */
static int lookup_rel(mount_state *m, const char *rel, size_t len)
{
    if (!attached(m))
        return -1;
    for (uint32_t k = hash(rel, len) & (m->n_slots - 1); m->slots[k];
         k = (k + 1) & (m->n_slots - 1)) {
        const ossc_session_object *o = &objects(m)[m->slots[k] - 1];
        if (o->name_len == len && memcmp(name_of(m, o), rel, len) == 0)
            return object_id(m, (int)(m->slots[k] - 1));
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

/* The path below one mount's MODEL_DIR (as given, or its real path), or NULL. */
static const char *below(const shim_mount *c, const char *path)
{
    if (strncmp(path, c->model_dir, c->model_dir_len) == 0 && path[c->model_dir_len] == '/')
        return path + c->model_dir_len + 1;
    if (c->real_dir_len && strncmp(path, c->real_dir, c->real_dir_len) == 0 &&
        path[c->real_dir_len] == '/')
        return path + c->real_dir_len + 1;
    return NULL;
}

int session_lookup(const char *path)
{
    for (int i = 0; i < shim.n_mounts; i++) {
        const char *rest = below(&shim.mounts[i], path);
        if (!rest)
            continue;
        char rel[4096];
        size_t len;
        if (!plain_name(rest, rel, sizeof(rel), &len))
            return -1;
        return lookup_rel(&mounts[i], rel, len);
    }
    return -1;
}

static int identify(const mount_state *m, uint64_t dev, uint64_t ino)
{
    uint32_t k = ino_hash(ino) & (m->n_slots - 1), i;
    for (; (i = __atomic_load_n(&m->id_slots[k], __ATOMIC_ACQUIRE));
         k = (k + 1) & (m->n_slots - 1))
        if (m->ids[i - 1].ino == ino && m->ids[i - 1].dev == dev)
            return object_id(m, (int)(i - 1));
    return -1;
}

void session_opened_data(int object, const struct stat *st)
{
    mount_state *m = mount_of(object);
    atomic_store_explicit(&m->data_dev, (uint64_t)st->st_dev, memory_order_relaxed);
    atomic_store_explicit(&m->ids[index_of(object)].data_ino, (uint64_t)st->st_ino,
                          memory_order_relaxed);
}

static int data_identify(mount_state *m, uint64_t dev, uint64_t ino, const char *path)
{
    if (!__atomic_load_n(&m->slots, __ATOMIC_ACQUIRE) ||
        dev != atomic_load_explicit(&m->data_dev, memory_order_relaxed) || !path ||
        strncmp(path, m->hdr->data_dir, strlen(m->hdr->data_dir)) == 0)
        return -1;
    for (uint32_t i = 0; i < m->hdr->n_objects; i++) {
        if (atomic_load_explicit(&m->ids[i].data_ino, memory_order_relaxed) != ino)
            continue;
        /* Still the object's data file (one stat): a released one was complete, and its
         * inode number may since name another file. */
        char data[sizeof(m->hdr->data_dir) + 16];
        struct stat st;
        session_data_path(object_id(m, (int)i), data, sizeof(data));
        return real_fstatat(AT_FDCWD, data, &st, 0) == 0 && (uint64_t)st.st_ino == ino &&
                       (uint64_t)st.st_dev == dev
                   ? object_id(m, (int)i)
                   : -1;
    }
    return -1;
}

int session_data_identify(uint64_t dev, uint64_t ino, const char *path)
{
    for (int i = 0; i < shim.n_mounts; i++) {
        int object = data_identify(&mounts[i], dev, ino, path);
        if (object >= 0)
            return object;
    }
    return -1;
}

static int identify_in(mount_state *m, uint64_t dev, uint64_t ino, bool sparse)
{
    if (!__atomic_load_n(&m->slots, __ATOMIC_ACQUIRE) && (!sparse || !attached(m)))
        return -1;
    int object = identify(m, dev, ino);
    if (object < 0 && sparse && __atomic_load_n(&m->ids_missing, __ATOMIC_RELAXED)) {
        pthread_mutex_lock(&m->attach_lock);
        if (m->ids_missing)
            find_placeholders(m);
        pthread_mutex_unlock(&m->attach_lock);
        object = identify(m, dev, ino);
    }
    return object;
}

int session_identify(uint64_t dev, uint64_t ino, mode_t mode, int64_t size, int64_t blocks)
{
    if (!S_ISREG(mode) || size <= 0)
        return -1;
    /* A placeholder is a hole, as big as its object: a file with as many bytes allocated as
     * it has is never one we have yet to learn of (it costs no attach, no stat). */
    bool sparse = (uint64_t)blocks * 512 < (uint64_t)size;
    for (int i = 0; i < shim.n_mounts; i++) {
        int object = identify_in(&mounts[i], dev, ino, sparse);
        if (object >= 0)
            return object;
    }
    return -1;
}

static int wait_until(int object, uint64_t offset, uint64_t length, const char *path, int flags,
                      int *fd);
static int wait_range(int object, uint64_t offset, uint64_t length);

void session_data_path(int object, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/%d", mount_of(object)->hdr->data_dir, index_of(object));
}

/* Opens object's data file at path, holding LOCK_SH on it while the fd (or a mapping of it)
 * lives: the owner retires the file of a failed fetch only under LOCK_EX, so it never goes
 * from under a reader, whose holes would read as zeros once a new file's chunks land. -1
 * with ENOENT when it is not there, was retired meanwhile, or holds a failed fetch that the
 * owner may fetch again (writable sessions: wait_until asks it). */
static int open_data(int object, const char *path, int flags)
{
    const mount_state *m = mount_of(object);
    int fd = real_open(path, flags);
    if (fd < 0)
        return -1;
    struct stat st;
    bool failed = !m->read_only && __atomic_load_n(&object_of(object)->error, __ATOMIC_ACQUIRE);
    if (!failed && flock(fd, LOCK_SH) == 0 && fstat(fd, &st) == 0 && st.st_nlink > 0)
        return fd;
    real_close(fd);
    errno = ENOENT;
    return -1;
}

int session_open_data(int object, int flags)
{
    mount_state *m = mount_of(object);
    if (!m->read_only) { /* expiry counts from here; cacheLimit releases the least recent */
        uint64_t now = mono_ms();
        __atomic_store_n(&object_of(object)->last_open_ms, now, __ATOMIC_RELAXED);
        __atomic_store_n(&m->hdr->last_open_ms, now, __ATOMIC_RELAXED);
    }
    char path[sizeof(m->hdr->data_dir) + 16];
    session_data_path(object, path, sizeof(path));
    /* Read-only whatever was asked: the bytes are the object's, not the caller's to change. */
    flags = (flags & (O_CLOEXEC | O_NONBLOCK | O_DIRECT)) | O_RDONLY;
    int fd = open_data(object, path, flags);
    if (fd >= 0 || errno != ENOENT)
        return fd;
    /* Not fetched yet (lazy, past cacheLimit), released or failed: asking for its first
     * chunk has the owner create the data file and fetch the whole object; the open returns
     * once the file is there, so that the first read's range is the next one asked for. */
    int e = wait_until(object, 0, 1, path, flags, &fd);
    if (e)
        errno = e;
    return e ? -1 : fd;
}


uint64_t session_object_size(int object) { return object_of(object)->size; }

bool session_object_whole(int object)
{
    const ossc_session_object *o = object_of(object);
    return __atomic_load_n(&o->chunks_ready, __ATOMIC_ACQUIRE) == o->n_chunks;
}

static bool chunk_ready(const ossc_session_header *hdr, uint32_t chunk)
{
    const uint64_t *bits = (const uint64_t *)((const char *)hdr + hdr->bits_offset);
    return __atomic_load_n(&bits[chunk / 64], __ATOMIC_ACQUIRE) & (1ULL << (chunk % 64));
}

/* The owner holds an exclusive lock on the control file while it lives (a zombie or a
 * reused pid cannot fool this); only a silent heartbeat makes us look, through our own open
 * of the file we mapped (the path may name a later session by now). */
static bool owner_gone(const mount_state *m)
{
    uint64_t beat = __atomic_load_n(&m->hdr->heartbeat_ms, __ATOMIC_RELAXED);
    if (mono_ms() <= beat + OWNER_SILENCE_MS)
        return false;
    if (flock(m->control_fd, LOCK_SH | LOCK_NB) != 0)
        return false;
    flock(m->control_fd, LOCK_UN);
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
    mount_state *m = mount_of(object);
    if (m->audit_fd == -2) /* opened once per process and mount, on first use */
        m->audit_fd = m->hdr->audit_path[0] ? shim_open_log(m->hdr->audit_path) : -1;
    if (m->audit_fd < 0)
        return;
    const ossc_session_object *o = object_of(object);
    char line[OSSC_MODEL_DIR_MAX + 256];
    int n = snprintf(line, sizeof(line), "%llu pid=%d path=%s/%s bytes=%llu waited_ms=%u\n",
                     (unsigned long long)time(NULL), (int)getpid(), m->hdr->model_dir,
                     name_of(m, o), (unsigned long long)o->size, waited_ms);
    if (n > 0 && (size_t)n < sizeof(line)) {
        ssize_t w = write(m->audit_fd, line, (size_t)n);
        (void)w;
    }
}

/* The chunks [*first, *last] that hold [offset, offset+length) of o, their end in *end;
 * false when nothing there can be missing. */
static bool chunks_of(const ossc_session_header *hdr, const ossc_session_object *o,
                      uint64_t offset, uint64_t length, uint32_t *first, uint32_t *last,
                      uint64_t *end)
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
    const ossc_session_header *hdr = mount_of(object)->hdr;
    if (!chunks_of(hdr, object_of(object), offset, length, &first, &last, &end))
        return true;
    while (first <= last && chunk_ready(hdr, first))
        first++;
    return first > last;
}

static int wait_range(int object, uint64_t offset, uint64_t length)
{
    return wait_until(object, offset, length, NULL, 0, NULL);
}

/* Waits until [offset, offset+length) of object is present or, given a path, until the
 * object's data file there opens (*fd, with flags), asking the owner for the first chunk
 * missing meanwhile. 0, or the errno the caller fails with (after a log line). */
static int wait_until(int object, uint64_t offset, uint64_t length, const char *path, int flags,
                      int *fd)
{
    mount_state *m = mount_of(object);
    ossc_session_header *hdr = m->hdr;
    ossc_session_object *o = object_of(object);
    uint32_t first = o->first_chunk, last = o->first_chunk;
    uint64_t end = 1;
    if (!path && !chunks_of(hdr, o, offset, length, &first, &last, &end))
        return 0;
    uint64_t start = mono_ms(), deadline = start + hdr->read_timeout_ms;
    uint32_t asked = UINT32_MAX;
    uint64_t asked_ms = 0;
    /* An open of an object whose last fetch failed asks the owner once to fetch it again
     * (the owner clears the error when it starts), and fails only if that does not happen
     * soon. A failure of the fetch this wait saw start is final. */
    bool retrying = path && !m->read_only && __atomic_load_n(&o->error, __ATOMIC_ACQUIRE);
    for (;;) {
        uint32_t seen = __atomic_load_n(&hdr->progress, __ATOMIC_ACQUIRE);
        if (path && (*fd = open_data(object, path, flags)) >= 0)
            return 0;
        if (path && errno != ENOENT)
            return errno;
        while (!path && first <= last && chunk_ready(hdr, first))
            first++;
        if (first > last)
            return 0;
        int error = __atomic_load_n(&o->error, __ATOMIC_ACQUIRE);
        retrying = retrying && error && mono_ms() < start + ANSWER_MS;
        if (retrying)
            error = 0;
        const char *why = error ? "it could not be fetched"
                          : hdr->state == OSSC_SESSION_FAILED ? "the prefetch was stopped"
                          : owner_gone(m) ? "the owner process died"
                          : mono_ms() >= deadline ? "the read timeout passed" : NULL;
        if (why) {
            int e = error ? error : EIO;
            const char *name = strerrorname_np(e);
            shim_log("ERROR", "%s/%s: bytes %llu-%llu are not here and %s: %s",
                     config_of(m)->model_dir, name_of(m, o), (unsigned long long)offset,
                     (unsigned long long)end - 1, why, name ? name : "an error");
            return e;
        }
        /* Move what this reader needs to the front; ask again now and then, as one slot
         * serves every reader and another's request may have overwritten ours (not for a
         * new fetch of a failed object: that is asked once). */
        if (!m->read_only &&
            (asked != first || (!retrying && mono_ms() >= asked_ms + REASK_MS))) {
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
