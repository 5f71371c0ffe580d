# The two commands a newcomer runs:
#   make demo   install what is missing, build, run the main job on its default input
#   make test   install what is missing, build, run the whole test suite
# Everything else is a step of those two.

BUILD     ?= build
JOBS      ?= $(shell nproc 2>/dev/null || echo 2)
FQPACK    := $(BUILD)/cli/fqpack
# Debian packages fqpack builds and tests with.
DEBS      := cmake make g++ pkg-config libsqlite3-dev libzstd-dev libxxhash-dev libeigen3-dev \
             libcli11-dev libgtest-dev libgmock-dev libbenchmark-dev zstd xxhash python3

.PHONY: demo test deps build bench clean format

demo: build
	@bash .ci/demo.sh $(FQPACK)

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 900

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

bench: build
	@bash .ci/bench.sh $(BUILD)

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

format:
	@git ls-files '*.cc' '*.h' | xargs clang-format -i

clean:
	rm -rf $(BUILD)
