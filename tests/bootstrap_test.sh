#!/bin/sh
# bootstrap.sh on a system without make, simulated: it runs with a PATH of a
# few stand-ins (an `id` that says root or not, an apt-get that records its
# arguments and "installs" a make that records its own), so the test needs no
# network and never touches this machine's packages.
#   tests/bootstrap_test.sh path/to/bootstrap.sh
set -u
script=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
failures=0
fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}

# A sandbox: bin/ holds the only commands on the PATH.
sandbox() {
  rm -rf "$root/box"
  mkdir -p "$root/box/bin"
  ln -s "$(command -v dirname)" "$root/box/bin/dirname"
  printf '#!/bin/sh\necho %s\n' "$1" >"$root/box/bin/id"
  cat >"$root/box/fake-make" <<MAKE
#!/bin/sh
echo "\$PWD \$*" >"$root/box/make.log"
MAKE
  cat >"$root/box/bin/apt-get" <<APT
#!/bin/sh
echo "\$DEBIAN_FRONTEND \$*" >>"$root/box/apt.log"
case "\$*" in *install*) [ -n "\${APT_FAIL:-}" ] && exit 100; $(command -v cp) "$root/box/fake-make" "$root/box/bin/make" ;; esac
exit 0
APT
  chmod +x "$root/box/bin/id" "$root/box/bin/apt-get" "$root/box/fake-make"
}
run() {
  PATH="$root/box/bin" /bin/sh "$script" "$@" >"$root/box/out" 2>&1
}
repo=$(dirname "$script")

# Root, no make: apt-get update, apt-get install make, then make test in the
# repository.
sandbox 0
run test
rc=$?
[ $rc = 0 ] || fail "root without make: exit $rc: $(cat "$root/box/out")"
printf 'noninteractive update -qq\nnoninteractive install -y -qq make\n' >"$root/want"
cmp -s "$root/want" "$root/box/apt.log" || fail "root without make: apt-get ran: $(cat "$root/box/apt.log" 2>/dev/null)"
[ "$(cat "$root/box/make.log" 2>/dev/null)" = "$repo test" ] ||
  fail "root without make: make ran as: $(cat "$root/box/make.log" 2>/dev/null)"
grep -q "installing: make" "$root/box/out" || fail "root without make: no note: $(cat "$root/box/out")"

# Not root, no make: the exact sudo line, a non-zero exit, nothing installed.
sandbox 1000
run demo
rc=$?
[ $rc != 0 ] || fail "user without make: exit 0"
grep -qx "fqpack needs make to build; run: sudo apt-get update && sudo apt-get install -y make" \
  "$root/box/out" || fail "user without make: said: $(cat "$root/box/out")"
[ ! -e "$root/box/apt.log" ] || fail "user without make: apt-get ran"
[ ! -e "$root/box/make.log" ] || fail "user without make: make ran"

# Root, the install fails: a non-zero exit and no make.
sandbox 0
APT_FAIL=1 run test
rc=$?
[ $rc != 0 ] || fail "failed install: exit 0"
[ ! -e "$root/box/make.log" ] || fail "failed install: make ran"

# make present: no apt-get, make gets every argument.
sandbox 1000
cp "$root/box/fake-make" "$root/box/bin/make"
run demo MODEL=m.gguf
rc=$?
[ $rc = 0 ] || fail "with make: exit $rc: $(cat "$root/box/out")"
[ ! -e "$root/box/apt.log" ] || fail "with make: apt-get ran"
[ "$(cat "$root/box/make.log" 2>/dev/null)" = "$repo demo MODEL=m.gguf" ] ||
  fail "with make: make ran as: $(cat "$root/box/make.log" 2>/dev/null)"

if [ $failures = 0 ]; then echo "bootstrap: all cases pass"; fi
exit $((failures != 0))
