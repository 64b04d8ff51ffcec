/* trust.h — may pgr (run as root) load code or configuration from a path, or keep its private state
 * in a directory? Pure C (no Lua): the embedded searcher and pgr.sys both use it.
 *
 * Code and configuration (PGR_PATH, /etc/pgr/lua, the site file, procedures, secret files): the file
 * and the directories that hold it are owned by root or the effective user and are not writable by
 * group or others (a directory's sticky bit keeps others from replacing the entries it holds, as in
 * /tmp). Symbolic links are followed, and the link's own directory is checked too.
 *
 * Private state (the state directory, runs/, locks/): a real directory (not a symbolic link) owned
 * by the effective user with no permission for group or others (0700).
 *
 * Each returns 0 when the path may be trusted, -1 with why filled ("… is writable by others (mode
 * 0777): chmod o-w …"); a path that does not exist is -1 with errno ENOENT and why filled. */
#ifndef PGR_TRUST_H
#define PGR_TRUST_H

#include <stddef.h>

enum { PGR_TRUST_FILE = 0, PGR_TRUST_DIR = 1 };

int pgr_trust_path(const char *path, int kind, char *why, size_t cap);
int pgr_trust_private_dir(const char *path, char *why, size_t cap);

/* pgr holds passwords, tokens and keys in memory: no core dump may write them to disk. Sets the
 * core size limit to 0 and the process not dumpable (PR_SET_DUMPABLE, which also keeps other
 * users' debuggers out). 0, or -1 with errno. */
int pgr_forbid_core_dumps(void);

#endif
