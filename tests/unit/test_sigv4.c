/* test_sigv4.c — the SigV4 signer (host/sigv4.c) against published vectors: AWS's Signature V4
 * test suite (docs.aws.amazon.com/general/latest/gr/signature-v4-test-suite.html, aws-sig-v4-test-suite
 * get-vanilla*) and the worked S3 examples of "Signature Calculations for the Authorization Header"
 * (docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html). */
#include "sigv4.h"
#include "tap.h"

#include <string.h>

static const pgr_sigv4_key suite = { "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "us-east-1",
                                     "service" };
static const pgr_sigv4_key s3doc = { "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                                     "us-east-1", "s3" };

static const char *sign(const pgr_sigv4_key *k, const char *method, const char *path, const char *query,
                        const pgr_sigv4_header *h, size_t n, const char *payload, const char *date)
{
    static char auth[1024], sig[65];
    if (pgr_sigv4_sign(k, method, path, query, h, n, payload, date, auth, sizeof auth, sig) != 0)
        return "(failed)";
    return sig;
}

int main(void)
{
    char hexbuf[65];
    pgr_sigv4_sha256_hex("", 0, hexbuf);
    CHECK_STR(hexbuf, PGR_SIGV4_EMPTY_SHA256, "sha256 of the empty payload");
    char date[17];
    pgr_sigv4_amz_date(1369353600, date); /* 2013-05-24 00:00:00 UTC */
    CHECK_STR(date, "20130524T000000Z", "x-amz-date format");

    pgr_sigv4_header vanilla[] = { { "Host", "example.amazonaws.com" }, { "X-Amz-Date", "20150830T123600Z" } };
    CHECK_STR(sign(&suite, "GET", "/", "", vanilla, 2, PGR_SIGV4_EMPTY_SHA256, "20150830T123600Z"),
              "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31", "suite get-vanilla");
    CHECK_STR(sign(&suite, "GET", "/", "Param2=value2&Param1=value1", vanilla, 2, PGR_SIGV4_EMPTY_SHA256,
                   "20150830T123600Z"),
              "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
              "suite get-vanilla-query-order-key-case (query sorted)");

    char auth[1024];
    pgr_sigv4_sign(&suite, "GET", "/", NULL, vanilla, 2, PGR_SIGV4_EMPTY_SHA256, "20150830T123600Z", auth,
                   sizeof auth, NULL);
    CHECK_STR(auth,
              "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
              "SignedHeaders=host;x-amz-date, "
              "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
              "suite get-vanilla Authorization header");
    CHECK(pgr_sigv4_sign(&suite, "GET", "/", NULL, vanilla, 2, PGR_SIGV4_EMPTY_SHA256, "20150830T123600Z",
                         auth, 40, NULL) == -1,
          "too small an output buffer is an error, not a truncated header");

    const char *d = "20130524T000000Z";
    pgr_sigv4_header get[] = { { "Host", "examplebucket.s3.amazonaws.com" },
                               { "Range", "bytes=0-9" },
                               { "x-amz-content-sha256", PGR_SIGV4_EMPTY_SHA256 },
                               { "x-amz-date", d } };
    CHECK_STR(sign(&s3doc, "GET", "/test.txt", NULL, get, 4, PGR_SIGV4_EMPTY_SHA256, d),
              "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41", "S3 example: GET object with Range");

    char body_hash[65];
    pgr_sigv4_sha256_hex("Welcome to Amazon S3.", 21, body_hash);
    CHECK_STR(body_hash, "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072", "S3 example: payload hash");
    pgr_sigv4_header put[] = { { "Date", "Fri, 24 May 2013 00:00:00 GMT" },
                               { "Host", "examplebucket.s3.amazonaws.com" },
                               { "x-amz-date", d },
                               { "x-amz-storage-class", "REDUCED_REDUNDANCY" },
                               { "x-amz-content-sha256", body_hash } };
    CHECK_STR(sign(&s3doc, "PUT", "/test%24file.text", NULL, put, 5, body_hash, d),
              "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd",
              "S3 example: PUT object, key percent-encoded");

    pgr_sigv4_header lst[] = { { "Host", "examplebucket.s3.amazonaws.com" },
                               { "x-amz-content-sha256", PGR_SIGV4_EMPTY_SHA256 },
                               { "x-amz-date", d } };
    CHECK_STR(sign(&s3doc, "GET", "/", "lifecycle", lst, 3, PGR_SIGV4_EMPTY_SHA256, d),
              "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543",
              "S3 example: GET ?lifecycle (valueless parameter)");
    CHECK_STR(sign(&s3doc, "GET", "/", "max-keys=2&prefix=J", lst, 3, PGR_SIGV4_EMPTY_SHA256, d),
              "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
              "S3 example: list objects (max-keys, prefix)");
    CHECK_STR(sign(&s3doc, "GET", "/", "prefix=J&max-keys=2", lst, 3, PGR_SIGV4_EMPTY_SHA256, d),
              "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
              "query order does not change the signature");

    /* a header value's spaces are folded, so these sign the same */
    pgr_sigv4_header sp[] = { { "Host", "examplebucket.s3.amazonaws.com" },
                              { "Range", "  bytes=0-9  " },
                              { "x-amz-content-sha256", PGR_SIGV4_EMPTY_SHA256 },
                              { "x-amz-date", d } };
    CHECK_STR(sign(&s3doc, "GET", "/test.txt", NULL, sp, 4, PGR_SIGV4_EMPTY_SHA256, d),
              "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41", "header values are trimmed");
    pgr_sigv4_key wrong = s3doc;
    wrong.secret_key = "not-the-secret";
    CHECK(strcmp(sign(&wrong, "GET", "/test.txt", NULL, get, 4, PGR_SIGV4_EMPTY_SHA256, d),
                 "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41") != 0,
          "another secret gives another signature");
    return tap_done();
}
