#!/bin/sh
# The README's set-up commands, `./bootstrap.sh demo` and `./bootstrap.sh
# test`: `make demo` and `make test` where `make` itself may be missing, as on
# a minimal Debian image. Installs make (apt-get, as root; otherwise prints
# the line to run and exits non-zero), then runs make with the arguments
# given; the Makefile's `deps` installs everything else. Plain POSIX sh: a
# bare image has dash, and perhaps no bash.
set -eu
cd "$(dirname "$0")"
if ! command -v make >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "fqpack needs make to build; run: sudo apt-get update && sudo apt-get install -y make" >&2
    exit 1
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "fqpack needs make to build, and this system has no apt-get: install make and run make $*" >&2
    exit 1
  fi
  echo "installing: make"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq make >/dev/null
  if ! command -v make >/dev/null 2>&1; then
    echo "apt-get installed make, but it is not on the PATH ($PATH)" >&2
    exit 1
  fi
fi
exec make "$@"
