/* test_trust.c — host/trust.c on real files: owners and modes of a file and of the directories
 * above it, symbolic links, /dev/null as an empty file, and private state directories. */
#include "trust.h"
#include "tap.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char base[] = "/tmp/pgr-trust-unit.XXXXXX";
static char why[512];

static const char *at(const char *rel)
{
    static char p[4][512];
    static int i;
    i = (i + 1) % 4;
    snprintf(p[i], sizeof p[i], "%s/%s", base, rel);
    return p[i];
}

static void touch(const char *path, mode_t mode)
{
    FILE *f = fopen(path, "w");
    if (f) {
        fputs("return {}\n", f);
        fclose(f);
    }
    chmod(path, mode);
}

static int trust_file(const char *p) { return pgr_trust_path(p, PGR_TRUST_FILE, why, sizeof why); }
static int trust_dir(const char *p) { return pgr_trust_path(p, PGR_TRUST_DIR, why, sizeof why); }

static int says(const char *text)
{
    if (strstr(why, text))
        return 1;
    printf("#   why: %s\n#   missing: %s\n", why, text);
    return 0;
}

int main(void)
{
    if (!mkdtemp(base))
        return 1;
    mkdir(at("etc"), 0755);
    touch(at("etc/site.lua"), 0644);
    CHECK_INT(trust_file(at("etc/site.lua")), 0, "a 0644 file in a 0755 directory is trusted");
    CHECK_INT(trust_dir(at("etc")), 0, "a 0755 directory is trusted");

    chmod(at("etc/site.lua"), 0664);
    CHECK(trust_file(at("etc/site.lua")) == -1 && says("is writable by its group (mode 0664): chmod g-w"),
          "a group-writable file is refused, with the chmod that fixes it");
    chmod(at("etc/site.lua"), 0646);
    CHECK(trust_file(at("etc/site.lua")) == -1 && says("writable by others (mode 0646): chmod o-w"),
          "a world-writable file is refused");
    chmod(at("etc/site.lua"), 0644);

    chmod(at("etc"), 0777);
    CHECK(trust_file(at("etc/site.lua")) == -1 && says("directory ") && says("/etc is writable by others"),
          "a good file in a world-writable directory is refused, naming the directory");
    CHECK(trust_dir(at("etc")) == -1 && says("chmod go-w"), "a world-writable directory is refused");
    chmod(at("etc"), 01777);
    CHECK_INT(trust_file(at("etc/site.lua")), 0, "a sticky directory (as /tmp) holding the file is fine");
    CHECK(trust_dir(at("etc")) == -1, "but not as a directory of code itself");
    chmod(at("etc"), 0755);

    /* a deeper directory that is writable: every directory above counts */
    mkdir(at("open"), 0777);
    chmod(at("open"), 0777);
    mkdir(at("open/lua"), 0755);
    mkdir(at("open/lua/pgr"), 0755);
    touch(at("open/lua/pgr/x.lua"), 0644);
    CHECK(trust_file(at("open/lua/pgr/x.lua")) == -1 && says("/open is writable by others"),
          "a directory two levels up that others may write is refused");
    CHECK(trust_dir(at("open/lua")) == -1, "a code directory under it too");

    /* a link to a good file, from a directory others may write: they could change the link */
    if (symlink(at("etc/site.lua"), at("open/site.lua")) == 0) {
        CHECK(trust_file(at("open/site.lua")) == -1 && says("/open is writable"),
              "a symbolic link in a writable directory is refused");
    }
    if (symlink(at("open/lua/pgr/x.lua"), at("etc/x.lua")) == 0) {
        CHECK(trust_file(at("etc/x.lua")) == -1, "a link from a good directory to a file under a writable one is refused");
    }

    CHECK_INT(trust_file("/dev/null"), 0, "/dev/null is an empty file, trusted");
    CHECK(trust_file(at("etc")) == -1 && says("not a regular file"), "a directory is not a file");
    CHECK(trust_dir(at("etc/site.lua")) == -1 && says("not a directory"), "a file is not a directory");
    errno = 0;
    CHECK(trust_file(at("etc/none.lua")) == -1 && errno == ENOENT && says("No such file"),
          "a missing file: ENOENT");

    if (geteuid() == 0) {
        chown(at("etc/site.lua"), 65534, 65534);
        CHECK(trust_file(at("etc/site.lua")) == -1 && says("is owned by uid 65534, neither root nor you"),
              "a file owned by another user is refused");
        chown(at("etc/site.lua"), 0, 0);
        chown(at("etc"), 65534, 65534);
        CHECK(trust_file(at("etc/site.lua")) == -1 && says("directory ") && says("owned by uid 65534"),
              "a file in a directory owned by another user is refused");
        chown(at("etc"), 0, 0);
    } else {
        printf("ok %d - # SKIP owners other than root need root\n", ++tap_n);
        printf("ok %d - # SKIP owners other than root need root\n", ++tap_n);
    }

    /* private state */
    mkdir(at("state"), 0700);
    CHECK_INT(pgr_trust_private_dir(at("state"), why, sizeof why), 0, "a 0700 directory of yours is private");
    chmod(at("state"), 0777);
    CHECK(pgr_trust_private_dir(at("state"), why, sizeof why) == -1 && says("open to others (mode 0777): chmod 0700"),
          "a 0777 state directory is refused");
    chmod(at("state"), 0750);
    CHECK(pgr_trust_private_dir(at("state"), why, sizeof why) == -1 && says("open to its group"),
          "a 0750 state directory is refused");
    chmod(at("state"), 0700);
    if (symlink(at("state"), at("state-link")) == 0) {
        CHECK(pgr_trust_private_dir(at("state-link"), why, sizeof why) == -1 && says("symbolic link"),
              "a symbolic link in place of a state directory is refused");
    }
    CHECK(pgr_trust_private_dir(at("etc/site.lua"), why, sizeof why) == -1 && says("not a directory"),
          "a file in place of a state directory is refused");
    if (geteuid() == 0) {
        chown(at("state"), 65534, 65534);
        CHECK(pgr_trust_private_dir(at("state"), why, sizeof why) == -1 && says("owned by uid 65534, not by you"),
              "a state directory owned by another user is refused");
    } else {
        printf("ok %d - # SKIP owners other than root need root\n", ++tap_n);
    }

    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", base);
    CHECK(system(cmd) == 0, "cleanup");
    return tap_done();
}
