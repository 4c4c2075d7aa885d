/* sink_reserve.c: reserving a large mapped item's pages in a thread of its own, ahead of the
 * copies into them.
 *
 * A tmpfs file's pages are allocated one writer at a time (sink_map.c): fallocate takes the
 * inode lock, and faults that allocate contend on the file's page-cache locks. On a 16-core
 * machine one fallocate allocates 7-9 GB/s. Reserving a 2 GiB shard in one call held all its
 * transfers for 0.25-0.4 s (and a 8.6 GB object for over a second); each fetch thread reserving
 * its own chunk before its transfer put 16 threads on the inode lock, spinning (the model 0.93x,
 * the single object 0.72x that speed at 2x the sys CPU, scripts/tmpfs_sink_bench.c and
 * docs/BENCHMARKS.md). So one thread per item does all of it, chunk by chunk, in the order the
 * transfers start (a reader's jump of the queue is reserved next, not after the bytes before
 * it), and a transfer's first bytes wait for its chunk's reservation; the copies into reserved
 * pages run in parallel. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "internal.h"

enum slot_state { RS_NONE, RS_PENDING, RS_DONE };

typedef struct reservation {
    uint32_t slot;
    uint64_t offset, length;
} reservation;

struct sink_reserver {
    int fd;
    pthread_t thread;
    bool started;
    pthread_mutex_t lock;
    pthread_cond_t work, done;
    bool stopping;
    reservation *fifo;     /* at most one request per slot, so n_slots long */
    uint32_t head, count, n_slots;
    unsigned char *state;  /* enum slot_state per slot */
    int *result;           /* the reservation's errno once RS_DONE (0: reserved) */
};

static void *reserver_main(void *arg)
{
    sink_reserver *r = arg;
    pthread_mutex_lock(&r->lock);
    for (;;) {
        while (!r->count && !r->stopping)
            pthread_cond_wait(&r->work, &r->lock);
        if (r->stopping)
            break;
        reservation q = r->fifo[r->head];
        r->head = (r->head + 1) % r->n_slots;
        r->count--;
        pthread_mutex_unlock(&r->lock);
        int rc = sink_map_reserve(r->fd, q.offset, q.length);
        pthread_mutex_lock(&r->lock);
        r->result[q.slot] = rc;
        r->state[q.slot] = RS_DONE;
        pthread_cond_broadcast(&r->done);
    }
    pthread_mutex_unlock(&r->lock);
    return NULL;
}

sink_reserver *sink_reserver_start(int fd, uint32_t n_slots)
{
    sink_reserver *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->fd = fd;
    r->n_slots = n_slots;
    r->fifo = calloc(n_slots, sizeof(*r->fifo));
    r->state = calloc(n_slots, 1);
    r->result = calloc(n_slots, sizeof(int));
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->work, NULL);
    pthread_cond_init(&r->done, NULL);
    r->started = r->fifo && r->state && r->result &&
                 pthread_create(&r->thread, NULL, reserver_main, r) == 0;
    if (!r->started) {
        sink_reserver_stop(r);
        return NULL;
    }
    return r;
}

void sink_reserver_request(sink_reserver *r, uint32_t slot, uint64_t offset, uint64_t length)
{
    pthread_mutex_lock(&r->lock);
    if (r->state[slot] == RS_NONE) {
        r->fifo[(r->head + r->count) % r->n_slots] = (reservation){slot, offset, length};
        r->count++;
        r->state[slot] = RS_PENDING;
        pthread_cond_signal(&r->work);
    }
    pthread_mutex_unlock(&r->lock);
}

int sink_reserver_wait(sink_reserver *r, uint32_t slot)
{
    pthread_mutex_lock(&r->lock);
    while (r->state[slot] == RS_PENDING && !r->stopping)
        pthread_cond_wait(&r->done, &r->lock);
    int rc = r->state[slot] == RS_DONE ? r->result[slot] : ENOENT;
    pthread_mutex_unlock(&r->lock);
    return rc;
}

void sink_reserver_stop(sink_reserver *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->lock);
    r->stopping = true;
    pthread_cond_broadcast(&r->work);
    pthread_cond_broadcast(&r->done);
    pthread_mutex_unlock(&r->lock);
    if (r->started)
        pthread_join(r->thread, NULL);
    pthread_mutex_destroy(&r->lock);
    pthread_cond_destroy(&r->work);
    pthread_cond_destroy(&r->done);
    free(r->fifo);
    free(r->state);
    free(r->result);
    free(r);
}
