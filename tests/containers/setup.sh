#!/bin/sh
# Prepare a Debian/Ubuntu host for tests/containers/run.py: installs docker.io, debootstrap,
# the shell linter, python3-yaml and git; starts dockerd when no daemon answers.
# Idempotent: installs only what is missing, starts dockerd only once.
set -eu

need=''
command -v docker >/dev/null 2>&1 && command -v dockerd >/dev/null 2>&1 || need="$need docker.io"
command -v debootstrap >/dev/null 2>&1 || need="$need debootstrap"
command -v shellcheck >/dev/null 2>&1 || need="$need shellcheck"
command -v git >/dev/null 2>&1 || need="$need git"
command -v file >/dev/null 2>&1 || need="$need file"
# The static musl build compiles mimalloc's C with musl-gcc.
command -v musl-gcc >/dev/null 2>&1 || need="$need musl-tools"
# run.py parses YAML with the system python's yaml module when its own python has none.
[ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import yaml' 2>/dev/null || need="$need python3-yaml"

if [ -n "$need" ]; then
	[ "$(id -u)" -eq 0 ] || {
		echo "setup.sh: need root to install:$need" >&2
		exit 1
	}
	echo "setup.sh: installing$need"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	# shellcheck disable=SC2086 # word splitting of the package list is intended
	apt-get install -y -q --no-install-recommends $need
fi

if docker version >/dev/null 2>&1; then
	echo "setup.sh: docker daemon is up"
	exit 0
fi
[ "$(id -u)" -eq 0 ] || {
	echo "setup.sh: no docker daemon, and only root can start dockerd" >&2
	exit 1
}
echo "setup.sh: starting dockerd (log: /tmp/dockerd.log)"
nohup dockerd >/tmp/dockerd.log 2>&1 &
i=0
until docker version >/dev/null 2>&1; do
	i=$((i + 1))
	if [ "$i" -gt 60 ]; then
		echo "setup.sh: dockerd did not come up in 30 s; last log lines:" >&2
		tail -n 20 /tmp/dockerd.log >&2
		exit 1
	fi
	sleep 0.5
done
echo "setup.sh: docker daemon is up"
