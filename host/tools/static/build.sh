#!/usr/bin/env bash
# host/tools/static/build.sh — the libraries of the static pgr, built from Debian 12's own source
# packages with musl-gcc into build/static/prefix, each with only the features pgr uses.
#
#   host/tools/static/build.sh            fetch, verify, build what is not built yet (make static)
#   host/tools/static/build.sh verify DSC DIR   unpack DSC into DIR, failing on any checksum mismatch
#   host/tools/static/build.sh versions   the source package versions of the last build
#
# Sources: `apt-get source --download-only` (apt checks every file against the signed Sources
# index), then `dpkg-source -x` checks them against the .dsc's checksums and applies Debian's
# patches; any mismatch stops the build. The version is the one the dynamic build links (the
# installed package's source version) when the archive still serves it, else the newest one it
# serves (a security update superseded it). build/static/stamps/NAME holds the version built, so a
# second run builds nothing and an updated source version rebuilds that library (and what uses it).
set -euo pipefail
cd "$(dirname "$0")/../../.."
ROOT=$PWD
S=$ROOT/build/static
SRC=$S/src          # downloaded .dsc and tarballs
BLD=$S/build        # unpacked, patched, built trees
P=$S/prefix         # headers and static libraries the pgr link uses
STAMPS=$S/stamps
JOBS=${JOBS:-$(nproc)}
# the build of each library runs its own make: not the jobserver of the make that called us
unset MAKEFLAGS MFLAGS MAKELEVEL
export LC_ALL=C
CC=musl-gcc
# no -fPIE: the binary is static and not position-independent, so it has no dynamic section
CFLAGS_BASE="-O2 -g0 -fstack-protector-strong -fno-plt -ffunction-sections -fdata-sections"
export PKG_CONFIG_LIBDIR=$P/lib/pkgconfig PKG_CONFIG_PATH=

log() { printf 'static: %s\n' "$*" >&2; }
die() { printf 'static: %s\n' "$*" >&2; exit 1; }

# unpack DSC into DIR: dpkg-source verifies the files' sizes and checksums against the .dsc
verify() {
  local dsc=$1 dir=$2
  rm -rf "$dir" "$dir.tmp"
  if ! dpkg-source --require-strong-checksums -x "$dsc" "$dir.tmp" >"$dir.log" 2>&1; then
    cat "$dir.log" >&2
    rm -rf "$dir.tmp"
    die "$(basename "$dsc"): unpacking or checksum verification failed (see above); nothing built from it"
  fi
  mv "$dir.tmp" "$dir"
}

# The source version to build: the installed binary package's source version if apt can fetch it,
# else the others apt knows, newest first. Prints the version; downloads into $SRC.
fetch() {
  local src=$1 bin=$2 inst cand v
  inst=$(dpkg-query -W -f='${source:Version}' "$bin" 2>/dev/null || true)
  cand=$(apt-cache showsrc "$src" 2>/dev/null |
         awk -v s="$src" '/^Package: /{p=$2} /^Version: /{ if (p == s) print $2 }' | sort -u |
         sort -r -V)
  [ -n "$cand" ] || die "apt knows no source package $src (host/tools/static/deps.sh adds deb-src; apt-get update?)"
  local tried=""
  for v in $inst $cand; do
    case " $(echo $cand) " in *" $v "*) ;; *) continue ;; esac
    case " $tried " in *" $v "*) continue ;; esac
    tried="$tried $v"
    if [ -f "$SRC/${src}_${v#*:}.dsc" ] || (cd "$SRC" && apt-get source -qq --download-only "$src=$v" \
         >"$SRC/$src.fetch.log" 2>&1); then
      [ "$v" = "$inst" ] || log "$src: the dynamic build's $inst is not served; building $v"
      echo "$v"
      return 0
    fi
    log "$src $v: not fetched ($(grep -m1 '^E:' "$SRC/$src.fetch.log" || echo '?'))"
  done
  die "$src: no source version could be fetched (tried: ${inst:+$inst }$(echo $cand))"
}

# A library's recipe: its build function's text, so a changed recipe rebuilds it
recipe() { declare -f "build_$1" | sha1sum | cut -c1-12; }
# built NAME VERSION: whether NAME was built from VERSION with the current recipe
built() {
  [ -f "$STAMPS/$1" ] && [ "$(cut -d' ' -f1,3 "$STAMPS/$1")" = "$2 $(recipe "$1")" ]
}
# the stamp: the version built, the installed version it was chosen for, the recipe
stamp() {
  mkdir -p "$STAMPS" && echo "$2 $INST $(recipe "$1")" > "$STAMPS/$1"
  log "$1: built in $((SECONDS - T0)) s"
}

# prepare NAME SRCPKG BINPKG: fetches and unpacks; sets VER and DIR; returns 1 when already built
prepare() {
  local name=$1 src=$2 bin=$3 deps=${4:-}
  INST=$(dpkg-query -W -f='${source:Version}' "$bin" 2>/dev/null || true)
  # built before for the same installed version: no need to ask the archive again
  # (called as `prepare ... || return 0`, where set -e does not hold: every failure exits itself)
  if [ -f "$STAMPS/$name" ] && [ "$(cut -d' ' -f2 "$STAMPS/$name")" = "$INST" ]; then
    VER=$(cut -d' ' -f1 "$STAMPS/$name")
  else
    VER=$(fetch "$src" "$bin") || exit 1
  fi
  DIR=$BLD/$src-${VER#*:}
  echo "$name $src $VER" >> "$S/versions.new"
  # a library is rebuilt when its source version changed or a library it links was rebuilt
  local d rebuilt=0
  for d in $deps; do [ -f "$STAMPS/$d.new" ] && rebuilt=1; done
  if [ $rebuilt = 0 ] && built "$name" "$VER"; then return 1; fi
  log "$name: building from $src $VER"
  T0=$SECONDS
  verify "$SRC/${src}_${VER#*:}.dsc" "$DIR"
  touch "$STAMPS/$name.new"
  return 0
}

# musl's headers do not include the kernel's: the few libraries that want <linux/...> find them here
kernel_headers() {
  local k=$S/kernel-include
  if [ ! -d "$k" ]; then
    mkdir -p "$k.tmp"
    ln -s /usr/include/linux /usr/include/asm-generic "$k.tmp/"
    ln -s /usr/include/x86_64-linux-gnu/asm "$k.tmp/asm"
    mv "$k.tmp" "$k"
  fi
  echo "$k"
}

cmake_build() {   # cmake_build SOURCEDIR [-DOPT...]
  local src=$1; shift
  cmake -S "$src" -B "$DIR/_build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_COMPILER=$CC \
    -DCMAKE_C_FLAGS="$CFLAGS_BASE" -DCMAKE_INSTALL_PREFIX="$P" -DCMAKE_INSTALL_LIBDIR=lib \
    -DBUILD_SHARED_LIBS=OFF "$@" >"$DIR/cmake.log" 2>&1 || { tail -n 30 "$DIR/cmake.log"; exit 1; }
  cmake --build "$DIR/_build" -j "$JOBS" >"$DIR/make.log" 2>&1 || { tail -n 40 "$DIR/make.log"; exit 1; }
  cmake --install "$DIR/_build" >>"$DIR/make.log" 2>&1 || { tail -n 20 "$DIR/make.log"; exit 1; }
}

run() {   # run LOGNAME CMD...: the command's output goes to $DIR/LOGNAME.log, shown on failure
  local l=$1; shift
  "$@" >"$DIR/$l.log" 2>&1 || { tail -n 40 "$DIR/$l.log"; die "$(basename "$DIR"): $l failed ($DIR/$l.log)"; }
}

build_zlib() {
  prepare zlib zlib zlib1g || return 0
  (cd "$DIR" && CC=$CC CFLAGS="$CFLAGS_BASE" run configure ./configure --static --prefix="$P" &&
   run make make -j"$JOBS" libz.a && run install make install)
  stamp zlib "$VER"
}

build_openssl() {
  # TLS 1.2/1.3 clients with the usual ciphers; no engines, modules, legacy or exotic algorithms.
  # OPENSSLDIR is pgr's own, so a distribution's openssl.cnf (SUSE's, RHEL's crypto policies for
  # their own OpenSSL build) is never read by this one; CA bundles are found by pgr (cabundle.c).
  prepare openssl openssl libssl3 zlib || return 0
  (cd "$DIR" && run configure ./Configure linux-x86_64 --prefix="$P" --libdir=lib \
      --openssldir=/etc/pgr/openssl no-shared no-module no-dso no-engine no-afalgeng no-async \
      no-comp no-tests no-ui-console no-ssl3 no-weak-ssl-ciphers no-legacy no-dtls no-srp \
      no-idea no-mdc2 no-rc5 no-seed no-whirlpool no-camellia no-aria no-sm2 no-sm3 no-sm4 \
      no-bf no-cast no-rc2 no-gost no-siphash no-cmp no-ts no-srtp no-sctp no-fips \
      CC=$CC CFLAGS="$CFLAGS_BASE -isystem $(kernel_headers)" &&
   run make make -j"$JOBS" build_libs && run install make install_dev)
  stamp openssl "$VER"
}

build_curl() {
  # HTTP and HTTPS over OpenSSL with zlib; the threaded resolver (getaddrinfo in a thread, so
  # timeouts hold), which under musl reads /etc/hosts and asks the resolv.conf servers itself (no
  # NSS). No CA path compiled in: pgr finds the bundle on each system (host/cabundle.c).
  prepare curl curl libcurl4 "zlib openssl" || return 0
  (cd "$DIR" && run configure ./configure --prefix="$P" --disable-shared --enable-static \
      --with-openssl="$P" --with-zlib="$P" --enable-threaded-resolver --enable-ipv6 \
      --without-ca-bundle --without-ca-path --without-ca-fallback \
      --disable-ldap --disable-ldaps --disable-rtsp --disable-dict --disable-telnet \
      --disable-tftp --disable-pop3 --disable-imap --disable-smb --disable-smtp --disable-gopher \
      --disable-mqtt --disable-ftp --disable-file --disable-ntlm --disable-ntlm-wb \
      --disable-manual --disable-docs --disable-alt-svc --disable-hsts --disable-cookies \
      --disable-doh --disable-netrc --disable-dateparse --disable-progress-meter \
      --disable-unix-sockets --disable-websockets --disable-aws \
      --without-libpsl --without-brotli --without-zstd --without-libidn2 --without-librtmp \
      --without-libssh2 --without-libssh --without-nghttp2 --without-ngtcp2 --without-nghttp3 \
      --without-quiche --without-msh3 --without-gssapi --without-hyper --without-libgsasl \
      CC=$CC CFLAGS="$CFLAGS_BASE" CPPFLAGS="-I$P/include" LDFLAGS="-L$P/lib" &&
   run make make -j"$JOBS" -C lib && run install make -C lib install &&
   run install-headers make -C include install)
  stamp curl "$VER"
}

build_libpq() {
  # Only libpq (and the two PostgreSQL libraries it links); TLS by OpenSSL; nothing else.
  prepare libpq postgresql-15 libpq5 openssl || return 0
  (cd "$DIR" && run configure ./configure --prefix="$P" --with-openssl --without-readline \
      --without-zlib --without-icu --without-gssapi --without-ldap --without-pam \
      --without-libxml --without-libxslt --without-systemd --without-llvm --without-lz4 \
      --without-zstd --without-selinux --without-perl --without-python --without-tcl \
      --disable-nls --disable-rpath \
      CC=$CC CFLAGS="$CFLAGS_BASE" CPPFLAGS="-I$P/include" LDFLAGS="-L$P/lib" &&
   run headers make -C src/backend generated-headers &&
   run make-common make -j"$JOBS" -C src/common libpgcommon_shlib.a &&
   run make-port make -j"$JOBS" -C src/port libpgport_shlib.a &&
   run make make -j"$JOBS" -C src/interfaces/libpq all-static-lib &&
   install -m 0644 src/interfaces/libpq/libpq.a "$P/lib/" &&
   install -m 0644 src/common/libpgcommon_shlib.a "$P/lib/libpgcommon.a" &&
   install -m 0644 src/port/libpgport_shlib.a "$P/lib/libpgport.a" &&
   install -m 0644 src/interfaces/libpq/libpq-fe.h src/include/postgres_ext.h \
      src/include/pg_config_ext.h "$P/include/")
  stamp libpq "$VER"
}

build_ncurses() {
  # Only the terminfo library readline needs (libtinfo). Terminal descriptions are read from the
  # directories SUSE, RHEL and Debian keep them in; the common ones are compiled in, so a machine
  # (or a chroot) without a terminfo database still edits lines properly.
  prepare ncurses ncurses libtinfo6 || return 0
  local fb="" t
  for t in xterm-256color xterm xterm-color screen screen-256color tmux tmux-256color linux \
           vt100 vt220 rxvt rxvt-unicode dumb; do
    infocmp "$t" >/dev/null 2>&1 && fb="$fb${fb:+,}$t"
  done
  (cd "$DIR" && run configure ./configure --prefix="$P" --without-shared --with-normal \
      --without-debug --without-profile --without-cxx --without-cxx-binding --without-ada \
      --without-progs --without-tests --without-manpages --disable-db-install --with-termlib \
      --without-gpm --without-dlsym --enable-const \
      --with-terminfo-dirs=/etc/terminfo:/usr/share/terminfo:/lib/terminfo:/usr/lib/terminfo \
      --with-default-terminfo-dir=/usr/share/terminfo --with-fallbacks="$fb" \
      --with-tic-path=/usr/bin/tic --with-infocmp-path=/usr/bin/infocmp \
      CC=$CC CFLAGS="$CFLAGS_BASE" &&
   run make make -j"$JOBS" -C ncurses libs && run install make -C include install &&
   run install-lib make -C ncurses install.libs)
  stamp ncurses "$VER"
}

build_readline() {
  prepare readline readline libreadline8 ncurses || return 0
  (cd "$DIR" && run configure ./configure --prefix="$P" --disable-shared --enable-static \
      --with-curses --disable-install-examples CC=$CC CFLAGS="$CFLAGS_BASE" \
      CPPFLAGS="-I$P/include" LDFLAGS="-L$P/lib" &&
   run make make -j"$JOBS" static && run install make install-static install-headers)
  stamp readline "$VER"
}

build_lua() {
  # Debian's Lua (its patches: the system module paths, CVE fixes) with LUA_COMPAT_5_3 as Debian
  # builds it; LUA_USE_POSIX rather than LUA_USE_LINUX: a static binary cannot load C modules.
  prepare lua lua5.4 liblua5.4-0 || return 0
  (cd "$DIR/src" &&
   printf '#define DEB_HOST_MULTIARCH "x86_64-linux-gnu"\n' > lua5.4-deb-multiarch.h &&
   local o objs="" &&
   for c in lapi lcode lctype ldebug ldo ldump lfunc lgc llex lmem lobject lopcodes lparser \
            lstate lstring ltable ltm lundump lvm lzio lauxlib lbaselib lcorolib ldblib liolib \
            lmathlib loadlib loslib lstrlib ltablib lutf8lib linit; do
     o=$c.o; objs="$objs $o"
     $CC $CFLAGS_BASE -std=gnu99 -Wall -DLUA_COMPAT_5_3 -DLUA_USE_POSIX -c $c.c -o $o ||
       die "lua: $c.c did not compile"
   done &&
   rm -f liblua.a && ar rcs liblua.a $objs &&
   install -d "$P/include" "$P/lib" &&
   install -m 0644 lua.h luaconf.h lualib.h lauxlib.h lua.hpp lua5.4-deb-multiarch.h "$P/include/" &&
   install -m 0644 liblua.a "$P/lib/liblua.a")
  stamp lua "$VER"
}

build_cjson() {
  # no locale: numbers are printed and parsed with '.' whatever the environment says
  prepare cjson cjson libcjson1 || return 0
  cmake_build "$DIR" -DENABLE_CJSON_TEST=OFF -DENABLE_CJSON_UTILS=OFF -DENABLE_LOCALES=OFF \
    -DENABLE_CUSTOM_COMPILER_FLAGS=OFF -DENABLE_TARGET_EXPORT=OFF
  stamp cjson "$VER"
}

build_libyaml() {
  prepare libyaml libyaml libyaml-0-2 || return 0
  cmake_build "$DIR" -DBUILD_TESTING=OFF -DINSTALL_CMAKE_DIR=lib/cmake/yaml
  stamp libyaml "$VER"
}

build_expat() {
  # S3's listings need neither DTDs nor namespaces (XML_ParserCreate, element and text handlers)
  prepare expat expat libexpat1 || return 0
  cmake_build "$DIR/expat" -DEXPAT_BUILD_TOOLS=OFF -DEXPAT_BUILD_EXAMPLES=OFF \
    -DEXPAT_BUILD_TESTS=OFF -DEXPAT_BUILD_DOCS=OFF -DEXPAT_BUILD_FUZZERS=OFF \
    -DEXPAT_SHARED_LIBS=OFF -DEXPAT_BUILD_PKGCONFIG=OFF -DEXPAT_DTD=OFF -DEXPAT_NS=OFF
  stamp expat "$VER"
}

main() {
  command -v $CC >/dev/null || die "$CC is missing (host/tools/static/deps.sh installs musl-tools)"
  mkdir -p "$SRC" "$BLD" "$P/include" "$P/lib" "$STAMPS"
  rm -f "$S/versions.new" "$STAMPS"/*.new
  build_zlib
  build_openssl
  build_curl
  build_libpq
  build_ncurses
  build_readline
  build_lua
  build_cjson
  build_libyaml
  build_expat
  # prefix/.stamp is newer than pgr's objects whenever a library changed: make relinks pgr
  if ls "$STAMPS"/*.new >/dev/null 2>&1 || [ ! -f "$P/.stamp" ]; then touch "$P/.stamp"; fi
  rm -f "$STAMPS"/*.new
  mv "$S/versions.new" "$S/versions"
  version_header
}

# pgr_static.h: what `pgr version` says of the static build (rewritten only when it changes, so a
# rerun recompiles nothing)
version_header() {
  local musl srcs h=$P/include/pgr_static.h
  musl=$(dpkg-query -W -f='${Version}' musl-dev 2>/dev/null | sed 's/-[^-]*$//')
  srcs=$(awk '{ printf "%s%s %s", (NR > 1 ? ", " : ""), $2, $3 }' "$S/versions")
  { echo "/* generated by host/tools/static/build.sh */"
    echo "#define PGR_STATIC_LIBC \"musl ${musl:-?}\""
    echo "#define PGR_STATIC_SOURCES \"$srcs\""; } > "$h.tmp"
  if cmp -s "$h.tmp" "$h"; then rm -f "$h.tmp"; else mv "$h.tmp" "$h"; fi
}

case ${1:-} in
  "") main ;;
  verify) [ $# = 3 ] || die "usage: build.sh verify DSC DIR"; verify "$2" "$3" ;;
  versions) cat "$S/versions" ;;
  *) die "usage: build.sh [verify DSC DIR | versions]" ;;
esac
