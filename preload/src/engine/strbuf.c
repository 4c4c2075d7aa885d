/* strbuf.c: a growable string whose out-of-memory state is sticky, checked once at the end. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

void sb_init(strbuf *sb) { memset(sb, 0, sizeof(*sb)); }

void sb_free(strbuf *sb)
{
    free(sb->data);
    sb_init(sb);
}

static bool sb_reserve(strbuf *sb, size_t extra)
{
    if (sb->oom)
        return false;
    if (sb->len + extra + 1 <= sb->cap)
        return true;
    size_t cap = sb->cap ? sb->cap : 64;
    while (cap < sb->len + extra + 1)
        cap *= 2;
    char *p = realloc(sb->data, cap);
    if (!p) {
        sb->oom = true;
        return false;
    }
    sb->data = p;
    sb->cap = cap;
    return true;
}

void sb_append(strbuf *sb, const char *s, size_t n)
{
    if (!sb_reserve(sb, n))
        return;
    memcpy(sb->data + sb->len, s, n);
    sb->len += n;
    sb->data[sb->len] = '\0';
}

void sb_puts(strbuf *sb, const char *s) { sb_append(sb, s, strlen(s)); }

void sb_printf(strbuf *sb, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !sb_reserve(sb, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(sb->data + sb->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sb->len += (size_t)n;
}

char *sb_steal(strbuf *sb)
{
    if (sb->oom) {
        sb_free(sb);
        return NULL;
    }
    if (!sb->data)
        sb_reserve(sb, 0);
    char *p = sb->data;
    sb_init(sb);
    return p;
}
