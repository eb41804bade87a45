#!/usr/bin/env bash
# Volume archives against podman: `stratafs volume export` imported by `podman volume import`
# and `podman volume export` imported by `stratafs volume import`, both ways, compared on
# names, types, modes, owners, sizes, mtimes, contents, user xattrs, link counts and
# symlink targets; plus the sparse file's size on disk after each import.
#
# Usage: bash scripts/e2e-volume-archive.sh   (STRATAFS=path/to/stratafs to test another build)
# Every check prints `PASS name` or `FAIL name: detail`; the last line is `N passed, N failed`
# and the exit status is non-zero when anything failed. Needs root; installs podman with
# apt-get when it is missing (prints a SKIP line and exits 0 when it cannot be had). podman
# runs on a private store (vfs driver) in one temp dir that the exit trap removes.
set -u

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PASSED=0
FAILED=0
pass() { echo "PASS $1"; PASSED=$((PASSED + 1)); }
fail() { echo "FAIL $1: $2"; FAILED=$((FAILED + 1)); }
finish() {
    echo "$PASSED passed, $FAILED failed"
    [ "$FAILED" -eq 0 ]
    exit $?
}
skip_all() {
    echo "SKIP: podman volume round trips: $1"
    exit 0
}

[ "$(id -u)" -eq 0 ] || skip_all "needs root (owners, device nodes, rootful podman)"
if ! command -v podman >/dev/null; then
    command -v apt-get >/dev/null || skip_all "no podman and no apt-get to install it with"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q podman >/dev/null 2>&1 ||
        { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q podman >/dev/null 2>&1; } ||
        skip_all "apt-get install podman failed"
fi
for tool in getfattr setfattr; do
    command -v "$tool" >/dev/null || skip_all "$tool is missing (apt-get install attr)"
done

STRATAFS=${STRATAFS:-$REPO/target/release/stratafs}
if [ ! -x "$STRATAFS" ]; then
    (cd "$REPO" && cargo build --release >/dev/null 2>&1) || { fail build "cargo build --release failed"; finish; }
fi

T=$(mktemp -d /var/tmp/stratafs-volarc.XXXXXX)
# shellcheck disable=SC2317 # reached through the exit trap
cleanup() {
    podman volume rm -af >/dev/null 2>&1
    rm -rf "$T"
}
trap cleanup EXIT
mkdir -p "$T"/{storage,run,tmp,state}
cat >"$T/storage.conf" <<EOF
[storage]
driver = "vfs"
graphroot = "$T/storage"
runroot = "$T/run"
EOF
cat >"$T/containers.conf" <<EOF
[engine]
tmp_dir = "$T/tmp"
events_logger = "file"
EOF
export CONTAINERS_STORAGE_CONF="$T/storage.conf" CONTAINERS_CONF="$T/containers.conf"
pm() { timeout -k 5 120 podman "$@"; }
sv() { "$STRATAFS" volume --state-dir "$T/state" "$@"; }

# The sample content: owners, modes (setuid, read-only dir), user xattrs, hard links,
# symlinks, a FIFO, a 256 MiB sparse file with 4 KiB of data, a long name, an empty file.
fill() {
    local d=$1
    echo hello >"$d/a"
    chown 1234:5678 "$d/a"
    chmod 4750 "$d/a"
    setfattr -n user.note -v "kept" "$d/a"
    mkdir -p "$d/dir/sub" "$d/$(printf 'long-name-%.0s' 1 2 3 4 5 6 7 8 9 10 11 12)"
    echo sub >"$d/dir/sub/f"
    echo long >"$d/$(printf 'long-name-%.0s' 1 2 3 4 5 6 7 8 9 10 11 12)/file"
    setfattr -n user.dir -v "on a dir" "$d/dir"
    ln "$d/a" "$d/hl"
    ln "$d/a" "$d/dir/hl2"
    ln -s ../a "$d/dir/rel-link"
    ln -s /etc/passwd "$d/abs-link"
    mkfifo "$d/fifo"
    : >"$d/empty"
    truncate -s 256M "$d/sparse"
    echo middle | dd of="$d/sparse" bs=4096 seek=20000 conv=notrunc status=none
    touch -d '2020-01-02 03:04:05' "$d/dir/sub/f"
    chmod 555 "$d/dir/sub"
    chown 42:43 "$d"
    chmod 750 "$d"
}

# One line per object below the root: path, type, mode, owner, size, mtime (s), links, target,
# md5, user xattrs. The root itself is left out: podman's archives have no entry for it.
describe() {
    (
        cd "$1" || exit 1
        find . -mindepth 1 -printf '%p %y %m %U:%G %s %Ts %n %l\n' | sort | while read -r p rest; do
            sum=""
            [ -f "$p" ] && [ ! -L "$p" ] && sum=$(md5sum <"$p" | cut -c1-32)
            x=$(getfattr -h -d -m '^user\.' -e hex "$p" 2>/dev/null | grep -v '^#' | tr '\n' ' ')
            echo "$p $rest $sum $x"
        done
    )
}
# same NAME EXPECTED_DIR ACTUAL_DIR
same() {
    local diff_out
    diff_out=$(diff <(describe "$2") <(describe "$3"))
    if [ -z "$diff_out" ]; then pass "$1"; else fail "$1" "$(head -c 1500 <<<"$diff_out" | tr '\n' '|')"; fi
}
kib_on_disk() { du -k "$1" | cut -f1; }
mountpoint_of() { pm volume inspect "$1" -f '{{.Mountpoint}}'; }

echo "podman $(podman --version | awk '{print $3}'), stratafs $STRATAFS"

# 1. stratafs -> podman -> stratafs.
sv create orig >/dev/null
ORIG="$T/state/volumes/orig/_data"
fill "$ORIG"
if sv export orig -o "$T/stratafs.tar"; then pass stratafs_export; else fail stratafs_export "rc=$?"; fi
pm volume create p1 >/dev/null
if out=$(pm volume import p1 "$T/stratafs.tar" 2>&1); then pass podman_imports_stratafs_archive; else
    fail podman_imports_stratafs_archive "$out"
fi
P1=$(mountpoint_of p1)
same podman_import_matches_original "$ORIG" "$P1"
echo "sparse file on disk: original $(kib_on_disk "$ORIG/sparse") KiB, after podman import $(kib_on_disk "$P1/sparse") KiB"
if pm volume export p1 -o "$T/podman.tar" >/dev/null 2>&1; then pass podman_export; else fail podman_export "rc=$?"; fi
sv create back >/dev/null
if out=$(sv import back "$T/podman.tar" 2>&1); then pass stratafs_imports_podman_archive; else
    fail stratafs_imports_podman_archive "$out"
fi
BACK="$T/state/volumes/back/_data"
same stratafs_import_of_podman_export_matches_original "$ORIG" "$BACK"
kib=$(kib_on_disk "$BACK/sparse")
echo "sparse file on disk after stratafs import of podman's archive: $kib KiB"
if [ "$kib" -lt 1024 ]; then pass stratafs_import_keeps_holes; else fail stratafs_import_keeps_holes "$kib KiB"; fi

# 2. podman -> stratafs -> podman: content written into a podman volume first.
pm volume create p2 >/dev/null
P2=$(mountpoint_of p2)
fill "$P2"
pm volume export p2 -o "$T/p2.tar" >/dev/null 2>&1 || fail podman_export_p2 "rc=$?"
if out=$(sv import --create s2 "$T/p2.tar" 2>&1); then pass stratafs_imports_podman_volume; else
    fail stratafs_imports_podman_volume "$out"
fi
S2="$T/state/volumes/s2/_data"
same stratafs_copy_of_podman_volume "$P2" "$S2"
pm volume create p3 >/dev/null
if out=$(sv export s2 | pm volume import p3 - 2>&1); then pass podman_imports_stratafs_stdout; else
    fail podman_imports_stratafs_stdout "$out"
fi
P3=$(mountpoint_of p3)
same podman_copy_back_matches "$P2" "$P3"

finish
