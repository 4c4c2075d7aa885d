/* fdtable.c: fd -> object of the session. Lock-free: one int per fd, set on open and dup,
 * cleared on close. An fd beyond the table is never handed out for an object (hooks.c).
 * WHOLE marks an fd opened on a complete data file: its bytes can never go missing (a
 * release unlinks the file, a refetch writes a new one), so its reads never wait. */
#include <stdatomic.h>
#include <string.h>

#include "shim.h"

#define WHOLE (1 << 30)
static _Atomic int table[FD_TABLE_SIZE]; /* object + 1, | WHOLE; 0: not ours */
static _Atomic uint32_t waited[FD_TABLE_SIZE]; /* ms this fd's calls spent waiting */

void fd_track(int fd, int object, bool whole)
{
    if (fd >= 0 && fd < FD_TABLE_SIZE) {
        atomic_store_explicit(&waited[fd], 0, memory_order_relaxed);
        atomic_store_explicit(&table[fd], (object + 1) | (whole ? WHOLE : 0),
                              memory_order_release);
    }
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
    if (fd >= 0 && fd < FD_TABLE_SIZE)
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
