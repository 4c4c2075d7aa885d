/* multi_pool.c: a client's idle curl multi handles, with the connections they keep open.
 *
 * A fetch thread runs one multi handle, and a multi handle keeps its connections open between
 * transfers. Without a pool each fetch (a lazy refetch, a direct read of a few MiB, a tar
 * header read) started new multi handles and so new connections, a TLS handshake each over
 * HTTPS. A fetch now takes its handles from its client and gives them back when it is freed.
 * libcurl's share interface would pool connections too, but not between threads that run at
 * once (libcurl 7.88: "not supported"); a multi handle is used by one thread at a time here,
 * and the pool's lock orders the hand-over. Few are kept: each holds up to prefetch.workers
 * idle sockets, and the fetches that profit most (small ones) run one or two threads.
 * A forked child never uses or closes its parent's pooled connections: two processes writing
 * requests into one socket (or a TLS close_notify from the child) would mix their replies. */
#include <curl/curl.h>
#include <unistd.h>

#include "internal.h"

void *multi_pool_take(ossc_client *c)
{
    CURLM *m = NULL;
    pthread_mutex_lock(&c->pool_lock);
    if (c->pool_pid != getpid()) { /* forked: the parent's, left alone (a small leak) */
        c->n_pooled = 0;
        c->pool_pid = getpid();
    }
    if (c->n_pooled > 0)
        m = c->pooled[--c->n_pooled];
    pthread_mutex_unlock(&c->pool_lock);
    return m ? m : curl_multi_init();
}

void multi_pool_give(ossc_client *c, void *multi)
{
    pthread_mutex_lock(&c->pool_lock);
    if (c->n_pooled < MULTI_POOL_MAX && c->pool_pid == getpid()) {
        c->pooled[c->n_pooled++] = multi;
        multi = NULL;
    }
    pthread_mutex_unlock(&c->pool_lock);
    if (multi)
        curl_multi_cleanup(multi);
}

void multi_pool_free(ossc_client *c)
{
    while (c->pool_pid == getpid() && c->n_pooled > 0)
        curl_multi_cleanup(c->pooled[--c->n_pooled]);
    pthread_mutex_destroy(&c->pool_lock);
}
