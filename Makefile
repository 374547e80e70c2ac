# Thin wrapper over CMake: the commands of the README and CI.
#   make demo    the main job, on the embedded SQLite default
#   make test    everything: deps, build, the C, Lua and Python tests (ctest)
#   make bench   the benchmarks of ../shared/bench/WORKLOAD.md
#   make asan    the test suite built with ASan+UBSan
#   make valgrind  the C tests under valgrind
#   make fuzz    the libFuzzer targets (clang), FUZZ_SECONDS each; make fuzz-smoke: 10 s each (CI)
BUILD ?= build
PYTHON ?= /usr/bin/python3
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

# The Debian packages each target needs, and no more: make demo installs only the build's.
DEB_PACKAGES = cmake make gcc pkg-config libsqlite3-dev libcurl4-openssl-dev libcjson-dev \
	liblua5.4-dev lua5.4 python3-dev libssl-dev libmicrohttpd-dev
# make test: pytest, and what the pip install test needs (a venv with Debian's setuptools, build).
TEST_DEB_PACKAGES = python3-pytest python3-venv python3-pip python3-setuptools python3-wheel python3-build
BENCH_DEB_PACKAGES = nginx wrk
VALGRIND_DEB_PACKAGES = valgrind
# What make fuzz needs besides: clang and its runtime libraries (libFuzzer, the sanitizers).
FUZZ_DEB_PACKAGES = clang libclang-rt-dev

.PHONY: all deps test-deps bench-deps valgrind-deps fuzz-deps build test demo bench asan valgrind \
	fuzz fuzz-smoke install clean

all: build

# Installs the Debian packages that are missing (needs root and apt).
install_missing = @missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  mkdir -p $(BUILD); echo "installing:" $$missing "(log: $(BUILD)/apt.log)"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; } \
	    >$(BUILD)/apt.log 2>&1 || { tail -n 20 $(BUILD)/apt.log; echo "apt-get failed: see $(BUILD)/apt.log"; exit 1; }; \
	fi
deps:
	$(call install_missing,$(DEB_PACKAGES))
test-deps:
	$(call install_missing,$(TEST_DEB_PACKAGES))
bench-deps:
	$(call install_missing,$(BENCH_DEB_PACKAGES))
valgrind-deps:
	$(call install_missing,$(VALGRIND_DEB_PACKAGES))
fuzz-deps:
	$(call install_missing,$(FUZZ_DEB_PACKAGES))

# Quiet: one progress line; cmake's output goes to $(BUILD)/build.log (VERBOSE=1: all of it).
build: deps
ifeq ($(VERBOSE),1)
	@[ -f $(BUILD)/CMakeCache.txt ] || cmake -S . -B $(BUILD) -DPython3_EXECUTABLE=$(PYTHON) -DESG_WERROR=ON $(CMAKE_FLAGS)
	cmake --build $(BUILD) -j $(JOBS)
else
	@scripts/quiet-build.sh $(BUILD) $(JOBS) -DPython3_EXECUTABLE=$(PYTHON) -DESG_WERROR=ON $(CMAKE_FLAGS)
endif

test: test-deps build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

demo: build
	@./examples/demo.sh $(BUILD)

bench: bench-deps build
	@./bench/run.sh $(BUILD)

# The whole suite with ASan+UBSan. The Lua and Python interpreters are not built with
# ASan, so the runtime is preloaded for them; leak checks stay with valgrind (make valgrind),
# since the interpreters keep memory to the end on purpose. The install test is left out:
# a consumer built without the sanitizer cannot link the sanitized static library; nor the
# docs tests: they run groff, man and a compiler, which the preloaded runtime reports on.
ASAN_BUILD = build-asan
asan: deps test-deps
	@[ -f $(ASAN_BUILD)/CMakeCache.txt ] || cmake -S . -B $(ASAN_BUILD) -DPython3_EXECUTABLE=$(PYTHON) -DESG_WERROR=ON \
	  -DESG_SANITIZE=ON -DESG_BUILD_BENCH=OFF
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && LD_PRELOAD=$$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 \
	  UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure -j $(JOBS) -E '^(install|docs)\.'

# Every C test under valgrind; fails on any error or definite leak.
valgrind: valgrind-deps build
	@fail=0; for t in $(BUILD)/tests/test_*; do \
	  [ -x "$$t" ] || continue; \
	  echo "valgrind $$t"; \
	  ESG_TEST_TMP=$(BUILD)/tests/tmp valgrind -q --error-exitcode=99 --leak-check=full \
	    --errors-for-leak-kinds=definite "$$t" >/dev/null 2>$(BUILD)/valgrind.log || { cat $(BUILD)/valgrind.log; fail=1; }; \
	done; exit $$fail

# The libFuzzer targets of tests/fuzz (tests/README.md "Fuzzing"), built with clang, ASan
# and UBSan in build-fuzz, each run for FUZZ_SECONDS (FUZZ_TARGETS: a few by name, e.g.
# FUZZ_TARGETS="event webhook"). A finding is copied into tests/fuzz/regressions/<target>/
# and fails the run; ctest replays it in every build from then on.
FUZZ_BUILD = build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=
fuzz: deps fuzz-deps
	@[ -f $(FUZZ_BUILD)/CMakeCache.txt ] || cmake -S . -B $(FUZZ_BUILD) -DCMAKE_C_COMPILER=clang \
	  -DPython3_EXECUTABLE=$(PYTHON) -DESG_WERROR=ON -DESG_FUZZ=ON -DESG_BUILD_BENCH=OFF -DESG_ENABLE_PYTHON=OFF
	cmake --build $(FUZZ_BUILD) -j $(JOBS) --target esg_fuzzers
	tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# The short run (CI): FUZZ_SMOKE_SECONDS per target.
FUZZ_SMOKE_SECONDS ?= 10
fuzz-smoke:
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=$(FUZZ_SMOKE_SECONDS)

install: build
	cmake --install $(BUILD)

clean:
	rm -rf build build-asan build-fuzz
