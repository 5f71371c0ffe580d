# The two commands a newcomer runs (README; ./bootstrap.sh installs make
# first where it is missing, then runs make with the same target):
#   make demo   install what is missing, build, run the main job on its default input
#   make test   install what is missing, build, run the whole test suite
# Everything else is a step of those two.

BUILD     ?= build
JOBS      ?= $(shell nproc 2>/dev/null || echo 2)
FQPACK    := $(BUILD)/cli/fqpack
# A new build folder is configured for Ninja, which starts a file as soon as
# what it needs is there (Make's generator waits for every library below a
# target to link first); a folder configured before keeps its generator.
GENERATOR  = $(if $(wildcard $(1)/CMakeCache.txt),,-G Ninja)
# Debian packages fqpack builds and tests with. clang-14 with
# libclang-rt-14-dev (ASan, UBSan and libFuzzer runtimes) and llvm-14
# (llvm-symbolizer, for readable sanitizer stacks) serve `make sanitize` and
# `make fuzz`.
DEBS      := cmake make ninja-build g++ pkg-config libsqlite3-dev libzstd-dev libxxhash-dev zlib1g-dev libssl-dev libeigen3-dev \
             libcli11-dev libgtest-dev libgmock-dev libbenchmark-dev nlohmann-json3-dev libcpp-httplib-dev curl zstd xxhash python3 \
             clang-14 libclang-rt-14-dev llvm-14 clang-format-14 clang-tidy-14

# The sanitizer build: clang, ASan + UBSan, every fuzz target (README,
# "Fuzzing and sanitizers").
ASAN_BUILD   ?= build-asan
FUZZ_SECONDS ?= 30
FUZZ_JOBS    ?= $(JOBS)
# Tests left out under the sanitizers (they all run in `make test`), as a
# ctest -E regex, to keep CI within its time: the llama.cpp perplexity ladder
# and the zoo's (every family against llama.cpp on 60 chunks), the zoo
# pipeline, the real-model searches and the k-quant comparison on
# tinystories-3M (7-40 s each in Release, two minutes or more here;
# tests/runtime/arch_test.cc runs every family's forward pass under the
# sanitizers on small models, and the pipeline's code runs here on llama);
# and four tests that are long computations over code other tests run here
# (16-55 s each under ASan): the greedy search over a real library (the
# greedy CLI test searches one), the tree search with and without its
# speedups, and the quantize pipeline's GPTQ quality and ladder rules (Gptq.*
# and the pipeline's other tests stay). The kill and power-loss loops run, on
# every SANITIZE_CRASH_STRIDE-th crash point (and always the last ones):
# ASan's start-up per crash makes every point cost ~0.5 s.
SANITIZE_EXCLUDE ?= LlamaCppPerplexity|ZooParity\.(Llama3|Qwen|Gemma)|ZooPipeline|RealModels\.|KQuantsAreAsGoodAsLlamaCpp|GreedySearch\.RealLibrary|TreeSearchSpeedups\.|QuantizePipelineTest\.(GptqBeatsRtn|LadderFollows)
SANITIZE_CRASH_STRIDE ?= 12

# Function names and lines in sanitizer reports: llvm-14 installs no
# unversioned llvm-symbolizer on the PATH.
export ASAN_SYMBOLIZER_PATH  ?= /usr/lib/llvm-14/bin/llvm-symbolizer
export UBSAN_SYMBOLIZER_PATH ?= /usr/lib/llvm-14/bin/llvm-symbolizer

.PHONY: demo test deps build bench clean format lint tidy sanitize fuzz asan-build

# The demo builds only the command it runs (no tests, no benchmarks).
demo: deps
	@cmake $(call GENERATOR,$(BUILD)) -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build $(BUILD) -j $(JOBS) --target fqpack
	@bash .ci/demo.sh $(FQPACK)

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 900

# The test build leaves the benchmark programs out (a minute of the build);
# `make bench` turns them on in the same build folder.
build: deps
	@cmake $(call GENERATOR,$(BUILD)) -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DFQPACK_BUILD_BENCH=OFF >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

# Builds the benchmark programs (README, "Benchmarks" says what each
# measures and how to run it) and lists them.
bench: deps
	@cmake $(call GENERATOR,$(BUILD)) -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DFQPACK_BUILD_BENCH=ON >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)
	@echo "benchmark programs:"; ls $(BUILD)/bench | grep -E '_bench$$|_example$$|^pressure_run$$' | sed 's|^|  $(BUILD)/bench/|'

sanitize: asan-build
	cd $(ASAN_BUILD) && FQ_CRASH_STRIDE=$(SANITIZE_CRASH_STRIDE) ctest --output-on-failure -j $(JOBS) --timeout 1800 \
	  -E '$(SANITIZE_EXCLUDE)'

fuzz: asan-build
	@bash .ci/fuzz.sh $(ASAN_BUILD) $(FUZZ_SECONDS) $(FUZZ_JOBS)

asan-build: deps
	@CC=clang-14 CXX=clang++-14 cmake $(call GENERATOR,$(ASAN_BUILD)) -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Release \
	  -DFQPACK_FUZZ=ON -DFQPACK_SANITIZE=ON -DFQPACK_BUILD_BENCH=OFF >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS)

# Installs missing Debian packages: as root with apt-get (after apt-get
# update); otherwise prints the apt-get line to run and stops.
deps:
	@missing=""; for p in $(DEBS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null || exit 1; \
	  else \
	    echo "fqpack needs these Debian packages:$$missing"; \
	    echo "run: sudo apt-get update && sudo apt-get install -y$$missing"; \
	    exit 1; \
	  fi; \
	fi

format: deps
	@git ls-files '*.cc' '*.h' 'runtime/*.inc' | xargs clang-format-14 -i

# Every source as clang-format-14 leaves it (.clang-format); .ci/run runs it.
lint: deps
	@bash .ci/lint.sh format

# clang-tidy-14 (.clang-tidy) over every library source, with the compile
# commands of BUILD (CI passes the sanitizer build's, whose flags are
# clang's); minutes.
tidy: deps
	@[ -f $(BUILD)/compile_commands.json ] || $(MAKE) --no-print-directory build
	@bash .ci/lint.sh tidy $(BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
