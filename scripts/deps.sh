#!/usr/bin/env bash
# Installs the Debian packages the NAT lab, the end-to-end tests and the
# benchmark need, but only those that are missing, so a prepared machine
# never touches apt. Without root it only says what is missing: the lab
# tests then skip with a message.
set -euo pipefail

packages=(nftables iproute2 iputils-ping openssh-server openssh-client iperf3 conntrack procps miniupnpd-nftables coturn curl dbus-daemon systemd postgresql)

missing=()
for p in "${packages[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done

# systemd-resolved unpacked (never installed) for TestNamesSystemdResolved.
trap '"$(dirname "$0")"/resolved-for-tests.sh' EXIT

if [ ${#missing[@]} -eq 0 ]; then
	echo "deps: all present (${packages[*]})"
	exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
	echo "deps: missing ${missing[*]}; install them as root (apt-get install -y ${missing[*]}); lab tests will skip" >&2
	exit 0
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends "${missing[@]}"
