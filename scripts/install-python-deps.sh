#!/usr/bin/env bash
# Finds (or makes) a Python that can `import grpc, google.protobuf, pytest`
# and records its absolute path in .snakepit/python for the Makefile and the
# Go tests. Idempotent; when a suitable interpreter exists it only probes
# (well under a second) and changes nothing else.
#
# Order, first match wins:
#   1. $SNAKEPIT_PYTHON, if it already works (never modified);
#   2. an active virtualenv ($VIRTUAL_ENV/bin/python): pip-installs what is missing;
#   3. the project's .venv/bin/python: likewise;
#   4. /usr/bin/python3, then python3 on PATH, if they already work;
#   5. as root with apt-get: the Debian packages python3-grpcio python3-protobuf
#      python3-pytest (apt-get update only if the install fails without it);
#   6. a new .venv (python3 -m venv) with pip-installed grpcio protobuf pytest.
#
# Then mypy (for `make lint-python`), for the chosen interpreter: pip-installed
# into a virtualenv, or the Debian package mypy as root with apt-get; an
# explicit $SNAKEPIT_PYTHON is never modified. A mypy that cannot be installed
# is reported, not fatal here (the tests run without it; lint-python fails).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out_file="$root/.snakepit/python"
log_file="$root/.snakepit/install-python-deps.log"
pkgs=(grpcio protobuf pytest)
deb_pkgs=(python3-grpcio python3-protobuf python3-pytest)
tried=()

mkdir -p "$root/.snakepit"

# works PY: PY runs, is >= 3.9 and imports everything the suites need.
works() {
  "$1" -c 'import sys; assert sys.version_info >= (3, 9); import grpc, google.protobuf, pytest' >/dev/null 2>&1
}

choose() { # choose PY WHY [venv|system|explicit]
  local abs
  # sys.executable resolves shims (pyenv) and relative paths to the real interpreter.
  abs="$("$1" -c 'import sys; print(sys.executable)')"
  printf '%s\n' "$abs" >"$out_file.tmp"
  mv "$out_file.tmp" "$out_file"
  echo "install-python-deps: using $abs ($2)"
  ensure_mypy "$abs" "${3:-system}"
  ensure_extra "$abs" "${3:-system}" numpy numpy python3-numpy ||
    echo "install-python-deps: note: no numpy for $abs; the tests of numpy results will be skipped" >&2
  exit 0
}

# ensure_extra PY KIND MODULE PIP_NAME DEB_NAME: make `import MODULE` work
# for PY, if that environment is ours to change. Extras are not required to
# run snakepit: mypy for make lint-python, numpy for the tests of numpy
# results (they skip without it).
ensure_extra() {
  "$1" -c "import $3" >/dev/null 2>&1 && return 0
  case "$2" in
    venv)
      echo "install-python-deps: installing $4 into $1 with pip (log: $log_file)"
      "$1" -m pip install --quiet --disable-pip-version-check "$4" >>"$log_file" 2>&1 || true
      ;;
    system)
      if [[ "$(id -u)" == 0 && "$1" == /usr/bin/python3* ]] && command -v apt-get >/dev/null 2>&1; then
        echo "install-python-deps: installing $5 with apt-get (log: $log_file)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q "$5" >>"$log_file" 2>&1 ||
          { apt-get update -q >>"$log_file" 2>&1 && apt-get install -y -q "$5" >>"$log_file" 2>&1; } || true
      fi
      ;;
  esac
  "$1" -c "import $3" >/dev/null 2>&1
}

# ensure_mypy PY KIND: make `PY -m mypy` work for make lint-python, if it is ours to change.
ensure_mypy() {
  ensure_extra "$1" "$2" mypy mypy mypy && return 0
  command -v mypy >/dev/null 2>&1 && return 0 # lint-python falls back to mypy on PATH
  echo "install-python-deps: WARNING: no mypy for $1; make lint-python will fail until one of:" >&2
  echo "  apt-get install -y mypy        # Debian/Ubuntu, as root" >&2
  echo "  $1 -m pip install mypy" >&2
  return 0
}

pip_into() { # pip_into PY: install the packages into that environment
  "$1" -m pip --version >/dev/null 2>&1 || "$1" -m ensurepip --upgrade >>"$log_file" 2>&1 || return 1
  "$1" -m pip install --quiet --disable-pip-version-check "${pkgs[@]}" >>"$log_file" 2>&1
}

# 1. explicit choice
if [[ -n "${SNAKEPIT_PYTHON:-}" ]]; then
  if works "$SNAKEPIT_PYTHON"; then
    choose "$SNAKEPIT_PYTHON" "from \$SNAKEPIT_PYTHON" explicit
  fi
  tried+=("\$SNAKEPIT_PYTHON=$SNAKEPIT_PYTHON: cannot import grpc, google.protobuf and pytest (or is older than 3.9); left unchanged")
fi

# 2./3. virtual environments: ours to install into
venv_candidates=()
[[ -n "${VIRTUAL_ENV:-}" ]] && venv_candidates+=("$VIRTUAL_ENV/bin/python|active virtualenv \$VIRTUAL_ENV")
venv_candidates+=("$root/.venv/bin/python|project .venv")
for entry in "${venv_candidates[@]}"; do
  py="${entry%%|*}" why="${entry#*|}"
  [[ -x "$py" ]] || continue
  if works "$py"; then
    choose "$py" "$why" venv
  fi
  if pip_into "$py" && works "$py"; then
    choose "$py" "$why; installed ${pkgs[*]} with pip" venv
  fi
  tried+=("$py ($why): pip install ${pkgs[*]} failed (see $log_file)")
done

# 4. interpreters that already have everything
for py in /usr/bin/python3 "$(command -v python3 || true)"; do
  [[ -n "$py" && -x "$py" ]] || continue
  if works "$py"; then
    choose "$py" "already has ${pkgs[*]}"
  fi
  tried+=("$py: lacks some of grpcio, protobuf, pytest")
done

# 5. Debian packages
if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "install-python-deps: installing ${deb_pkgs[*]} with apt-get (log: $log_file)"
  export DEBIAN_FRONTEND=noninteractive
  if apt-get install -y -q "${deb_pkgs[@]}" >>"$log_file" 2>&1 ||
    { apt-get update -q >>"$log_file" 2>&1 && apt-get install -y -q "${deb_pkgs[@]}" >>"$log_file" 2>&1; }; then
    if [[ -x /usr/bin/python3 ]] && works /usr/bin/python3; then
      choose /usr/bin/python3 "installed ${deb_pkgs[*]} with apt-get"
    fi
    tried+=("apt-get install ${deb_pkgs[*]}: installed, but /usr/bin/python3 still cannot import them")
  else
    tried+=("apt-get install ${deb_pkgs[*]}: failed (see $log_file)")
  fi
fi

# 6. a fresh project venv
base=""
for py in /usr/bin/python3 "$(command -v python3 || true)"; do
  if [[ -n "$py" && -x "$py" ]]; then base="$py"; break; fi
done
if [[ -n "$base" && ! -x "$root/.venv/bin/python" ]]; then
  echo "install-python-deps: creating $root/.venv with $base (log: $log_file)"
  if "$base" -m venv "$root/.venv" >>"$log_file" 2>&1 && pip_into "$root/.venv/bin/python" && works "$root/.venv/bin/python"; then
    choose "$root/.venv/bin/python" "new project .venv; installed ${pkgs[*]} with pip" venv
  fi
  tried+=("$base -m venv .venv + pip install ${pkgs[*]}: failed (see $log_file)")
elif [[ -z "$base" ]]; then
  tried+=("no python3 found to create a .venv with")
fi

{
  echo "install-python-deps: no Python that can import grpc, google.protobuf and pytest."
  echo "Tried:"
  for t in "${tried[@]}"; do echo "  - $t"; done
  echo "Fix one of these ways, then re-run scripts/install-python-deps.sh:"
  echo "  apt-get install -y ${deb_pkgs[*]}        # Debian/Ubuntu, as root"
  echo "  python3 -m venv .venv && .venv/bin/pip install ${pkgs[*]}"
  echo "  export SNAKEPIT_PYTHON=/path/to/a/python/that/has/them"
} >&2
exit 1
