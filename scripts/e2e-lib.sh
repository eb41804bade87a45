# Shared by the container-engine end-to-end scripts (sourced, not run): check results, podman's
# configuration on a private store, the busybox base image's tree, the unprivileged user of the
# rootless passes, and clean-up of mounts left under a temp dir.
# shellcheck shell=bash

# ---------------------------------------------------------------------------------------------------------
# Results: every check prints `PASS name` or `FAIL name: detail`; `finish` prints `N passed, N failed` and
# exits non-zero when anything failed.
PASSED=0
FAILED=0
pass() { echo "PASS $1"; PASSED=$((PASSED + 1)); }
fail() { echo "FAIL $1: $2"; FAILED=$((FAILED + 1)); }
# check NAME EXPECTED ACTUAL
check() {
    if [ "$2" = "$3" ]; then pass "$1"; else fail "$1" "expected '$2', got '$3'"; fi
}
tail_of() { printf '%s' "$1" | tail -n 3 | tr '\n' ' ' | cut -c1-400; }
# check_cmd NAME CMD...: passes when CMD exits 0; the detail is the last lines of its output.
check_cmd() {
    local name=$1 out rc
    shift
    out=$("$@" 2>&1)
    rc=$?
    if [ $rc -eq 0 ]; then pass "$name"; else fail "$name" "rc=$rc: $(tail_of "$out")"; fi
    return $rc
}
finish() {
    echo "$PASSED passed, $FAILED failed"
    [ "$FAILED" -eq 0 ]
    exit $?
}

# e2e_tools CHECK WHAT PKG...: when the function CHECK fails, installs PKG... with apt-get (updating the
# package lists if the first try fails) and checks again; calls the script's skip_all, naming WHAT (the tools
# CHECK wants), when they cannot be had.
e2e_tools() {
    local check=$1 what=$2 out
    shift 2
    "$check" && return 0
    command -v apt-get >/dev/null || skip_all "no apt-get to install $what with"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q "$@" >/dev/null 2>&1; then
        apt-get update -q >/dev/null 2>&1
        out=$(apt-get install -y -q "$@" 2>&1) || skip_all "apt-get install failed: $(tail_of "$out")"
    fi
    "$check" || skip_all "installed packages still lack $what"
}

# e2e_temp_dir PREFIX: sets T to a new private dir PREFIX-HEX. Lower case only: `podman pull oci:DIR` names
# the image after DIR, and image names must be lower case.
e2e_temp_dir() {
    local _
    T=""
    for _ in 1 2 3 4 5; do
        T=$1-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
        mkdir -m 700 "$T" 2>/dev/null && return 0
    done
    T=""
    return 1
}

# ---------------------------------------------------------------------------------------------------------
# podman's configuration for a private store under DIR.
# e2e_podman_config DIR MOUNT_PROGRAM MODE: writes DIR/storage.conf and DIR/containers.conf. MOUNT_PROGRAM
# empty means the kernel overlay driver itself. MODE rootful: runc, no network namespace, ulimits that fit a
# root without CAP_SYS_RESOURCE, cgroupfs and a file events log (PID 1 need not be systemd). MODE rootless:
# the same without the ulimits, and the store at DIR/storage for the user too.
e2e_podman_config() {
    local dir=$1 program=$2 mode=$3
    {
        echo '[storage]'
        echo 'driver = "overlay"'
        echo "graphroot = \"$dir/storage\""
        echo "runroot = \"$dir/run\""
        [ "$mode" = rootless ] && echo "rootless_storage_path = \"$dir/storage\""
        echo
        echo '[storage.options]'
        echo
        echo '[storage.options.overlay]'
        if [ -n "$program" ]; then
            echo "mount_program = \"$program\""
            [ "$mode" = rootful ] && echo 'mountopt = "nodev"'
        fi
    } >"$dir/storage.conf"
    {
        echo '[containers]'
        echo 'netns = "none"'
        echo 'log_driver = "k8s-file"'
        [ "$mode" = rootful ] && echo 'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]'
        echo
        echo '[engine]'
        echo 'cgroup_manager = "cgroupfs"'
        echo 'events_logger = "file"'
        echo 'runtime = "runc"'
        [ "$mode" = rootful ] && echo "tmp_dir = \"$dir/libpodtmp\""
    } >"$dir/containers.conf"
    mkdir -p "$dir/storage" "$dir/run" "$dir/libpodtmp"
}

# e2e_busybox_rootfs DIR: a static busybox with its applet links, root in passwd and group, a 1777 /tmp.
e2e_busybox_rootfs() {
    local r=$1 a
    mkdir -p "$r"/{bin,etc,tmp}
    cp /bin/busybox "$r/bin/busybox"
    for a in $(/bin/busybox --list); do
        [ "$a" = busybox ] || ln -sf busybox "$r/bin/$a" # `busybox --list` names busybox itself
    done
    echo 'root:x:0:0:root:/root:/bin/sh' >"$r/etc/passwd"
    echo 'root:x:0:' >"$r/etc/group"
    chmod 1777 "$r/tmp"
}

# ---------------------------------------------------------------------------------------------------------
# The unprivileged user of the rootless passes (.ci/rootless-user makes it: subordinate ids, /dev/fuse).
# e2e_rootless_user REPO: sets USER_NAME, UID_N and GID_N; returns non-zero when the user cannot be had.
e2e_rootless_user() {
    USER_NAME=${STRATAFS_ROOTLESS_USER:-stratafs-rootless}
    id -u "$USER_NAME" >/dev/null 2>&1 || bash "$1/.ci/rootless-user" >/dev/null || return 1
    UID_N=$(id -u "$USER_NAME")
    GID_N=$(id -g "$USER_NAME")
}

# as_user CMD...: CMD as the user, with a clean environment pointing podman at the private store in $T.
as_user() {
    setpriv --reuid="$UID_N" --regid="$GID_N" --init-groups env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        HOME="$T/home" XDG_RUNTIME_DIR="$T/xdg" XDG_CONFIG_HOME="$T/home/.config" TMPDIR="$T/tmp" \
        CONTAINERS_STORAGE_CONF="$T/storage.conf" CONTAINERS_CONF="$T/containers.conf" "$@"
}

# e2e_rootless_dirs: the user's home, runtime and temp dirs under $T, and $T readable to it.
e2e_rootless_dirs() {
    chmod 755 "$T"
    mkdir -p "$T/home" "$T/xdg" "$T/tmp"
    chown "$UID_N:$GID_N" "$T/home" "$T/xdg" "$T/tmp"
    chmod 700 "$T/xdg"
}

# e2e_rootless_reset: removes the user's containers and store, and stops podman's pause process, which
# keeps the user and mount namespaces (and any mount left in them) alive.
e2e_rootless_reset() {
    as_user timeout -k 5 60 podman rm -af >/dev/null 2>&1
    as_user timeout -k 5 60 podman system reset -f >/dev/null 2>&1
    local pause
    pause=$(cat "$T/xdg/libpod/tmp/pause.pid" 2>/dev/null)
    [ -n "$pause" ] && kill -9 "$pause" 2>/dev/null
    return 0
}

# ---------------------------------------------------------------------------------------------------------
# Mounts under a dir, deepest first.
e2e_mounts_under() {
    awk -v t="$1" '{ p = $5; gsub(/\\040/, " ", p); if (p == t || index(p, t "/") == 1) print p }' \
        /proc/self/mountinfo | awk '{ print gsub(/\//, "/"), $0 }' | sort -rn | cut -d' ' -f2-
}
# e2e_unmount_all_under DIR: FUSE mounts through fusermount3, others with umount.
e2e_unmount_all_under() {
    local m
    for m in $(e2e_mounts_under "$1"); do
        fusermount3 -u "$m" 2>/dev/null || umount "$m" 2>/dev/null || true
    done
}

# ---------------------------------------------------------------------------------------------------------
# e2e_describe DIR OUT: a tree below DIR, one listing per aspect, to compare with another tree's:
# OUT.{types,modes,owners,sizes,links,hardlinks,contents,xattrs}, one line per object, sorted by path.
# Sizes and link counts are of non-directories (a directory's size is its filesystem's business, and kernel
# overlayfs shows 1 link for a merged directory); `hardlinks` lists the names sharing an inode, one group a
# line; `contents` is the sha256 of regular files and the target of symlinks.
e2e_describe() {
    local dir=$1 out=$2
    (
        cd "$dir" || exit 1
        find . -mindepth 1 -printf '%P\t%y\t%m\t%U:%G\t%s\t%n\t%i\n' | LC_ALL=C sort >"$out.all"
        cut -f1,2 "$out.all" >"$out.types"
        cut -f1,3 "$out.all" >"$out.modes"
        cut -f1,4 "$out.all" >"$out.owners"
        awk -F'\t' '$2 != "d" { print $1 "\t" $5 }' "$out.all" >"$out.sizes"
        awk -F'\t' '$2 != "d" { print $1 "\t" $6 }' "$out.all" >"$out.links"
        awk -F'\t' '$2 != "d" && $6 > 1 { g[$7] = g[$7] " " $1 } END { for (i in g) print g[i] }' "$out.all" |
            LC_ALL=C sort >"$out.hardlinks"
        {
            find . -mindepth 1 -type f -print0 | xargs -0 -r sha256sum | sed 's#  \./#\t#' |
                awk -F'\t' '{ print $2 "\t" $1 }'
            find . -mindepth 1 -type l -printf '%P\t-> %l\n'
        } | LC_ALL=C sort >"$out.contents"
        getfattr -R -P -h -d -m - -e hex . 2>/dev/null |
            awk '/^# file: / { f = substr($0, 9); sub(/^\.\//, "", f); next } /=/ { print f "\t" $0 }' |
            LC_ALL=C sort >"$out.xattrs"
    )
}
# shellcheck disable=SC2034 # read by the scripts that source this file
E2E_ASPECTS="types modes owners sizes links hardlinks contents xattrs"
