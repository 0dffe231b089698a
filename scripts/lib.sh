# Shared helpers of gpucloud's scripts. Sourced, not run.

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "need root (or sudo) to run: $*"
  fi
}

APT_UPDATED=""
# apt_install PKG... — installs the Debian packages that are missing.
apt_install() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null 2>&1 || die "missing packages ${missing[*]} and no apt-get; install them by hand"
  if [ -z "$APT_UPDATED" ]; then
    say "apt-get update"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    APT_UPDATED=1
  fi
  say "installing ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# ensure_rust — cargo of the pinned toolchain, installing rustup if needed.
ensure_rust() {
  if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    apt_install curl ca-certificates build-essential pkg-config
    say "installing Rust with rustup"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain none >&2
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
  command -v cc >/dev/null 2>&1 || apt_install build-essential
}

# ensure_venv — .venv with tccli and the Python SDK (the official clients).
ensure_venv() {
  local root="$1"
  if [ ! -x "$root/.venv/bin/python" ]; then
    if ! python3 -m venv "$root/.venv" >/dev/null 2>&1; then
      apt_install python3-venv python3-pip
      python3 -m venv "$root/.venv"
    fi
  fi
  if ! "$root/.venv/bin/python" -c 'import tccli, tencentcloud.cvm, pytest' >/dev/null 2>&1; then
    say "installing tccli, tencentcloud-sdk-python and pytest into .venv"
    "$root/.venv/bin/pip" install -q --disable-pip-version-check -r "$root/tests/e2e/requirements.txt" >&2
  fi
}

pg_ok() { command -v psql >/dev/null 2>&1 && psql "$1" -Atqc 'select 1' >/dev/null 2>&1; }

# ensure_postgres — a PostgreSQL the store suite can create databases in;
# exports GPUCLOUD_TEST_PG. Uses a running local server with trust auth if
# there is one, else starts (or creates) a private cluster on port 55432.
ensure_postgres() {
  if [ -n "${GPUCLOUD_TEST_PG:-}" ]; then return 0; fi
  command -v psql >/dev/null 2>&1 || apt_install postgresql-client
  local url
  for url in postgres://postgres@127.0.0.1:5432/test postgres://postgres@127.0.0.1:5432/postgres \
             postgres://postgres@127.0.0.1:55432/postgres; do
    if pg_ok "$url"; then export GPUCLOUD_TEST_PG="$url"; return 0; fi
  done
  if command -v pg_lsclusters >/dev/null 2>&1; then
    pg_lsclusters -h 2>/dev/null | while read -r ver name _port status _rest; do
      if [ "$status" = down ]; then as_root pg_ctlcluster "$ver" "$name" start >&2 || true; fi
    done
    for url in postgres://postgres@127.0.0.1:5432/test postgres://postgres@127.0.0.1:5432/postgres \
               postgres://postgres@127.0.0.1:55432/postgres; do
      if pg_ok "$url"; then export GPUCLOUD_TEST_PG="$url"; return 0; fi
    done
  fi
  apt_install postgresql
  local ver
  ver="$(ls /usr/lib/postgresql | sort -n | tail -1)"
  if ! pg_lsclusters -h 2>/dev/null | awk '{print $2}' | grep -qx gpucloud; then
    say "creating a private PostgreSQL $ver cluster for the tests (port 55432, trust auth on localhost)"
    as_root pg_createcluster "$ver" gpucloud -p 55432 -- --auth-local=trust --auth-host=trust >&2
  fi
  as_root pg_ctlcluster "$ver" gpucloud start >&2 || true
  url=postgres://postgres@127.0.0.1:55432/postgres
  for _ in $(seq 1 60); do
    if pg_ok "$url"; then export GPUCLOUD_TEST_PG="$url"; return 0; fi
    sleep 0.5
  done
  die "PostgreSQL did not come up; set GPUCLOUD_TEST_PG to a server where user postgres may create databases"
}
