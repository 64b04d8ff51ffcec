# pgr — build, test, install. pkg-config for every library; nothing generated is committed.
# `make` builds ./pgr; `make test` installs missing Debian packages, builds and runs every suite;
# `make test SANITIZE=1` does the same with AddressSanitizer + UBSan in build/asan.

# the first rule below is the static build's; a bare `make` must still build ./pgr
.DEFAULT_GOAL := all

PREFIX  ?= /usr/local
# suites run side by side by `make test` (tests/run): they mostly wait on their servers
JOBS    ?= 1
DESTDIR ?=
VERSION := 0.1.0

PKGS    := lua5.4 libcurl libcjson libpq yaml-0.1 expat readline zlib libcrypto
CC      ?= cc
CFLAGS  ?= -O2 -g
CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter \
           -fno-strict-aliasing -DPGR_VERSION='"$(VERSION)"'
LDLIBS  += -lm

ifeq ($(SANITIZE),1)
BUILD   := build/asan
CFLAGS  += -O1 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
PGR     := $(BUILD)/pgr
else
BUILD   := build/release
PGR     := pgr
endif

# Only evaluated once the packages are present (`make deps` installs them).
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)

# ---- static build (issue 14) ------------------------------------------------------------------
# `make static` builds build/static/pgr: x86_64, musl, statically linked (no dynamic section), its
# libraries built from Debian 12's source packages by host/tools/static/build.sh (build/static/prefix).
# `make test STATIC=1` runs the whole suite against it; `make release`, `make rpm` package it.
STATIC_PREFIX := $(abspath build/static/prefix)
ifeq ($(STATIC),1)
BUILD      := build/static
PGR        := $(BUILD)/pgr
CC         := musl-gcc
PKG_CFLAGS  = -I$(STATIC_PREFIX)/include -I$(STATIC_PREFIX)/include/cjson -DPGR_STATIC=1
PKG_LIBS    = -L$(STATIC_PREFIX)/lib -lcurl -lpq -lpgcommon -lpgport -lssl -lcrypto -lreadline \
              -ltinfo -lcjson -lyaml -lexpat -llua -lz -lpthread
LDFLAGS    += -static -Wl,--gc-sections
# valgrind cannot follow musl's allocator in a static binary; the plain build runs the units under it
export VALGRIND := 0
export STATIC
test: static-libs
# `pgr version` names the Debian sources the libraries were built from
$(BUILD)/sys.o: $(STATIC_PREFIX)/include/pgr_static.h
endif

.PHONY: static static-libs release rpm
static-libs:
	@host/tools/static/deps.sh
	@host/tools/static/build.sh

static: static-libs
	@$(MAKE) --no-print-directory STATIC=1 all
# ---- end of the static build's variables (its packaging targets are at the end) ----------------

HOST_SRC  := $(wildcard host/*.c)
HOST_HDR  := $(wildcard host/*.h)
LIB_OBJ   := $(patsubst host/%.c,$(BUILD)/%.o,$(filter-out host/main.c,$(HOST_SRC)))
LUA_SRC   := $(shell find lua -name '*.lua' | sort) $(sort $(wildcard services/*.lua))
UNIT_SRC  := $(wildcard tests/unit/test_*.c)
UNIT_BIN  := $(patsubst tests/unit/%.c,$(BUILD)/unit/%,$(UNIT_SRC))

.PHONY: all deps test test-long unit check-deps install uninstall clean demo bench fuzz

all: $(PGR)

deps:
	@tests/deps.sh

$(BUILD)/%.o: host/%.c $(HOST_HDR) | $(BUILD)
	$(CC) $(CFLAGS) $(PKG_CFLAGS) -Ihost -c $< -o $@

# Every luaopen_pgr_* function in host/*.c becomes a package.preload entry (pgr_x_y -> pgr.x.y).
$(BUILD)/preload.c: $(HOST_SRC) host/tools/gen_preload.sh | $(BUILD)
	sh host/tools/gen_preload.sh $(HOST_SRC) > $@.tmp && mv $@.tmp $@

# Every lua/**/*.lua is compiled into the binary as its source text.
$(BUILD)/bin2c: host/tools/bin2c.c | $(BUILD)
	$(CC) -O2 -Wall -Wextra -Werror -o $@ $<

$(BUILD)/embedded.c: $(LUA_SRC) $(BUILD)/bin2c
	$(BUILD)/bin2c lua $(LUA_SRC) > $@.tmp && mv $@.tmp $@

$(BUILD)/gen_%.o: $(BUILD)/%.c
	$(CC) $(CFLAGS) $(PKG_CFLAGS) -Ihost -c $< -o $@

$(BUILD)/libpgr.a: $(LIB_OBJ) $(BUILD)/gen_preload.o $(BUILD)/gen_embedded.o
	rm -f $@ && ar rcs $@ $^

$(PGR): $(BUILD)/main.o $(BUILD)/libpgr.a
	$(CC) $(LDFLAGS) -Wl,-E -o $@ $(BUILD)/main.o $(BUILD)/libpgr.a $(PKG_LIBS) $(LDLIBS)

$(BUILD)/unit/%: tests/unit/%.c tests/unit/tap.h $(BUILD)/libpgr.a | $(BUILD)
	@mkdir -p $(BUILD)/unit
	$(CC) $(CFLAGS) $(PKG_CFLAGS) -Ihost -Itests/unit $(LDFLAGS) -o $@ $< $(BUILD)/libpgr.a $(PKG_LIBS) $(LDLIBS)

unit: $(UNIT_BIN)

$(BUILD):
	@mkdir -p $@

test: deps
	$(MAKE) --no-print-directory all unit
	PGR=$(abspath $(PGR)) UNIT_DIR=$(abspath $(BUILD)/unit) SANITIZE=$(SANITIZE) JOBS=$(JOBS) tests/run $(SUITES)

# make test with the kill/resume matrix of all five services (make test runs Spire's and SLS's)
test-long:
	MATRIX_SERVICES="spire keycloak vcs hsm sls" $(MAKE) --no-print-directory test

demo: deps all
	@tests/demo.sh

bench: deps all
	@bench/run $(BENCH)

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/pgr/services
	install -m 0755 $(PGR) $(DESTDIR)$(PREFIX)/bin/pgr
	for f in services/*.lua; do [ -f "$$f" ] && install -m 0644 "$$f" $(DESTDIR)$(PREFIX)/share/pgr/services/ || true; done
	for f in etc/*.lua; do [ -f "$$f" ] && install -m 0644 "$$f" $(DESTDIR)$(PREFIX)/share/pgr/ || true; done

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/pgr
	rm -rf $(DESTDIR)$(PREFIX)/share/pgr

clean:
	rm -rf build pgr

# ---- static build (issue 14): packaging -------------------------------------------------------
# `make release`: build/dist/pgr-VERSION-linux-x86_64.tar.gz; `make rpm`: build/dist/pgr-VERSION-1.x86_64.rpm
DIST := build/dist
release: static
	@host/tools/static/release.sh build/static/pgr $(VERSION) $(DIST)

rpm: release
	@host/tools/static/rpm.sh $(DIST)/pgr-$(VERSION)-linux-x86_64.tar.gz $(VERSION) $(DIST)

# pgr's objects, binary and units follow the libraries: rebuilt when build.sh rebuilt one of them
ifeq ($(STATIC),1)
$(LIB_OBJ) $(BUILD)/main.o $(PGR) $(UNIT_BIN): $(STATIC_PREFIX)/.stamp
$(STATIC_PREFIX)/.stamp:
	@host/tools/static/deps.sh
	@host/tools/static/build.sh
endif
