/* xml.c: the two XML replies we read, parsed with expat: a ListObjectsV2 page and an
 * <Error> body. Both come from the network: every size and nesting is bounded. */
#include <expat.h>

/* Expat that deprecates XML_GetCurrentLineNumber (Debian 13's) has the 64-bit one. */
#ifdef XML_ATTR_DEPRECATED
#define CURRENT_LINE XML_GetCurrentLineNumber64
#else
#define CURRENT_LINE XML_GetCurrentLineNumber
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define MAX_DEPTH 8
#define MAX_TEXT 4096 /* keys are at most 1024 bytes, url-encoded at most 3x */

typedef struct parse_state {
    XML_Parser parser;
    char path[MAX_DEPTH][32]; /* element names from the root */
    int depth;
    strbuf text;
    bool too_long;
    /* list page */
    list_page *page;
    ossc_object cur;
    bool in_contents;
    char *cur_key;
    /* error body */
    char *code;
    size_t code_cap;
    char *msg;
    size_t msg_cap;
    int rc;
    ossc_error *err;
} parse_state;

static bool at(const parse_state *st, const char *parent, const char *leaf)
{
    return st->depth >= 2 && strcmp(st->path[st->depth - 1], leaf) == 0 &&
           strcmp(st->path[st->depth - 2], parent) == 0;
}

static void fail(parse_state *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(parse_state *st, const char *fmt, ...)
{
    if (st->rc)
        return;
    st->rc = OSSC_E_PROTOCOL;
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    err_set(st->err, OSSC_E_PROTOCOL, "%s", msg);
    XML_StopParser(st->parser, XML_FALSE);
}

static void XMLCALL on_start(void *ud, const XML_Char *name, const XML_Char **attrs)
{
    (void)attrs;
    parse_state *st = ud;
    if (st->depth >= MAX_DEPTH) {
        fail(st, "listing reply nests deeper than %d levels", MAX_DEPTH);
        return;
    }
    snprintf(st->path[st->depth++], sizeof(st->path[0]), "%s", name);
    st->text.len = 0;
    st->too_long = false;
    if (st->page && st->depth == 2 && strcmp(name, "Contents") == 0) {
        memset(&st->cur, 0, sizeof(st->cur));
        free(st->cur_key);
        st->cur_key = NULL;
        st->in_contents = true;
    }
}

static void XMLCALL on_text(void *ud, const XML_Char *s, int len)
{
    parse_state *st = ud;
    if (st->text.len + (size_t)len > MAX_TEXT) {
        st->too_long = true;
        return;
    }
    sb_append(&st->text, s, (size_t)len);
}

static bool parse_u64(const char *s, uint64_t *out)
{
    if (!s || *s < '0' || *s > '9')
        return false;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end)
        return false;
    *out = v;
    return true;
}

static void end_list_element(parse_state *st, const char *text)
{
    list_page *p = st->page;
    if (st->in_contents && at(st, "Contents", "Key")) {
        free(st->cur_key);
        st->cur_key = strdup(text);
    } else if (st->in_contents && at(st, "Contents", "Size")) {
        if (!parse_u64(text, &st->cur.size))
            fail(st, "listing reply has a bad <Size> '%.40s'", text);
    } else if (st->in_contents && at(st, "Contents", "ETag")) {
        snprintf(st->cur.etag, sizeof(st->cur.etag), "%s", text);
    } else if (st->depth == 2 && strcmp(st->path[1], "Contents") == 0) {
        st->in_contents = false;
        if (!st->cur_key) {
            fail(st, "listing reply has a <Contents> without a <Key>");
            return;
        }
        if (p->count == p->cap) {
            size_t cap = p->cap ? p->cap * 2 : 256;
            ossc_object *o = realloc(p->objects, cap * sizeof(*o));
            if (!o) {
                fail(st, "out of memory");
                return;
            }
            p->objects = o;
            p->cap = cap;
        }
        st->cur.key = st->cur_key;
        st->cur_key = NULL;
        p->objects[p->count++] = st->cur;
    } else if (st->depth == 2 && strcmp(st->path[1], "IsTruncated") == 0) {
        p->truncated = strcmp(text, "true") == 0;
    } else if (st->depth == 2 && strcmp(st->path[1], "NextContinuationToken") == 0) {
        free(p->next_token);
        p->next_token = strdup(text);
    } else if (st->depth == 2 && strcmp(st->path[1], "EncodingType") == 0) {
        p->url_encoded = strcmp(text, "url") == 0;
    }
}

static void XMLCALL on_end(void *ud, const XML_Char *name)
{
    (void)name;
    parse_state *st = ud;
    if (st->depth <= 0)
        return;
    sb_append(&st->text, "", 0);
    const char *text = st->text.data ? st->text.data : "";
    if (st->too_long)
        fail(st, "reply has an element longer than %d bytes", MAX_TEXT);
    else if (st->page)
        end_list_element(st, text);
    else if (st->depth == 2 && strcmp(st->path[0], "Error") == 0) {
        if (strcmp(st->path[1], "Code") == 0)
            snprintf(st->code, st->code_cap, "%s", text);
        else if (strcmp(st->path[1], "Message") == 0)
            snprintf(st->msg, st->msg_cap, "%s", text);
    }
    st->text.len = 0;
    st->depth--;
}

static int run_parser(parse_state *st, const char *xml, size_t len)
{
    st->parser = XML_ParserCreate("UTF-8");
    if (!st->parser)
        return OSSC_E_NOMEM;
    XML_SetUserData(st->parser, st);
    XML_SetElementHandler(st->parser, on_start, on_end);
    XML_SetCharacterDataHandler(st->parser, on_text);
    if (XML_Parse(st->parser, xml, (int)len, XML_TRUE) == XML_STATUS_ERROR && !st->rc) {
        st->rc = OSSC_E_PROTOCOL;
        err_set(st->err, OSSC_E_PROTOCOL, "malformed XML in reply: %s at line %lu",
                XML_ErrorString(XML_GetErrorCode(st->parser)),
                (unsigned long)CURRENT_LINE(st->parser));
    }
    XML_ParserFree(st->parser);
    sb_free(&st->text);
    free(st->cur_key);
    return st->rc;
}

void list_page_free(list_page *page)
{
    for (size_t i = 0; i < page->count; i++)
        free((char *)page->objects[i].key);
    free(page->objects);
    free(page->next_token);
    memset(page, 0, sizeof(*page));
}

/* Replaces a url-encoded string in place by its decoded form. */
bool decode_in_place(char **s)
{
    strbuf out;
    sb_init(&out);
    if (!url_decode(*s, &out) || out.oom || memchr(out.data, '\0', out.len)) {
        sb_free(&out);
        return false;
    }
    free(*s);
    *s = sb_steal(&out);
    return *s != NULL;
}

int xml_parse_list_page(const char *xml, size_t len, list_page *page, ossc_error *err)
{
    memset(page, 0, sizeof(*page));
    if (len > (size_t)64 << 20) {
        err_set(err, OSSC_E_PROTOCOL, "listing reply is larger than 64 MiB");
        return OSSC_E_PROTOCOL;
    }
    parse_state st;
    memset(&st, 0, sizeof(st));
    st.page = page;
    st.err = err;
    int rc = run_parser(&st, xml, len);
    if (rc == 0 && (st.depth != 0 || strcmp(st.path[0], "ListBucketResult") != 0)) {
        err_set(err, OSSC_E_PROTOCOL, "reply is not a ListBucketResult");
        rc = OSSC_E_PROTOCOL;
    }
    if (rc == 0 && page->truncated && (!page->next_token || !*page->next_token)) {
        err_set(err, OSSC_E_PROTOCOL, "listing is truncated but has no NextContinuationToken");
        rc = OSSC_E_PROTOCOL;
    }
    for (size_t i = 0; rc == 0 && page->url_encoded && i < page->count; i++) {
        if (!decode_in_place((char **)&page->objects[i].key)) {
            err_set(err, OSSC_E_PROTOCOL, "listing has a badly url-encoded key");
            rc = OSSC_E_PROTOCOL;
        }
    }
    if (rc)
        list_page_free(page);
    return rc;
}

void xml_parse_error(const char *xml, size_t len, char *code, size_t code_cap, char *msg,
                     size_t msg_cap)
{
    *code = '\0';
    *msg = '\0';
    if (!xml || len == 0 || len > 65536)
        return;
    parse_state st;
    memset(&st, 0, sizeof(st));
    ossc_error ignored;
    st.err = &ignored;
    st.code = code;
    st.code_cap = code_cap;
    st.msg = msg;
    st.msg_cap = msg_cap;
    run_parser(&st, xml, len);
}
