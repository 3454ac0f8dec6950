#!/usr/bin/env bash
# Installs the real servers the tests and the quick start need, without changing the system's apt sources:
#   - Pebble and pebble-challtestsrv from the machine's own Debian suite (apt-get install pebble)
#   - HAProxy (2.6 on bookworm) from the machine's own Debian suite (apt-get install haproxy), for the HAProxy sink's tests
#   - lego (4.9 on bookworm) from the machine's own Debian suite (apt-get install lego): another ACME client,
#     whose certificates the adoption test takes over
#   - Consul 1.8.7 from Debian's bullseye suite, unpacked into .cache/consul (the system's apt lists stay as they are)
# Idempotent: does nothing for a part that is already there. Prints where each binary is.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache="$root/.cache"
mkdir -p "$cache"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v pebble >/dev/null || ! command -v pebble-challtestsrv >/dev/null; then
  echo "setup: installing pebble from Debian" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pebble >/dev/null
fi

if ! command -v haproxy >/dev/null && [ ! -x /usr/sbin/haproxy ]; then
  echo "setup: installing haproxy from Debian" >&2
  as_root apt-get update -qq
  # The tests start their own HAProxy; Debian's default configuration, should its service start, binds no port.
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null
fi

if ! command -v lego >/dev/null; then
  echo "setup: installing lego from Debian" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq lego >/dev/null
fi

consul_bin="$cache/consul/usr/bin/consul"
if [ ! -x "$consul_bin" ]; then
  echo "setup: fetching consul 1.8.7 from Debian bullseye into $cache/consul" >&2
  work="$cache/apt-bullseye"
  mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/none"
  # The archive URI is taken from this machine's own apt sources; no host is written into the project.
  uri=""
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    uri=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  fi
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1=="deb"{for(i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list)
  fi
  [ -n "$uri" ] || { echo "setup: cannot find a Debian archive URI in the apt sources" >&2; exit 1; }
  keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  echo "deb [signed-by=$keyring] $uri bullseye main" > "$work/bullseye.list"
  A=(-o "Dir::Etc::SourceList=$work/bullseye.list" -o "Dir::Etc::SourceParts=$work/none"
     -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o "APT::Sandbox::User=root")
  apt-get "${A[@]}" -qq update
  (cd "$work" && apt-get "${A[@]}" -qq download consul)
  deb=$(ls "$work"/consul_1.8.7*.deb | head -n 1)
  rm -rf "$cache/consul"
  dpkg-deb -x "$deb" "$cache/consul"
fi
"$consul_bin" version | sed -n 1p >&2  # sed reads it all: head would end the pipe early (SIGPIPE, exit 141)
haproxy_bin=$(command -v haproxy || echo /usr/sbin/haproxy)
"$haproxy_bin" -v | sed -n 1p >&2
echo "setup: pebble at $(command -v pebble), haproxy at $haproxy_bin, lego at $(command -v lego), consul at $consul_bin" >&2
