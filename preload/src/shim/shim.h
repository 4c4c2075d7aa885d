/* shim.h: what the files of libossc_preload.so share. libc only. */
#ifndef OSSC_SHIM_H
#define OSSC_SHIM_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "session_layout.h"

#define SHIM_API __attribute__((visibility("default")))

/* ---- real functions (real.c), one pointer per line of hooks.def ---- */
#define HOOK(ret, name, params) extern ret(*real_##name) params;
#include "hooks.def"
#undef HOOK
void real_resolve(void);
/* Set once real_resolve ran: a pointer still NULL then is a function this libc lacks
 * (close_range before glibc 2.34), not one to look up again on every call. */
extern volatile int real_resolved;

/* ---- configuration and state (init.c) ---- */
#define SHIM_MOUNTS_MAX 8 /* MODEL_DIR, or the mounts of OSSC_MOUNTS */
#define MOUNT_SHIFT 24     /* an object id: its mount << MOUNT_SHIFT | its index there */

/* One mount: a MODEL_DIR served by its own session from its own store path. */
typedef struct shim_mount {
    char model_dir[OSSC_MODEL_DIR_MAX]; /* as given, normalized */
    size_t model_dir_len;
    char real_dir[OSSC_MODEL_DIR_MAX];  /* its real path, if different */
    size_t real_dir_len;
    char url[1024];               /* its store path (OSS_PATH, or OSSC_MOUNTS's) */
    char policy[8];               /* "lazy", "eager", or "" for the settings' */
} shim_mount;

typedef struct shim_config {
    bool enabled;                 /* MODEL_DIR or OSSC_MOUNTS set, and OSSC_DISABLE unset */
    shim_mount mounts[SHIM_MOUNTS_MAX];
    int n_mounts;
    long group;                   /* OSSC_SHARED_GROUP's gid, or OSSC_SESSION_PRIVATE */
} shim_config;

extern shim_config shim;
extern volatile int shim_ready; /* 0 before init, 1 during, 2 after */
void shim_init(void);

/* ---- logging (init.c): one write(2) per line, no stdio, no malloc ---- */
void shim_log(const char *level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void shim_log_to(const char *path);
/* Opens a log of ours (the shim's, the audit) to append to, as a file of this user's only
 * (0600), never through a symbolic link planted at its path: that is refused with one line
 * on stderr, and the caller goes on without the log. An fd, or -1. */
int shim_open_log(const char *path);

/* ---- the session (session.c) ---- */
/* Attaches to the session serving mount's MODEL_DIR, if there is one; true once attached. */
bool session_attach(int mount);
/* Whether the attached session's owner lives (holds its lock now). */
bool session_owner_lives(int mount);
/* Forgets the attached session (only before main: no other thread may be using it). */
void session_detach(int mount);
/* The store path the attached session serves; NULL if none is attached. */
const char *session_oss_path(int mount);
/* The object id of a path below a mount's MODEL_DIR, -1 if it is not a large object of
 * that session. path must be absolute. */
int session_lookup(const char *path);
/* The object whose placeholder is the file stat(2) describes so (however it was reached:
 * a symbolic link, "..", a hard link), -1 if none. No system call unless the file is sparse
 * and the session is not attached yet, or a placeholder was missing when it was. */
int session_identify(uint64_t dev, uint64_t ino, mode_t mode, int64_t size, int64_t blocks);
/* Notes the data file (its fstat) just opened for object; session_data_identify then knows
 * it again when it is reached through a path other than its own name (a reopen through
 * /proc/self/fd; the owner writes it by name): its object, or -1. A stat only for a file
 * that has a noted data file's numbers. */
void session_opened_data(int object, const struct stat *st);
int session_data_identify(uint64_t dev, uint64_t ino, const char *path);
/* Opens the data file of an object like open(2) with flags. */
int session_open_data(int object, int flags);
/* Where an object's data file lives (the header's data_dir: /dev/shm or cacheDir). */
void session_data_path(int object, char *buf, size_t cap);
/* Waits until [offset, offset+length) of object is present. 0, or an errno; *waited_ms
 * (if given) grows by the time spent. */
int session_wait(int object, uint64_t offset, uint64_t length, uint32_t *waited_ms);
/* Whether [offset, offset+length) of object is present now (no wait, no system call). */
bool session_present(int object, uint64_t offset, uint64_t length);
/* One audit line (auditPath) for a closed fd of an object. */
void session_audit(int object, uint32_t waited_ms);
uint64_t session_object_size(int object);
bool session_object_whole(int object);
/* In a forked child: a lock another thread held at fork is free again. */
void session_atfork_child(void);

/* ---- GPU pinning (pin.c): OSSC_PIN_GPU=yes ---- */
void pin_init(void); /* reads OSSC_PIN_GPU */
bool pin_enabled(void);
/* After a mapping of object's bytes (all present) succeeded: registers it with CUDA if it is
 * shared, the setting is on, CUDA is loaded and a context is current. */
void pin_mapping(void *addr, size_t length, int flags, int object);
/* Before [addr, +length) is unmapped, moved or mapped over: ends every registration in it. */
void pin_forget(const void *addr, size_t length);
/* In a forked child: the registrations are the parent's (CUDA does not survive fork). */
void pin_atfork_child(void);

/* ---- fd table (fdtable.c): which fds are data files of which object ---- */
#define FD_TABLE_SIZE 65536
/* fd, opened on `file` (its fstat), is object's. */
void fd_track(int fd, int object, bool whole, const struct stat *file);
void fd_copy(int from, int to); /* to is what from is: ours, or not */
bool fd_is_file(int fd, const struct stat *st); /* st is the file fd was tracked on */
bool fd_whole(int fd); /* opened on a complete data file: never waits */
int fd_object(int fd); /* -1 if not ours */
void fd_untrack(int fd);
void fd_add_wait(int fd, uint32_t ms);
uint32_t fd_waited_ms(int fd);
void fd_untrack_range(unsigned int first, unsigned int last);
void fd_reset(void);

#endif
