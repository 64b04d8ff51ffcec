/* cabundle.h — the CA bundle a TLS client trusts when its own configuration names none (no
 * kubeconfig certificate-authority, no S3 ca_bundle, no sslrootcert): found on the machine at hand,
 * since a static pgr runs on SUSE, RHEL and Debian alike. No Lua here.
 *
 * Order: $CURL_CA_BUNDLE, $SSL_CERT_FILE, the site file's ca_file (pgr_cabundle_set_site), then the
 * system paths below. A variable or ca_file that names a missing file is an error (not a silent
 * fall-through to another trust store); when no system path exists the error names every one. */
#ifndef PGR_CABUNDLE_H
#define PGR_CABUNDLE_H

#include <stddef.h>

/* SUSE (both), RHEL (both), Debian/Ubuntu: the PEM bundles of the system trust store */
#define PGR_CABUNDLE_SYSTEM_PATHS                                                                  \
    "/etc/ssl/ca-bundle.pem", "/var/lib/ca-certificates/ca-bundle.pem",                            \
        "/etc/pki/tls/certs/ca-bundle.crt", "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",   \
        "/etc/ssl/certs/ca-certificates.crt"

/* The system paths, NULL-terminated. */
extern const char *const pgr_cabundle_system_paths[];

/* The site file's ca_file (NULL or "" clears it); copied. Returns -1 when out of memory. */
int pgr_cabundle_set_site(const char *path);
/* Frees the copy (for leak checkers; the process may keep it). */
void pgr_cabundle_reset(void);

/* The bundle to use: 0 and its path in out (outsz bytes), or -1 and why in err (errsz bytes).
 * getenv_fn (NULL: getenv) and paths (NULL: the system paths) are for tests. */
int pgr_cabundle_find(char *out, size_t outsz, char *err, size_t errsz);
int pgr_cabundle_search(const char *(*getenv_fn)(const char *), const char *site_ca,
                        const char *const *paths, char *out, size_t outsz, char *err, size_t errsz);

#endif
