#!/usr/bin/env bash
# Prepare this machine to build and run the service image without a Docker engine.
#
# Idempotent. Installs buildah/podman/runc (Debian packages) when missing, checks that container
# storage uses the overlay driver, and - because Docker Hub is unreachable here - makes a local
# stand-in for the Dockerfile's base image (python:3.12-slim) unless an image of that name already
# exists: a debootstrapped Debian bookworm root plus a CPython 3.12, with the machine's extra CA
# certificates trusted (egress goes through a TLS-intercepting proxy). It gets a name of its own,
# never the official one: a later build on this machine must not take it for the real image (and
# trust the proxy's CA). container-smoke.sh builds on it with --build-arg PYTHON_IMAGE.
#
# Env: BASE_IMAGE (default localhost/python-standin:3.12-slim), REBUILD_BASE=1 to remake it.
set -euo pipefail

BASE_IMAGE=${BASE_IMAGE:-localhost/python-standin:3.12-slim}
DEBIAN_SUITE=${DEBIAN_SUITE:-bookworm}

log() { printf 'container-base: %s\n' "$*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
    log "must run as root (apt-get, debootstrap and rootful podman)"
    exit 1
fi

install_tools() {
    local missing=() tool
    for tool in buildah podman runc debootstrap fuse-overlayfs newuidmap; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    log "installing container tools (missing: ${missing[*]})"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends \
        buildah podman runc debootstrap fuse-overlayfs uidmap >/dev/null
}

ensure_overlay_storage() {
    # vfs copies the whole image for every container (seconds instead of milliseconds).
    if [[ ! -e /etc/containers/storage.conf ]]; then
        mkdir -p /etc/containers
        cat >/etc/containers/storage.conf <<'EOF'
[storage]
driver = "overlay"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"
EOF
    fi
    local driver
    driver=$(podman info --format '{{.Store.GraphDriverName}}')
    if [[ $driver != overlay ]]; then
        log "container storage uses '$driver', expected 'overlay' (see /etc/containers/storage.conf)"
        exit 1
    fi
}

pick_pyenv_python() {
    # Highest installed pyenv 3.12.x, if any.
    local candidates=()
    shopt -s nullglob
    candidates=(/root/.pyenv/versions/3.12.*)
    shopt -u nullglob
    [[ ${#candidates[@]} -eq 0 ]] && return 1
    printf '%s\n' "${candidates[@]}" | sort -V | tail -n 1
}

make_base_image() {
    local work rootfs python_home="" includes="ca-certificates,libssl3,libffi8,libsqlite3-0,libbz2-1.0,liblzma5,zlib1g,libuuid1,libexpat1"
    work=$(mktemp -d /var/tmp/python-base.XXXXXX)
    WORK_DIR=$work
    rootfs=$work/rootfs

    if python_home=$(pick_pyenv_python); then
        log "stand-in base: Debian $DEBIAN_SUITE + $(basename "$python_home") from pyenv"
    else
        # Fallback: Debian's own python3 (3.11 on bookworm) made pip-usable.
        log "no pyenv 3.12 found: stand-in base uses Debian's python3 (NOT 3.12)"
        includes+=",python3,python3-venv,python3-pip"
    fi

    log "debootstrap $DEBIAN_SUITE (about 40 s)"
    debootstrap --variant=minbase --include="$includes" "$DEBIAN_SUITE" "$rootfs" \
        >"$work/debootstrap.log" 2>&1 || { tail -n 20 "$work/debootstrap.log" >&2; return 1; }

    if [[ -n $python_home ]]; then
        # Same path as on the host: the interpreter's compiled-in prefix stays valid.
        mkdir -p "$rootfs$python_home"
        tar -C "$python_home" \
            --exclude='./lib/python3.12/test' \
            --exclude='./lib/python3.12/idlelib' \
            --exclude='./lib/python3.12/tkinter' \
            --exclude='./lib/python3.12/site-packages/_sandboxing*' \
            --exclude='__pycache__' \
            --exclude='*.a' \
            -c . | tar -C "$rootfs$python_home" -x
        if command -v strip >/dev/null 2>&1; then
            find "$rootfs$python_home" -name '*.so*' -type f -exec strip --strip-debug {} + 2>/dev/null || true
            strip --strip-debug "$rootfs$python_home"/bin/python3.12 2>/dev/null || true
        fi
        chmod 755 "$rootfs/root" "$rootfs/root/.pyenv" "$rootfs/root/.pyenv/versions"
        local name
        for name in python3 python3.12 pip3 pip3.12; do
            ln -sf "$python_home/bin/$name" "$rootfs/usr/local/bin/$name"
        done
        ln -sf python3 "$rootfs/usr/local/bin/python"
        ln -sf pip3 "$rootfs/usr/local/bin/pip"
    else
        rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
        ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python"
        ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python3"
        ln -sf /usr/bin/pip3 "$rootfs/usr/local/bin/pip"
    fi

    # Trust the machine's extra CAs (the egress proxy) inside images built from this base, and
    # point pip at the system bundle (pip otherwise uses its vendored certifi).
    cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/" 2>/dev/null || true
    chroot "$rootfs" update-ca-certificates >/dev/null 2>&1
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$rootfs/etc/pip.conf"

    # Slim like the official image: no apt lists, docs, man pages or caches.
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
        "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/var/log/*.log

    chroot "$rootfs" /usr/local/bin/python -c 'import ssl, sqlite3, ctypes, venv, zlib, lzma, bz2, uuid'

    local previous
    previous=$(podman image inspect --format '{{.Id}}' "$BASE_IMAGE" 2>/dev/null || true)
    tar -C "$rootfs" -c . | podman import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        --quiet - "$BASE_IMAGE" >/dev/null
    # The replaced stand-in, unless images built on it still need it.
    [[ -n $previous ]] && { podman rmi "$previous" >/dev/null 2>&1 || true; }
    log "imported $BASE_IMAGE ($(podman image inspect --format '{{.Size}}' "$BASE_IMAGE" | numfmt --to=iec) )"
}

WORK_DIR=""
trap '[[ -n $WORK_DIR ]] && rm -rf "$WORK_DIR"' EXIT

install_tools
ensure_overlay_storage
if [[ ${REBUILD_BASE:-0} == 1 ]] || ! podman image exists "$BASE_IMAGE"; then
    make_base_image
else
    log "$BASE_IMAGE already present"
fi
