/* upload_xml.c: the XML of a multipart upload: the UploadId of InitiateMultipartUploadResult
 * (parsed with expat, bounded like every reply) and the CompleteMultipartUpload body we send. */
#include <expat.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

typedef struct id_state {
    int depth;
    bool in_id;   /* inside <UploadId> directly under the root */
    strbuf text;
    char root[48];
} id_state;

static void XMLCALL id_start(void *ud, const XML_Char *name, const XML_Char **attrs)
{
    (void)attrs;
    id_state *st = ud;
    if (st->depth == 0)
        snprintf(st->root, sizeof(st->root), "%s", name);
    st->depth++;
    st->in_id = st->depth == 2 && strcmp(name, "UploadId") == 0;
}

static void XMLCALL id_text(void *ud, const XML_Char *s, int len)
{
    id_state *st = ud;
    if (st->in_id && st->text.len + (size_t)len < 1024)
        sb_append(&st->text, s, (size_t)len);
}

static void XMLCALL id_end(void *ud, const XML_Char *name)
{
    (void)name;
    id_state *st = ud;
    st->depth--;
    st->in_id = false;
}

int xml_parse_upload_id(const char *xml, size_t len, char *out, size_t cap, ossc_error *err)
{
    id_state st;
    memset(&st, 0, sizeof(st));
    sb_init(&st.text);
    int rc = 0;
    XML_Parser p = XML_ParserCreate("UTF-8");
    if (!p || len > 65536) {
        rc = p ? OSSC_E_PROTOCOL : OSSC_E_NOMEM;
        goto out;
    }
    XML_SetUserData(p, &st);
    XML_SetElementHandler(p, id_start, id_end);
    XML_SetCharacterDataHandler(p, id_text);
    if (XML_Parse(p, xml ? xml : "", (int)len, XML_TRUE) != XML_STATUS_OK ||
        strcmp(st.root, "InitiateMultipartUploadResult") != 0 || st.text.oom ||
        st.text.len == 0 || st.text.len >= cap)
        rc = OSSC_E_PROTOCOL;
    else
        memcpy(out, st.text.data, st.text.len + 1);
out:
    if (p)
        XML_ParserFree(p);
    sb_free(&st.text);
    if (rc)
        err_set(err, rc, "initiating a multipart upload: the reply holds no UploadId");
    return rc;
}

void xml_complete_body(const char *const *etags, const char *const *crc32cs, size_t n_parts,
                       strbuf *out)
{
    sb_puts(out, "<CompleteMultipartUpload>");
    for (size_t i = 0; i < n_parts; i++) {
        /* ETags are quoted hex (or hex-N): nothing in them needs escaping but the quotes;
         * base64 needs none. */
        sb_printf(out, "<Part><PartNumber>%zu</PartNumber><ETag>", i + 1);
        for (const char *e = etags[i]; *e; e++)
            sb_puts(out, *e == '"' ? "&quot;" : (char[]){*e, 0});
        sb_puts(out, "</ETag>");
        if (crc32cs)
            sb_printf(out, "<ChecksumCRC32C>%s</ChecksumCRC32C>", crc32cs[i]);
        sb_puts(out, "</Part>");
    }
    sb_puts(out, "</CompleteMultipartUpload>");
}
