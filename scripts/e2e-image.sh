#!/usr/bin/env bash
# Images in and out against podman: an image built by podman (busybox base, several layers with deletes, an
# opaque dir, hard links, xattrs, a renamed dir), saved with `podman save --format oci-dir`, then
#   1. `stratafs image mount` of it compared with `podman image mount` of the same image: names, types,
#      modes, owners, sizes, contents, xattrs, link counts and hard-link groups;
#   2. the same changes made by a podman container and in a stratafs mount with a writable layer: the trees
#      compared, and `stratafs diff` (text and JSON) compared with `podman diff`;
#   3. `stratafs commit --to-layout` of the writable layer: checked by skopeo, loaded into podman (and pulled
#      by tag from the saved layout), its tree compared with the container's and run.
# The whole flow runs as root, then again rootless (podman and stratafs as the unprivileged user of
# .ci/rootless-user, in podman's user namespace).
#
# Usage: bash scripts/e2e-image.sh   (STRATAFS=path/to/stratafs to test another build; E2E_ROOTLESS=0 skips
# the rootless pass; E2E_KEEP=1 keeps the temp dir and its logs). Every check prints `PASS name` or `FAIL name: detail`; the last line is
# `N passed, N failed` and the exit status is non-zero when anything failed. Needs root; installs podman,
# buildah, runc, busybox-static, skopeo, jq and attr with apt-get when they are missing (prints a SKIP line
# and exits 0 when they cannot be had). podman runs on the kernel overlay driver (the reference) with private
# stores; everything lives in one temp dir, and the exit trap unmounts what is mounted there and removes it.
set -u

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/e2e-lib.sh
. "$REPO/scripts/e2e-lib.sh"
skip_all() {
    echo "SKIP: image round trips with podman: $1"
    exit 0
}

[ "$(id -u)" -eq 0 ] || skip_all "needs root (rootful podman, owners in the layers)"
# shellcheck disable=SC2317 # called by e2e_tools
have_tools() {
    command -v podman >/dev/null && command -v runc >/dev/null && command -v skopeo >/dev/null &&
        command -v jq >/dev/null && command -v getfattr >/dev/null && [ -x /bin/busybox ] &&
        dpkg -s busybox-static >/dev/null 2>&1
}
e2e_tools have_tools "podman, runc, skopeo, jq, getfattr or busybox-static" \
    podman runc buildah busybox-static skopeo jq attr uidmap
grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null
grep -qw overlay /proc/filesystems || skip_all "no kernel overlayfs for podman's reference store"

STRATAFS=${STRATAFS:-$REPO/target/release/stratafs}
if [ ! -x "$STRATAFS" ]; then
    (cd "$REPO" && cargo build --release >/dev/null 2>&1) || { fail build "cargo build --release failed"; finish; }
fi
STRATAFS=$(readlink -f "$STRATAFS")
echo "podman $(podman --version | awk '{print $3}'), stratafs $STRATAFS"

e2e_temp_dir /var/tmp/stratafs-e2e-image || { fail temp_dir "cannot create a temp dir under /var/tmp"; finish; }
mkdir -p "$T"/{tmp,build/ctx/xdir}
export TMPDIR="$T/tmp"
# The rootful podman's store and configuration; the rootless one is at $T itself (as_user's place).
mkdir -p "$T/rootful"
e2e_podman_config "$T/rootful" "" rootful
export CONTAINERS_STORAGE_CONF="$T/rootful/storage.conf" CONTAINERS_CONF="$T/rootful/containers.conf"
# What the rootless pass runs in podman's user namespace reads these.
cp "$REPO/scripts/e2e-lib.sh" "$T/e2e-lib.sh"

# Pids of stratafs daemons serving a mount under $T.
stratafs_pids() {
    local p
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        [ "$(readlink "/proc/$p/exe" 2>/dev/null)" = "$STRATAFS" ] || continue
        tr '\0' '\n' 2>/dev/null <"/proc/$p/cmdline" | grep -q "^$T/" && echo "$p"
    done
}
ROOTLESS_USED=""
# shellcheck disable=SC2317 # reached through the exit trap
cleanup() {
    trap - EXIT INT TERM
    timeout -k 5 60 podman rm -af -t 0 >/dev/null 2>&1
    timeout -k 5 60 podman image umount -a -f >/dev/null 2>&1
    timeout -k 5 60 podman rmi -af >/dev/null 2>&1
    # The rootless mounts live in the user's namespace, which goes with podman's pause process.
    [ -z "$ROOTLESS_USED" ] || e2e_rootless_reset
    e2e_unmount_all_under "$T"
    sleep 0.3
    local p m
    for p in $(stratafs_pids); do kill -9 "$p" 2>/dev/null; done
    e2e_unmount_all_under "$T"
    for m in $(e2e_mounts_under "$T"); do umount -l "$m" 2>/dev/null; done
    if [ -n "$(e2e_mounts_under "$T")" ]; then
        echo "cleanup: mounts remain under $T, not removing it:" >&2
        e2e_mounts_under "$T" >&2
    elif [ "${E2E_KEEP:-0}" = 1 ]; then
        echo "kept $T (E2E_KEEP=1)"
    else
        rm -rf --one-file-system "$T"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------------------
# The image, built by the rootful podman and saved as an OCI layout. /etc/hosts, /etc/hostname,
# /etc/resolv.conf, /etc/mtab and /run/.containerenv exist so that what the runtime mounts or makes there
# leaves no trace in a container's tree.
R=$T/rootfs
e2e_busybox_rootfs "$R"
mkdir -p "$R"/{proc,sys,dev,run,root,opt/base}
: >"$R/etc/hosts"
: >"$R/etc/hostname"
: >"$R/etc/resolv.conf"
ln -s /proc/mounts "$R/etc/mtab"
: >"$R/run/.containerenv"
echo "base" >"$R/opt/base/b.txt"
echo "note" >"$R/etc/note.txt"
tar -C "$R" --numeric-owner -cf "$T/base.tar" .

echo "with xattrs" >"$T/build/ctx/xdir/xf"
setfattr -n user.origin -v from-context "$T/build/ctx/xdir/xf"
setfattr -n user.empty "$T/build/ctx/xdir/xf"
echo "plain" >"$T/build/ctx/xdir/plain"
# Layers: add (hard links across dirs, symlinks, a FIFO, a sticky dir, a name with spaces); copy in user
# xattrs; delete files and dirs, make a dir opaque (deleted and made again), rename a dir, chown and chmod
# (setuid) lower objects; add again in a deleted dir.
cat >"$T/build/Containerfile" <<'EOF'
FROM localhost/img-base:latest
RUN mkdir -p /opt/keep /opt/opq/sub /opt/victim/deep /opt/ren/deep /opt/empty "/opt/with space" && \
    echo k > /opt/keep/k && echo o > /opt/opq/o && echo s > /opt/opq/sub/s && echo v > /opt/victim/deep/v && \
    echo r > /opt/ren/deep/r && echo t > /opt/ren/top && echo f > /opt/file && echo sp > "/opt/with space/a b" && \
    echo h > /opt/h1 && ln /opt/h1 /opt/h2 && ln /opt/h1 /opt/keep/h3 && ln -s ../etc/note.txt /opt/rel-link && \
    ln -s /opt/keep/k /opt/abs-link && mkfifo /opt/fifo && chmod 1777 /opt/empty && \
    dd if=/dev/zero of=/opt/zeros bs=1k count=300 2>/dev/null
COPY ctx/xdir /opt/xdir
RUN rm -rf /opt/victim /opt/file && rm -rf /opt/opq && mkdir /opt/opq && echo n > /opt/opq/n && \
    mv /opt/ren /opt/renamed && chmod 4755 /opt/keep/k && chown 12:34 /opt/keep /opt/h1 && \
    echo over > /etc/note.txt && rm /opt/base/b.txt
RUN echo top > /opt/top && mkdir /opt/victim && echo back > /opt/victim/back && chmod 640 /opt/renamed/top
LABEL e2e=image
CMD ["/bin/sh"]
EOF
IMG=localhost/img-multi:latest
# podman tags it localhost/img-multi:latest in the layout; the short name finds it.
TAG="img-multi"
# shellcheck disable=SC2317 # the checks call it
pmr() { timeout -k 5 120 podman "$@"; }
check_cmd import_base pmr import --change 'CMD ["/bin/sh"]' --change 'ENV PATH=/bin' "$T/base.tar" \
    localhost/img-base:latest || finish
check_cmd build_image pmr build --network=none --layers -t "$IMG" "$T/build" || finish
check_cmd save_oci_dir pmr save --format oci-dir -o "$T/oci" "$IMG" || finish
echo "layout $T/oci: $(jq -r '.manifests[].annotations."org.opencontainers.image.ref.name"' "$T/oci/index.json"),"\
    "$(jq '.layers | length' "$T/oci/blobs/sha256/$(jq -r '.manifests[0].digest' "$T/oci/index.json" | cut -d: -f2)") layers"

# The changes a container makes, and the stratafs mount too.
CHANGES='set -e
echo added > /opt/added.txt
echo more >> /opt/keep/k
rm /opt/top /opt/h2
rm -rf /opt/opq && mkdir /opt/opq && echo again > /opt/opq/again
mv /opt/renamed /opt/moved
chmod 700 /opt/xdir
chown -h 5:6 /opt/abs-link
ln /opt/h1 /opt/h4
mkdir -p /srv/new/deep && echo d > /srv/new/deep/f
rm -rf /opt/victim
echo over2 > /etc/note.txt
touch /opt/empty/new-in-sticky'

# ---------------------------------------------------------------------------------------------------------
# One pass of the round trips. The pass sets: P (its dir), pm (its podman), ns (runs a command where its
# mounts are: as is for root, in podman's user namespace rootless), X (check name prefix).

# What podman's runtime makes in a container's tree and podman diff and commit leave out (buildah removes it
# from the image's RUN layers, so the image cannot hold it).
RUNTIME_FILES=$(printf '^run/\\.containerenv\t')

# same_trees NAME EXPECTED_DIR ACTUAL_DIR: one check per aspect, NAME_ASPECT.
same_trees() {
    local name=$X$1 a d
    local e="$P/logs/$1.expected" s="$P/logs/$1.stratafs"
    # shellcheck disable=SC2016 # expanded by the inner shell
    if ! ns bash -c '. "$1" && e2e_describe "$2" "$3" && e2e_describe "$4" "$5"' _ "$T/e2e-lib.sh" \
        "$2" "$e" "$3" "$s"; then
        fail "${name}_describe" "cannot list $2 or $3"
        return
    fi
    echo "$name: $(wc -l <"$e.all") entries in podman's tree, $(wc -l <"$s.all") in stratafs's"
    for a in $E2E_ASPECTS; do
        if [ "$a" = hardlinks ] && [ -n "$X" ] && [ "$1" != image ]; then
            # Rootless, kernel overlayfs (no index, no xino) gives a copied-up file and its new hard link
            # different inode numbers, so the reference cannot say which names share an inode: stratafs's
            # tree must show the link the changes made.
            check "${name}_hardlinks" " opt/h1 opt/h4" "$(grep -F ' opt/h1 ' "$s.hardlinks")"
            continue
        fi
        d=$(diff <(grep -v "$RUNTIME_FILES" "$e.$a") <(grep -v "$RUNTIME_FILES" "$s.$a") | grep '^[<>]' | head -n 8 |
            tr '\t\n' ' |')
        if [ -z "$d" ]; then pass "${name}_$a"; else fail "${name}_$a" "(< reference, > stratafs) $d"; fi
    done
}

# stored_layers STATE_DIR: the layer dirs of the store with their inode numbers, on one line.
stored_layers() {
    find "$1/layers/sha256" -mindepth 1 -maxdepth 1 -type d ! -name '.*' -printf '%f:%i ' 2>/dev/null | tr ' ' '\n' |
        sort | tr '\n' ' '
}

# check_ns NAME CMD...: check_cmd where the pass's mounts are.
check_ns() {
    local name=$1
    shift
    check_cmd "$name" ns "$@"
}

round_trips() {
    local layout=$P/oci state=$P/state mnt=$P/mnt/ro mnt_rw=$P/mnt/rw upper=$P/ctr/upper work=$P/ctr/work
    local out=$P/committed ref ctr loaded before d first ref0 now
    local img=$IMG

    # The image in this pass's podman: rootless loads the saved layout.
    if [ "$X" != "" ]; then
        if loaded=$(pm load -i "$layout" 2>&1); then
            pass "${X}podman_load_saved"
            img=$(sed -n 's/^Loaded image[^:]*: *//p' <<<"$loaded" | tail -n1)
        else
            fail "${X}podman_load_saved" "$(tail_of "$loaded")"
            return
        fi
    fi

    # 1. The image read-only: stratafs image mount against podman image mount.
    if check_ns "${X}image_mount" "$STRATAFS" image mount --daemon --state-dir "$state" "$layout:$TAG" "$mnt"; then
        if ref=$(ns podman image mount "$img" 2>"$P/logs/podman-image-mount.err") && [ -n "$ref" ]; then
            same_trees image "$ref" "$mnt"
            ns podman image umount "$img" >/dev/null 2>&1
        else
            fail "${X}podman_image_mount" "$(tail_of "$(cat "$P/logs/podman-image-mount.err")")"
        fi
        check_ns "${X}image_umount" "$STRATAFS" umount "$mnt"
    fi
    # The second mount finds every layer in the store: the same layer dirs, not unpacked again.
    before=$(stored_layers "$state")
    if check_ns "${X}image_mount_again" "$STRATAFS" image mount --daemon --state-dir "$state" "$layout:$TAG" "$mnt"; then
        check "${X}image_mount_again_reuses_layers" "$before" "$(stored_layers "$state")"
        ns "$STRATAFS" umount "$mnt" >/dev/null 2>&1
    fi

    # 2. The same changes by a podman container and in a stratafs mount with a writable layer.
    check_cmd "${X}podman_changes" pm run --name changed "$img" sh -c "$CHANGES"
    pm diff changed >"$P/logs/podman.diff" 2>&1
    pm diff --format json changed >"$P/logs/podman.diff.json" 2>&1
    if check_ns "${X}image_mount_rw" "$STRATAFS" image mount --daemon --state-dir "$state" \
        --upper "$upper" --work "$work" "$layout:$TAG" "$mnt_rw"; then
        check_ns "${X}stratafs_changes" chroot "$mnt_rw" /bin/sh -c "$CHANGES"
        if ctr=$(ns podman mount changed 2>"$P/logs/podman-mount.err") && [ -n "$ctr" ]; then
            same_trees changed "$ctr" "$mnt_rw"
            ns podman umount changed >/dev/null 2>&1
        else
            fail "${X}podman_mount" "$(tail_of "$(cat "$P/logs/podman-mount.err")")"
        fi
        check_ns "${X}image_umount_rw" "$STRATAFS" umount "$mnt_rw"
    fi
    ns "$STRATAFS" diff --state-dir "$state" --upper "$upper" --image "$layout:$TAG" >"$P/logs/stratafs.diff" \
        2>"$P/logs/stratafs.diff.err" || fail "${X}stratafs_diff" "$(tail_of "$(cat "$P/logs/stratafs.diff.err")")"
    ns "$STRATAFS" diff --state-dir "$state" --upper "$upper" --image "$layout:$TAG" --format json \
        >"$P/logs/stratafs.diff.json" 2>>"$P/logs/stratafs.diff.err"
    # One line differs on purpose: podman 4.3 lists the chowned lower symlink /opt/abs-link as A (its layer
    # lookup follows the link, whose absolute target is not on the host); it is in the image, so C.
    echo "${X}podman diff: $(wc -l <"$P/logs/podman.diff") lines; podman: $(grep ' /opt/abs-link$' "$P/logs/podman.diff")"
    d=$(diff <(grep -v ' /opt/abs-link$' "$P/logs/podman.diff") <(grep -v ' /opt/abs-link$' "$P/logs/stratafs.diff") |
        grep '^[<>]' | tr '\n' '|')
    if [ -z "$d" ]; then pass "${X}diff_same_as_podman"; else fail "${X}diff_same_as_podman" "(< podman, > stratafs) $d"; fi
    check "${X}diff_lower_symlink_changed" "C /opt/abs-link" "$(grep ' /opt/abs-link$' "$P/logs/stratafs.diff")"
    local json_filter='map_values(map(select(. != "/opt/abs-link")) | sort)'
    check "${X}diff_json_same_as_podman" "$(jq -S "$json_filter" "$P/logs/podman.diff.json" 2>&1)" \
        "$(jq -S "$json_filter" "$P/logs/stratafs.diff.json" 2>&1)"

    # 3. The writable layer committed as a new image: into a new layout (loaded with podman load), and as a
    #    second tag of the saved one (pulled by that tag; the first tag untouched).
    cp "$layout/index.json" "$P/logs/index.before"
    if check_ns "${X}commit_to_new_layout" "$STRATAFS" commit --state-dir "$state" --upper "$upper" \
        --image "$layout:$TAG" -o "$P/layer.tar.gz" --to-layout "$out:committed" --from "$layout:$TAG"; then
        check_cmd "${X}skopeo_inspect" pm_tool skopeo inspect "oci:$out:committed"
        check_cmd "${X}skopeo_copy_verifies_digests" pm_tool skopeo copy -q "oci:$out:committed" "dir:$P/skopeo-copy"
        if loaded=$(pm load -i "$out" 2>&1); then
            pass "${X}podman_load_committed"
            loaded=$(sed -n 's/^Loaded image[^:]*: *//p' <<<"$loaded" | tail -n1)
            ref=$(ns podman image mount "$loaded" 2>"$P/logs/podman-image-mount2.err")
            ctr=$(ns podman mount changed 2>"$P/logs/podman-mount2.err")
            if [ -n "$ref" ] && [ -n "$ctr" ]; then
                same_trees committed "$ctr" "$ref"
            else
                fail "${X}podman_mount_committed" "$(tail_of "$(cat "$P/logs/podman-image-mount2.err" "$P/logs/podman-mount2.err")")"
            fi
            ns podman umount changed >/dev/null 2>&1
            ns podman image umount "$loaded" >/dev/null 2>&1
            # shellcheck disable=SC2016 # expanded in the container
            d=$(pm run --rm --pull=never "$loaded" sh -c '
                cat /opt/added.txt /opt/keep/k /opt/opq/again /opt/moved/deep/r /etc/note.txt | tr "\n" " "; echo
                for p in /opt/top /opt/h2 /opt/opq/n /opt/renamed /opt/victim; do test -e "$p" && echo "$p present"; done
                stat -c %a /opt/xdir; stat -c %h /opt/h1 /opt/h4' 2>&1)
            check "${X}run_committed_image" "added k more again r over2 |700|2|2" "$(tr '\n' '|' <<<"$d" | sed 's/|$//')"
        else
            fail "${X}podman_load_committed" "$(tail_of "$loaded")"
        fi
    fi
    if check_ns "${X}commit_to_same_layout" "$STRATAFS" commit --state-dir "$state" --upper "$upper" \
        --image "$layout:$TAG" -o "$P/layer2.tar" --to-layout "$layout:e2e-committed" --from "$TAG"; then
        ref0=$(jq -r '.manifests[0].annotations."org.opencontainers.image.ref.name"' "$P/logs/index.before")
        first=$(jq -r '.manifests[0].digest' "$P/logs/index.before")
        now=$(jq -r --arg t "$ref0" '.manifests[] | select(.annotations."org.opencontainers.image.ref.name" == $t) | .digest' \
            "$layout/index.json" 2>&1)
        check "${X}commit_keeps_other_tags" "$first" "$now"
        check "${X}commit_adds_the_tag" "$ref0 e2e-committed" \
            "$(jq -r '[.manifests[].annotations."org.opencontainers.image.ref.name"] | join(" ")' "$layout/index.json" 2>&1)"
        check_cmd "${X}pull_committed_tag" pm pull -q "oci:$layout:e2e-committed"
    fi
    pm rm -f -t 0 changed >/dev/null 2>&1
}

# ---------------------------------------------------------------------------------------------------------
echo "=== rootful"
P=$T/rootful X=""
pm() { timeout -k 5 120 podman "$@"; }
ns() { timeout -k 5 120 "$@"; }
# shellcheck disable=SC2317 # called by round_trips
pm_tool() { timeout -k 5 120 "$@"; }
mkdir -p "$P"/{logs,mnt/ro,mnt/rw,ctr/upper,ctr/work}
cp -a "$T/oci" "$P/oci"
round_trips

if [ "${E2E_ROOTLESS:-1}" = 0 ]; then
    echo "SKIP rootless pass: E2E_ROOTLESS=0"
elif ! command -v setpriv >/dev/null || ! e2e_rootless_user "$REPO"; then
    fail rootless_user "cannot have the unprivileged user of .ci/rootless-user (setpriv, useradd, subordinate ids)"
else
    echo "=== rootless: $USER_NAME ($UID_N), in podman's user namespace"
    ROOTLESS_USED=1
    e2e_rootless_dirs
    e2e_podman_config "$T" "" rootless
    P=$T/rootless X="rootless_"
    pm() { as_user timeout -k 5 120 podman "$@"; }
    ns() { as_user timeout -k 5 120 podman unshare "$@"; }
    # shellcheck disable=SC2317 # called by round_trips
    pm_tool() { as_user timeout -k 5 120 "$@"; }
    mkdir -p "$P"/{logs,mnt/ro,mnt/rw,ctr/upper,ctr/work}
    cp -a "$T/oci" "$P/oci"
    chown -R "$UID_N:$GID_N" "$P" "$T/storage" "$T/run" "$T/storage.conf" "$T/containers.conf"
    chmod 755 "$T/rootful" # the user reads nothing there, but passes $T
    round_trips
    e2e_rootless_reset
fi

sleep 0.3
check no_stratafs_daemon_left "" "$(stratafs_pids | tr '\n' ' ')"
finish
