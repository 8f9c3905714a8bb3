#!/usr/bin/env bash
# Build the images of the root Dockerfile: `serving` (the prediction service, the default
# target) and `training` (Prefect worker + flows + Dask).
#
#   deployments/image/build.sh [serving|training]...     (make image; default: both)
#
# Engine: docker when a daemon answers, else buildah (vfs storage, chroot isolation, host
# network: what runs inside an unprivileged container, where overlay mounts and new network
# namespaces are refused). Base: $BASE_IMAGE if set; else the official
# python:3.11-slim-bookworm when a registry answers; else a Debian bookworm minbase with
# python3 and python3-venv made by debootstrap from the machine's Debian mirror (same
# Debian release and Python minor as the official image), cached in $LINREG_CACHE.
# pip inside the build reaches the package index the way this machine's pip does: its index
# URL, proxy and CA bundle go into the build as secrets (never into a layer).
set -euo pipefail

cd "$(dirname "$0")/../.."
TAG=${IMAGE_TAG:-dev}
CACHE=${LINREG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/linreg-build}
OFFICIAL=docker.io/library/python:3.11-slim-bookworm
LOCAL_BASE=localhost/linreg-debian-base:bookworm
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
BUILDAH=(buildah --storage-driver vfs)
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(serving training)

log() { printf '[image] %s\n' "$*" >&2; }

# The machine's pip settings that reach the index, as a pip.conf for the build.
pip_setting() {  # name: first of the PIP_* variable and `pip config get global.NAME`
    local env_name="PIP_${1^^}"
    env_name=${env_name//-/_}
    if [ -n "${!env_name:-}" ]; then printf '%s' "${!env_name}"; return; fi
    "${PYTHON:-python3}" -m pip config get "global.$1" 2>/dev/null || true
}

write_pip_secrets() {  # dir -> dir/pip.conf, dir/ca.pem
    local dir=$1 index cert proxy
    index=$(pip_setting index-url)
    cert=$(pip_setting cert)
    proxy=$(pip_setting proxy)
    [ -n "$cert" ] || cert=${REQUESTS_CA_BUNDLE:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}
    [ -n "$proxy" ] || proxy=${HTTPS_PROXY:-${https_proxy:-}}
    {
        echo "[global]"
        echo "index-url = ${index:-https://pypi.org/simple}"
        [ -n "$proxy" ] && echo "proxy = $proxy"
        [ -f "$cert" ] && echo "cert = /run/secrets/pip-ca"
        echo "disable-pip-version-check = true"
    } >"$dir/pip.conf"
    if [ -f "$cert" ]; then cp "$cert" "$dir/ca.pem"; else : >"$dir/ca.pem"; fi
}

debian_base() {  # a bookworm minbase + python3 as $LOCAL_BASE, its rootfs tarball cached
    if "${BUILDAH[@]}" inspect --type image "$LOCAL_BASE" >/dev/null 2>&1; then return; fi
    local tarball="$CACHE/debian-bookworm-python3.tar"
    if [ ! -f "$tarball" ]; then
        command -v debootstrap >/dev/null || { log "debootstrap is missing (make image installs it)"; exit 1; }
        local root="$CACHE/rootfs.tmp"
        rm -rf "$root" && mkdir -p "$CACHE"
        log "debootstrap bookworm (minbase + python3, python3-venv, ca-certificates) from $DEBIAN_MIRROR"
        debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
            bookworm "$root" "$DEBIAN_MIRROR" >"$CACHE/debootstrap.log"
        # What an image does not need: the downloaded packages, the package lists, docs.
        rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
            "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/*
        tar -C "$root" --exclude=./dev/* --exclude=./proc/* --exclude=./sys/* \
            -cf "$tarball.tmp" .
        mv "$tarball.tmp" "$tarball"
        rm -rf "$root"
    fi
    log "importing $tarball as $LOCAL_BASE"
    local ctr
    ctr=$("${BUILDAH[@]}" from --quiet scratch)
    "${BUILDAH[@]}" add --quiet "$ctr" "$tarball" / >/dev/null
    "${BUILDAH[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env LANG=C.UTF-8 --cmd python3 "$ctr" >/dev/null
    "${BUILDAH[@]}" commit --quiet "$ctr" "$LOCAL_BASE" >/dev/null
    "${BUILDAH[@]}" rm "$ctr" >/dev/null
}

choose_base() {
    if [ -n "${BASE_IMAGE:-}" ]; then echo "$BASE_IMAGE"; return; fi
    if "${BUILDAH[@]}" inspect --type image "$OFFICIAL" >/dev/null 2>&1 ||
        timeout 60 "${BUILDAH[@]}" pull --quiet "$OFFICIAL" >/dev/null 2>&1; then
        echo "$OFFICIAL"
        return
    fi
    log "no registry answers for $OFFICIAL: using a local Debian base"
    debian_base
    echo "$LOCAL_BASE"
}

secrets=$(mktemp -d)
trap 'rm -rf "$secrets"' EXIT
write_pip_secrets "$secrets"

if docker info >/dev/null 2>&1; then
    for target in "${TARGETS[@]}"; do
        log "docker build --target $target -t linreg-$target:$TAG"
        DOCKER_BUILDKIT=1 docker build --target "$target" -t "linreg-$target:$TAG" \
            ${BASE_IMAGE:+--build-arg BASE_IMAGE="$BASE_IMAGE"} \
            --secret id=pip.conf,src="$secrets/pip.conf" --secret id=pip-ca,src="$secrets/ca.pem" .
    done
    exit 0
fi

# What an image is made of: the build context, the Dockerfile and the base. An image whose
# label says it was built from exactly these is up to date (vfs makes even a fully cached
# rebuild take minutes: every layer is a full copy).
inputs_digest() {  # base-image-id
    {
        echo "$1"
        find Dockerfile .dockerignore pyproject.toml README.md requirements.txt main.py \
            prefect.yaml linreg tasks flows serving -type f ! -path '*/__pycache__/*' \
            ! -name '*.pyc' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
    } | sha256sum | cut -c1-64
}

command -v buildah >/dev/null || { log "neither a docker daemon nor buildah (make image installs buildah)"; exit 1; }
base=$(choose_base)
digest=$(inputs_digest "$("${BUILDAH[@]}" inspect --type image --format '{{.FromImageID}}' "$base")")
for target in "${TARGETS[@]}"; do
    image="linreg-$target:$TAG"
    built_from=$("${BUILDAH[@]}" inspect --type image --format '{{index .Docker.Config.Labels "linreg.inputs"}}' "$image" 2>/dev/null || true)
    if [ "$built_from" = "$digest" ]; then
        log "$image is up to date (inputs $digest)"
        continue
    fi
    log "buildah bud --target $target -t $image (base $base)"
    start=$(date +%s)
    # No --layers: with vfs every cached layer is a full copy of the root filesystem (tens
    # of GB for the two images); the digest above already skips an unchanged image. buildah
    # accepts --force-rm (no container left by a failed step) only beside --no-cache or --layers.
    "${BUILDAH[@]}" bud --isolation chroot --network host --quiet --format docker \
        --no-cache --force-rm \
        --build-arg BASE_IMAGE="$base" --target "$target" -t "$image" --label "linreg.inputs=$digest" \
        --secret id=pip.conf,src="$secrets/pip.conf" --secret id=pip-ca,src="$secrets/ca.pem" . >/dev/null
    log "built $image in $(($(date +%s) - start)) s"
done
# The images that a rebuild replaced, untagged now: each is hundreds of MB under vfs.
"${BUILDAH[@]}" rmi --prune >/dev/null 2>&1 || true
