#!/usr/bin/env bash
# Unpacks (never installs) Debian's systemd-resolved for
# TestNamesSystemdResolved, which runs it in a lab namespace with its own
# /run and system bus. Installing the package would point this machine's
# /etc/resolv.conf at resolved's stub, so it is only downloaded and
# extracted. Without it the test skips.
set -euo pipefail
dest="${MESHVPN_RESOLVED_ROOT:-/var/cache/meshvpn-test/systemd-resolved}"
if [ -x "$dest/lib/systemd/systemd-resolved" ]; then
	echo "resolved-for-tests: present in $dest"
	exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
	echo "resolved-for-tests: needs root and apt-get; TestNamesSystemdResolved will skip" >&2
	exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp" # apt's download user must be able to write there
if ! (cd "$tmp" && apt-get download systemd-resolved >/dev/null); then
	echo "resolved-for-tests: apt-get download systemd-resolved failed; TestNamesSystemdResolved will skip" >&2
	exit 0
fi
mkdir -p "$dest"
dpkg -x "$tmp"/systemd-resolved_*.deb "$dest"
echo "resolved-for-tests: unpacked into $dest"
