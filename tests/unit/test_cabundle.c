/* test_cabundle.c — host/cabundle.c: which CA bundle a connection without its own CA trusts:
 * $CURL_CA_BUNDLE, $SSL_CERT_FILE, the site's ca_file, then the system paths in order; a named file
 * that is missing is an error naming it; no system bundle is an error naming every path tried. */
#include "cabundle.h"
#include "tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *env_curl, *env_ssl;

static const char *fake_getenv(const char *name)
{
    if (strcmp(name, "CURL_CA_BUNDLE") == 0)
        return env_curl;
    if (strcmp(name, "SSL_CERT_FILE") == 0)
        return env_ssl;
    return NULL;
}

static void touch(const char *path)
{
    FILE *f = fopen(path, "w");
    if (f) {
        fputs("-----BEGIN CERTIFICATE-----\n", f);
        fclose(f);
    }
}

int main(void)
{
    char dir[] = "/tmp/pgr-cabundle.XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    char suse[256], rhel[256], debian[256], site[256], env[256], sub[256];
    snprintf(suse, sizeof suse, "%s/suse.pem", dir);
    snprintf(rhel, sizeof rhel, "%s/rhel.crt", dir);
    snprintf(debian, sizeof debian, "%s/debian.crt", dir);
    snprintf(site, sizeof site, "%s/site.pem", dir);
    snprintf(env, sizeof env, "%s/env.pem", dir);
    snprintf(sub, sizeof sub, "%s/adir", dir);
    const char *paths[] = { suse, rhel, debian, NULL };
    char out[512], err[512];

    int rc = pgr_cabundle_search(fake_getenv, NULL, paths, out, sizeof out, err, sizeof err);
    CHECK_INT(rc, -1, "no bundle anywhere: an error");
    CHECK(strstr(err, suse) && strstr(err, rhel) && strstr(err, debian), "the error names every path tried");
    CHECK(strstr(err, "SSL_CERT_FILE") && strstr(err, "ca_file"), "the error says how to name one");

    touch(debian);
    rc = pgr_cabundle_search(fake_getenv, NULL, paths, out, sizeof out, err, sizeof err);
    CHECK(rc == 0 && strcmp(out, debian) == 0, "the only system bundle present is found");
    touch(rhel);
    rc = pgr_cabundle_search(fake_getenv, NULL, paths, out, sizeof out, err, sizeof err);
    CHECK(rc == 0 && strcmp(out, rhel) == 0, "an earlier system path wins");
    mkdir(sub, 0700);
    const char *dir_first[] = { sub, rhel, NULL };
    rc = pgr_cabundle_search(fake_getenv, NULL, dir_first, out, sizeof out, err, sizeof err);
    CHECK(rc == 0 && strcmp(out, rhel) == 0, "a directory where a bundle is expected is skipped");

    touch(site);
    rc = pgr_cabundle_search(fake_getenv, site, paths, out, sizeof out, err, sizeof err);
    CHECK(rc == 0 && strcmp(out, site) == 0, "the site's ca_file wins over the system paths");
    unlink(site);
    rc = pgr_cabundle_search(fake_getenv, site, paths, out, sizeof out, err, sizeof err);
    CHECK(rc == -1 && strstr(err, site) && strstr(err, "ca_file"),
          "a missing ca_file is an error naming it, not a fall-through");

    touch(env);
    env_ssl = env;
    touch(site);
    rc = pgr_cabundle_search(fake_getenv, site, paths, out, sizeof out, err, sizeof err);
    CHECK(rc == 0 && strcmp(out, env) == 0, "SSL_CERT_FILE wins over ca_file");
    env_curl = rhel;
    rc = pgr_cabundle_search(fake_getenv, site, paths, out, sizeof out, err, sizeof err);
    CHECK(rc == 0 && strcmp(out, rhel) == 0, "CURL_CA_BUNDLE wins over SSL_CERT_FILE");
    env_curl = "";
    rc = pgr_cabundle_search(fake_getenv, site, paths, out, sizeof out, err, sizeof err);
    CHECK(rc == 0 && strcmp(out, env) == 0, "an empty variable counts as unset");
    unlink(env);
    rc = pgr_cabundle_search(fake_getenv, site, paths, out, sizeof out, err, sizeof err);
    CHECK(rc == -1 && strstr(err, env) && strstr(err, "$SSL_CERT_FILE"),
          "SSL_CERT_FILE naming a missing file is an error naming the variable");
    env_ssl = NULL;

    /* the process-wide entry point: the site's ca_file set and cleared */
    CHECK_INT(pgr_cabundle_set_site(site), 0, "set_site");
    unsetenv("CURL_CA_BUNDLE");
    unsetenv("SSL_CERT_FILE");
    rc = pgr_cabundle_find(out, sizeof out, err, sizeof err);
    CHECK(rc == 0 && strcmp(out, site) == 0, "find uses the site's ca_file");
    pgr_cabundle_set_site(NULL);
    rc = pgr_cabundle_find(out, sizeof out, err, sizeof err);
    CHECK(rc == -1 || strcmp(out, site) != 0, "cleared: the site's file is not used any more");
    pgr_cabundle_reset();

    unlink(suse);
    unlink(rhel);
    unlink(debian);
    unlink(site);
    rmdir(sub);
    rmdir(dir);
    return tap_done();
}
