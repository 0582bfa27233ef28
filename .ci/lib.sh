# shellcheck shell=bash
# Shared by CI's legs (.ci/wheels, .ci/sdist, .ci/no-compiler, .ci/asan, .ci/debug-python):
# sourced, never run. Each leg installs what it needs itself, because CI runs on a fresh Debian
# 12 machine where only .ci/run's own installs have happened.

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Debian packages, installed only when missing: a second run (or a desk with them) costs nothing
# and needs no network. One `apt-get update` at most, and only if something must be installed.
_apt_updated=
need_apt() {  # need_apt PACKAGE...
  local pkg missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
  done
  ((${#missing[@]})) || return 0
  if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    echo "missing Debian packages: ${missing[*]} (install them, or run this as root)" >&2
    return 1
  fi
  echo "installing ${missing[*]}"
  if [[ -z $_apt_updated ]]; then
    apt-get update -qq
    _apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
}

# A Python that can build an extension and make a venv. Debian's own interpreters split the
# headers (-dev) and ensurepip (-venv) into packages of their own; a pyenv or python.org build
# has both, or is broken in a way apt cannot fix (then say so).
need_python_build() {  # need_python_build PYTHON
  local python=$1 version
  if "$python" -c 'import ensurepip, os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
    2>/dev/null; then
    return 0
  fi
  version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  case $(readlink -f "$(command -v "$python")") in
    /usr/bin/*) need_apt "python$version-dev" "python$version-venv" ;;
    *)
      echo "$python has no Python.h or no ensurepip, and is not Debian's: cannot fix that" >&2
      return 1
      ;;
  esac
}

# The work tree's sources, without anything built in it (build/, *.so, the generated .c): a
# build in the copy must compile everything from the .pyx with this leg's flags, and nothing
# it builds may land in the work tree, where others import shimpid/ in place and CI's other
# lane builds at the same time (setup.py writes shimpid/_speedups.c wherever it runs). Untracked files
# come too (a module someone has not committed yet is part of what is tested); a tracked file
# deleted in the work tree is skipped (--ignore-failed-read).
copy_source() {  # copy_source DEST
  mkdir -p "$1"
  if git -C "$REPO" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    (cd "$REPO" && git ls-files -z --cached --others --exclude-standard |
      tar --null -T - --ignore-failed-read -cf - 2>/dev/null) | tar -xf - -C "$1"
  else  # an unpacked sdist, or the sid root (no git): all but the build products; the other
    # lane writes beside it meanwhile (dist, the tests' cache), which tar's status 1 reports
    (cd "$REPO" && { tar --warning=no-file-changed --exclude=./build --exclude=./.tox \
      --exclude=./dist --exclude=./.venv --exclude=./tests/.cache --exclude='*.so' \
      --exclude=./shimpid/_speedups.c -cf - . || [[ $? == 1 ]]; }) | tar -xf - -C "$1"
  fi
}

# What the tests import and need: tox.ini's [testenv] deps, and Cython and setuptools (the
# C-API test extension is built by the tests; the leg's own build uses them too).
TEST_REQUIREMENTS=("pytest>=8" "hypothesis>=6.100" "python-daemon>=3" "pid>=3"
  "Cython>=3.1" "setuptools>=77")
