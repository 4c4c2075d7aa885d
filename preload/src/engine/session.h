/* session.h: what the files of a session's owner share (session_owner.c, session_control.c,
 * session_expiry.c, session_dir.c, materialize.c, session_status.c). Not public API. */
#ifndef OSSC_SESSION_H
#define OSSC_SESSION_H

#include <stdatomic.h>
#include <stdbool.h>
#include <sys/stat.h>

#include "internal.h"
#include "session_layout.h"

#define OSSC_DATA_PATH_MAX 1100 /* data_dir and an index */

/* Fetching one object again after its data file was released. */
struct refetch {
    ossc_session *s;
    uint32_t object;
    ossc_fetch *fetch; /* NULL when none runs */
    bool wanted;       /* a reader asked for the object after its fetch failed, before its
                        * data file could be retired: fetch it again once it is */
};

struct ossc_session {
    ossc_client *client;
    ossc_listing *listing;
    char url[1024];             /* canonical scheme://bucket/prefix */
    char path[OSSC_SESSION_PATH_MAX]; /* /dev/shm/ossc-<uid>-<hash>[-n] */
    char data_dir[1024];        /* <path>/data.<pid>, or <cacheDir>/ossc-<uid>-<hash>-<pid> */
    char model_dir[OSSC_MODEL_DIR_MAX]; /* real path */
    bool attached;              /* another live owner fetches; we only looked */
    long group;                 /* sharedGroup's gid, or OSSC_SESSION_PRIVATE */
    int dir_fd;                 /* the session directory; flock(LOCK_EX) while we own it */
    int users_fd;               /* the users file: LOCK_EX taken only to see that none is left */
    int manifest_fd;            /* "materialized": what we created in MODEL_DIR */
    ossc_session_header *hdr;
    size_t control_size;
    int control_fd;             /* flock(LOCK_EX) while we live: readers see it go if we die */
    ossc_fetch *fetch;
    int *data_fds;
    size_t n_data;
    const char **keys;          /* object index -> key (owned by the listing) */
    struct refetch *refetches;  /* object index -> its refetch after a release */
    size_t n_eager;             /* objects [0, n_eager) are prefetched; the rest on open */
    uint64_t cache_limit;       /* cacheLimit in bytes, 0 for none */
    uint64_t *use;              /* object index -> when the owner last saw it used (fetched,
                                 * held open or mapped), CLOCK_MONOTONIC ms */
    bool *fetched;              /* object index -> fetched once already (a refetch follows) */
    int audit_fd;               /* auditPath, -1 for none */
    bool over_warned;           /* said that what is open exceeds cacheLimit */
    uint64_t scan_held, scan_opened, scan_users; /* what the last /proc scan saw (users: a
                                                  * hash of the pids holding the users lock) */
    uint64_t scan_ms;           /* when it ran */
    uint64_t complete_ms;
    pthread_t helper;
    bool helper_started;
    atomic_bool stopping;
};

/* ---- the session directory (session_dir.c) ---- */
/* sharedGroup (a name, a gid, or "" for private sessions) as the group argument below; an
 * unknown group, or one this process is not in, is a configuration error. */
int session_group(const char *name, long *gid, ossc_error *err);
/* Whether this process is in group gid (its effective or a supplementary group). */
bool session_in_group(gid_t gid);
/* Opens dir (O_DIRECTORY, O_NOFOLLOW) if ossc_session_access allows it for group
 * (OSSC_SESSION_PRIVATE, a sharedGroup gid, or OSSC_SESSION_OWN_ANY); -1 with errno ENOENT
 * (absent) or EPERM (someone else's or open to others: *why says how). With create, a
 * missing one is made 0700 (02750 and the group's, when shared) first. */
int session_dir_open(const char *dir, bool create, long group, const char **why);
/* Opens name in the session directory dirfd like openat, refusing symlinks and what is not a
 * regular file that ossc_session_access allows; with O_EXCL, the new file is the group's. */
int session_file_open(int dirfd, const char *name, int flags, long group);
/* Gives a file this process just created to the sharedGroup (0640), if sharing. */
int session_file_share(int fd, long group);
/* Whether a live owner holds the control file of the session directory dirfd. */
bool session_owner_alive(int dirfd, long group);
/* Whether any process holds the users file of dirfd (LOCK_SH). */
bool session_has_users(int dirfd);
/* With the directory lock held: removes what a session left (MODEL_DIR's materialized
 * files, data files, control, users), keeping the directory itself. */
void session_dir_clear(int dirfd, const char *path);
/* Removes the session at path if its owner is dead and (unless force) no user is left:
 * 1 removed, 0 kept (in use), 2 kept (a live owner holds it), -1 not a session of ours. */
int session_reap(const char *path, bool force);

/* ---- MODEL_DIR (materialize.c) ---- */
/* Where a key goes below MODEL_DIR: ossc_relative_name (ossc.h), materialize.c. */
/* Records a created file ('f') or directory ('d') in the manifest (manifest_fd >= 0). */
void materialize_record(int manifest_fd, char kind, const char *path);
/* mkdir -p; each directory it creates is recorded in the manifest (manifest_fd >= 0). */
int materialize_dirs(int manifest_fd, const char *path, ossc_error *err);
/* Creates (O_EXCL unless allowed to fill a non-empty MODEL_DIR) and records a file. */
int materialize_file(int manifest_fd, const char *path, ossc_error *err);
/* MODEL_DIR must be empty unless allowNonEmptyModelDir. */
int materialize_check_empty(const char *dir, bool allow_non_empty, ossc_error *err);
/* Undoes the manifest (files, then directories, newest first; a directory that is not
 * empty stays) and unlinks it. */
void materialize_undo(int dirfd);
/* Opens the (new, empty) manifest of the session directory dirfd for appending. */
int materialize_open_manifest(int dirfd);

/* ---- the control file and the data files (session_control.c) ---- */
long session_futex(uint32_t *word, int op, uint32_t val, const struct timespec *ts);
ossc_session_object *session_objects(ossc_session_header *h);
uint64_t *session_bits(ossc_session_header *h);
/* Bumps the progress futex and wakes every reader waiting on it. */
void session_wake_readers(ossc_session_header *h);
void session_set_state(ossc_session_header *h, uint32_t state);
/* Object o failed with errno e: its error, counted once in objects_failed until cleared. */
void session_object_failed(ossc_session_header *h, ossc_session_object *o, int e);
/* A chunk of object landed (status 0: its ready bit) or failed for good (the object's errno). */
void session_chunk_landed(ossc_session *s, uint32_t object, uint64_t offset, uint64_t length,
                          int status);
void session_data_path(const ossc_session *s, size_t object, char *buf, size_t cap);
/* Creates object's data file (O_EXCL: one still there belongs to readers), sized to it. */
int session_create_data_file(const ossc_session *s, size_t object, uint64_t size);
/* Writes the control file for the large objects (listing indexes), renames it into place,
 * creates their data files and only then their placeholders in MODEL_DIR. */
int session_publish(ossc_session *s, const size_t *large, size_t n, ossc_error *err);

/* ---- serving (session_expiry.c) ---- */
/* The helper thread (arg: the session) until s->stopping. */
void *session_helper_main(void *arg);
/* Releases a complete object's data file (why: for the audit log); false if it stays. */
bool session_release_object(ossc_session *s, size_t object, const char *why);

/* ---- the cache budget (session_budget.c) ---- */
/* At start, from the large objects' sizes in fetch order: refuses an eager prefetch that
 * cannot fit the cache's free space without a cacheLimit (OSSC_E_NO_SPACE), resolves
 * cacheLimit and sets s->n_eager. */
int session_plan_cache(ossc_session *s, const uint64_t *sizes, size_t n, ossc_error *err);
/* Keeps what the data files hold, plus incoming bytes about to be fetched, under cacheLimit
 * by releasing complete objects nobody holds, least recently used first; publishes
 * bytes_held. Warns once when what is in use exceeds the limit. */
void session_budget_keep(ossc_session *s, uint64_t incoming);
/* Whether a fetch (the prefetch or a refetch) may still write object i's data file: until
 * then the file is neither released nor retired, since closing its fd under the transfers
 * would send their bytes to whatever file takes the fd number next. */
bool session_object_written(const ossc_session *s, size_t i);
/* Whether object i's data file holds all of it, and no fetch writes it. */
bool session_object_complete(const ossc_session *s, size_t i);

/* ---- the audit log (session_audit.c) ---- */
void session_audit_open(ossc_session *s);
/* One line: time, event ("fetch", "release") of object, and why. */
void session_audit(ossc_session *s, size_t object, const char *event, const char *why);

/* ---- status (session_status.c) ---- */
/* How many processes hold a shared flock on the file fd refers to (/proc/locks). */
int session_lock_holders(int fd);
/* The same, with the first cap holders' pids in pids (for the /proc scan of the budget). */
int session_lock_holder_pids(int fd, int *pids, int cap);

#endif
