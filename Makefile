# The targets people type. CMake + ctest do the work underneath in build/.
JOBS ?= $(shell nproc)
BUILD ?= build
.PHONY: all deps build demo test test-sanitize test-valgrind fuzz bench install clean

all: build

deps:
	@scripts/install-deps

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

demo: build
	@scripts/demo $(BUILD)/nnz

test: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# The whole suite under AddressSanitizer + UndefinedBehaviorSanitizer, in its own build dir.
test-sanitize:
	@scripts/install-deps --sanitize
	@cmake -S . -B build-sanitize -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang -DNNZ_SANITIZE=ON >/dev/null
	@cmake --build build-sanitize -j $(JOBS)
	@cd build-sanitize && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  NNZ_SANITIZE=1 ctest --output-on-failure -j $(JOBS)

# The whole suite under valgrind memcheck (slow: run before a release, not in CI).
test-valgrind:
	@scripts/install-deps --valgrind
	@cmake -S . -B build-valgrind -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build build-valgrind -j $(JOBS)
	@scripts/valgrind-tests build-valgrind

FUZZ_SECONDS ?= 30
fuzz:
	@scripts/install-deps --fuzz
	@cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang -DNNZ_FUZZ=ON -DNNZ_SANITIZE=ON >/dev/null
	@cmake --build build-fuzz -j $(JOBS)
	@scripts/run-fuzzers build-fuzz $(FUZZ_SECONDS)

bench: build
	@scripts/install-deps --bench
	@bench/run-all $(BUILD)/nnz

install: build
	@cmake --install $(BUILD)

clean:
	rm -rf build build-sanitize build-fuzz build-valgrind
