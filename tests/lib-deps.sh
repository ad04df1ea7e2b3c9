# Sourced by tests/run.sh and deploy/demo.sh: installs the Debian packages the project needs,
# when they are missing. Needs root or sudo the first time.
gw_packages=(build-essential cmake pkg-config libevent-dev libssl-dev libjwt-dev libcjson-dev
             check openssl curl ca-certificates clang libclang-rt-dev
             python3-yaml systemd cppcheck clang-tidy valgrind
             libhiredis-dev redis-server redis-tools prometheus)

gw_install_missing() {
  local missing=() p
  for p in "${gw_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing: ${missing[*]}"
  local sudo=()
  [ "$(id -u)" -ne 0 ] && sudo=(sudo)
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
}
