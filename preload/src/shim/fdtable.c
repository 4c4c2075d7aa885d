/* fdtable.c: fd -> object of the session. Lock-free: one int per fd, set on open and dup,
 * cleared on close. An fd beyond the table is handed out for an object only once that is
 * whole (hooks.c). WHOLE marks an fd opened on a complete data file: its bytes can never go
 * missing (a release unlinks the file, a refetch writes a new one), so its reads never wait.
 * Each entry keeps the identity of the data file it was opened on: an fd closed where no
 * hook sees it (inside libc, a raw system call) may get its number reused by a call we do
 * not hook (socket, pipe, memfd_create), and fd_is_file tells, before a wait, whether the
 * number still names that file. */
#include <stdatomic.h>
#include <string.h>

#include "shim.h"

#define WHOLE (1 << 30)
static _Atomic int table[FD_TABLE_SIZE]; /* object + 1, | WHOLE; 0: not ours */
static _Atomic uint32_t waited[FD_TABLE_SIZE]; /* ms this fd's calls spent waiting */
static _Atomic uint64_t file_dev[FD_TABLE_SIZE], file_ino[FD_TABLE_SIZE]; /* its data file */

static void set(int fd, int entry, uint64_t dev, uint64_t ino)
{
    atomic_store_explicit(&waited[fd], 0, memory_order_relaxed);
    atomic_store_explicit(&file_dev[fd], dev, memory_order_relaxed);
    atomic_store_explicit(&file_ino[fd], ino, memory_order_relaxed);
    atomic_store_explicit(&table[fd], entry, memory_order_release);
}

void fd_track(int fd, int object, bool whole, const struct stat *file)
{
    if (fd >= 0 && fd < FD_TABLE_SIZE)
        set(fd, (object + 1) | (whole ? WHOLE : 0), (uint64_t)file->st_dev,
            (uint64_t)file->st_ino);
}

void fd_copy(int from, int to)
{
    if (to < 0 || to >= FD_TABLE_SIZE || to == from) /* dup2(fd, fd): as it was */
        return;
    int entry = from >= 0 && from < FD_TABLE_SIZE
                    ? atomic_load_explicit(&table[from], memory_order_acquire)
                    : 0;
    if (entry)
        set(to, entry, atomic_load_explicit(&file_dev[from], memory_order_relaxed),
            atomic_load_explicit(&file_ino[from], memory_order_relaxed));
    else if (atomic_load_explicit(&table[to], memory_order_relaxed))
        atomic_store_explicit(&table[to], 0, memory_order_release);
}

bool fd_is_file(int fd, const struct stat *st)
{
    return fd >= 0 && fd < FD_TABLE_SIZE &&
           atomic_load_explicit(&file_ino[fd], memory_order_relaxed) == (uint64_t)st->st_ino &&
           atomic_load_explicit(&file_dev[fd], memory_order_relaxed) == (uint64_t)st->st_dev;
}

bool fd_whole(int fd)
{
    return fd >= 0 && fd < FD_TABLE_SIZE &&
           (atomic_load_explicit(&table[fd], memory_order_acquire) & WHOLE);
}

void fd_add_wait(int fd, uint32_t ms)
{
    if (ms && fd >= 0 && fd < FD_TABLE_SIZE)
        atomic_fetch_add_explicit(&waited[fd], ms, memory_order_relaxed);
}

uint32_t fd_waited_ms(int fd)
{
    return fd >= 0 && fd < FD_TABLE_SIZE ? atomic_load(&waited[fd]) : 0;
}

int fd_object(int fd)
{
    if (fd < 0 || fd >= FD_TABLE_SIZE)
        return -1;
    return (atomic_load_explicit(&table[fd], memory_order_acquire) & ~WHOLE) - 1;
}

void fd_untrack(int fd)
{
    if (fd >= 0 && fd < FD_TABLE_SIZE && atomic_load_explicit(&table[fd], memory_order_relaxed))
        atomic_store_explicit(&table[fd], 0, memory_order_release);
}

void fd_untrack_range(unsigned int first, unsigned int last)
{
    for (unsigned int fd = first; fd <= last && fd < FD_TABLE_SIZE; fd++)
        atomic_store_explicit(&table[fd], 0, memory_order_relaxed);
}

void fd_reset(void)
{
    for (int fd = 0; fd < FD_TABLE_SIZE; fd++)
        atomic_store_explicit(&table[fd], 0, memory_order_relaxed);
}
