/* sigv4.c — AWS Signature Version 4 as declared in sigv4.h, on OpenSSL's SHA-256 and HMAC.
 * Checked against AWS's published test-suite vectors and S3 examples (tests/unit/test_sigv4.c). */
#include "sigv4.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A small growable string; a failed allocation makes it sticky-failed. */
typedef struct {
    char *s;
    size_t len, cap;
    int failed;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 512;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) {
            b->failed = 1;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
}

static void sb_str(sbuf *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

static void hex(const unsigned char *d, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[d[i] >> 4];
        out[2 * i + 1] = digits[d[i] & 15];
    }
    out[2 * n] = 0;
}

void pgr_sigv4_sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL);
    hex(md, 32, out);
}

void pgr_sigv4_amz_date(time_t t, char out[17])
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm);
}

static void hmac(const void *key, size_t klen, const char *msg, unsigned char out[32])
{
    unsigned int len = 32;
    HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)msg, strlen(msg), out, &len);
}

typedef struct {
    char *name;  /* lower-cased */
    char *value; /* normalised */
} hdr;

static int hdr_cmp(const void *a, const void *b)
{
    return strcmp(((const hdr *)a)->name, ((const hdr *)b)->name);
}

static int str_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Value trimmed, runs of spaces folded to one (the canonical form of a header value). */
static char *normalise_value(const char *v)
{
    char *out = malloc(strlen(v) + 1), *o = out;
    if (!out)
        return NULL;
    while (*v == ' ' || *v == '\t')
        v++;
    int space = 0;
    for (; *v; v++) {
        if (*v == ' ' || *v == '\t') {
            space = 1;
            continue;
        }
        if (space && o > out)
            *o++ = ' ';
        space = 0;
        *o++ = *v;
    }
    *o = 0;
    return out;
}

/* Canonical query: parameters sorted by name then value; "k" alone becomes "k=". */
static int canonical_query(sbuf *b, const char *query)
{
    if (!query || !*query)
        return 0;
    size_t n = 1;
    for (const char *p = query; *p; p++)
        n += *p == '&';
    char **params = calloc(n, sizeof *params);
    char *copy = strdup(query);
    if (!params || !copy) {
        free(params);
        free(copy);
        return -1;
    }
    size_t k = 0;
    for (char *save = NULL, *tok = strtok_r(copy, "&", &save); tok; tok = strtok_r(NULL, "&", &save))
        params[k++] = tok;
    /* sort by name first: compare with '=' treated as the smallest character */
    for (size_t i = 0; i < k; i++)
        for (char *p = params[i]; *p; p++)
            if (*p == '=') {
                *p = 1;
                break;
            }
    qsort(params, k, sizeof *params, str_cmp);
    for (size_t i = 0; i < k; i++) {
        if (i)
            sb_add(b, "&", 1);
        char *eq = strchr(params[i], 1);
        if (eq) {
            sb_add(b, params[i], (size_t)(eq - params[i]));
            sb_add(b, "=", 1);
            sb_str(b, eq + 1);
        } else {
            sb_str(b, params[i]);
            sb_add(b, "=", 1);
        }
    }
    free(params);
    free(copy);
    return 0;
}

int pgr_sigv4_sign(const pgr_sigv4_key *key, const char *method, const char *path, const char *query,
                   const pgr_sigv4_header *headers, size_t nheaders, const char *payload_sha256,
                   const char *amz_date, char *auth, size_t authsz, char signature[65])
{
    int rc = -1;
    sbuf creq = { 0 }, signed_names = { 0 }, sts = { 0 };
    hdr *hs = calloc(nheaders ? nheaders : 1, sizeof *hs);
    if (!hs)
        return -1;
    for (size_t i = 0; i < nheaders; i++) {
        hs[i].name = strdup(headers[i].name);
        hs[i].value = normalise_value(headers[i].value ? headers[i].value : "");
        if (!hs[i].name || !hs[i].value)
            goto out;
        for (char *p = hs[i].name; *p; p++)
            if (*p >= 'A' && *p <= 'Z')
                *p = (char)(*p + 32);
    }
    qsort(hs, nheaders, sizeof *hs, hdr_cmp);

    sb_str(&creq, method);
    sb_add(&creq, "\n", 1);
    sb_str(&creq, path && *path ? path : "/");
    sb_add(&creq, "\n", 1);
    if (canonical_query(&creq, query) != 0)
        goto out;
    sb_add(&creq, "\n", 1);
    for (size_t i = 0; i < nheaders; i++) {
        /* a repeated header is signed once, its values joined by commas */
        if (i > 0 && strcmp(hs[i].name, hs[i - 1].name) == 0) {
            creq.len--; /* drop the previous line's "\n" */
            sb_add(&creq, ",", 1);
            sb_str(&creq, hs[i].value);
            sb_add(&creq, "\n", 1);
            continue;
        }
        sb_str(&creq, hs[i].name);
        sb_add(&creq, ":", 1);
        sb_str(&creq, hs[i].value);
        sb_add(&creq, "\n", 1);
        if (signed_names.len)
            sb_add(&signed_names, ";", 1);
        sb_str(&signed_names, hs[i].name);
    }
    sb_add(&creq, "\n", 1);
    sb_str(&creq, signed_names.s ? signed_names.s : "");
    sb_add(&creq, "\n", 1);
    sb_str(&creq, payload_sha256);
    if (creq.failed || signed_names.failed || strlen(amz_date) < 8)
        goto out;

    char date[9];
    memcpy(date, amz_date, 8);
    date[8] = 0;
    char creq_hash[65];
    pgr_sigv4_sha256_hex(creq.s, creq.len, creq_hash);
    sb_str(&sts, "AWS4-HMAC-SHA256\n");
    sb_str(&sts, amz_date);
    sb_add(&sts, "\n", 1);
    char scope[256];
    snprintf(scope, sizeof scope, "%s/%s/%s/aws4_request", date, key->region, key->service);
    sb_str(&sts, scope);
    sb_add(&sts, "\n", 1);
    sb_str(&sts, creq_hash);
    if (sts.failed)
        goto out;

    /* signing key: HMAC chain over date, region, service, "aws4_request" */
    size_t slen = strlen(key->secret_key);
    char *k0 = malloc(slen + 5);
    if (!k0)
        goto out;
    memcpy(k0, "AWS4", 4);
    memcpy(k0 + 4, key->secret_key, slen + 1);
    unsigned char k1[32], k2[32], k3[32], k4[32], sig[32];
    hmac(k0, slen + 4, date, k1);
    OPENSSL_cleanse(k0, slen + 4);
    free(k0);
    hmac(k1, 32, key->region, k2);
    hmac(k2, 32, key->service, k3);
    hmac(k3, 32, "aws4_request", k4);
    hmac(k4, 32, sts.s, sig);
    OPENSSL_cleanse(k4, sizeof k4);
    char sighex[65];
    hex(sig, 32, sighex);
    if (signature)
        memcpy(signature, sighex, 65);
    int n = snprintf(auth, authsz, "AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s",
                     key->access_key, scope, signed_names.s ? signed_names.s : "", sighex);
    if (n > 0 && (size_t)n < authsz)
        rc = 0;
out:
    for (size_t i = 0; i < nheaders; i++) {
        free(hs[i].name);
        free(hs[i].value);
    }
    free(hs);
    free(creq.s);
    free(signed_names.s);
    free(sts.s);
    return rc;
}
