#!/usr/bin/env bash
# worker-image.sh builds the worker image of deploy/worker/Dockerfile, the
# one the Docker provider runs its workers from, without a registry: a
# static build of ./cmd/oxide-agent on a root filesystem made of the host's
# busybox-static (and bash-static, when there is one). As root it installs
# both with apt-get when they are missing. Typical use:
#
#	scripts/worker-image.sh                  # tags oxide/worker:dev
#	scripts/worker-image.sh oxide/worker:1.2
#
# internal/testkit/dockertest builds the same image for tests.
set -euo pipefail
cd "$(dirname "$0")/.."
umask 022

tag=${1:-oxide/worker:dev}

log() { echo "worker-image.sh: $*" >&2; }

if [ ! -x /bin/busybox ] || [ ! -x /bin/bash-static ]; then
	if [ "$(id -u)" = 0 ]; then
		log "installing busybox-static and bash-static with apt-get"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update >&2
		apt-get install -y busybox-static bash-static >&2
	elif [ ! -x /bin/busybox ]; then
		log "no /bin/busybox: install busybox-static (apt-get install busybox-static bash-static)"
		exit 1
	fi
fi

if ldd /bin/busybox >/dev/null 2>&1; then
	log "/bin/busybox is dynamically linked: install busybox-static"
	exit 1
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp deploy/worker/Dockerfile "$ctx/"
CGO_ENABLED=0 go build -trimpath -o "$ctx/oxide-agent" ./cmd/oxide-agent

# The root filesystem: busybox with a symlink for each of its applets, bash,
# and what programs expect of /etc, /root and /tmp.
root=$ctx/rootfs
mkdir -p "$root/bin" "$root/etc" "$root/root" "$root/tmp"
chmod 700 "$root/root"
chmod 1777 "$root/tmp"
cp /bin/busybox "$root/bin/busybox"
for p in $(/bin/busybox --list-full); do
	[[ $p == */* && $p != bin/busybox ]] || continue # not linuxrc
	mkdir -p "$root/$(dirname "$p")"
	ln -s /bin/busybox "$root/$p"
done
if [ -x /bin/bash-static ]; then
	rm -f "$root/bin/bash"
	cp /bin/bash-static "$root/bin/bash"
fi
cat >"$root/etc/os-release" <<'EOF'
NAME="Oxide worker"
ID=busybox
EOF
cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF

docker build -t "$tag" "$ctx"
log "built $tag"
