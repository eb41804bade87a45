#!/usr/bin/env bash
# Benchmark: stratafs vs kernel overlayfs vs fuse-overlayfs on one layer stack, in one run, as
# root. Read path (mount, find, sequential read, RSS) and write path (untar, copy-up of a big
# file, rm -rf of merged trees, chown -R, RSS). Prints a table of medians with ratios.
#
#   sudo scripts/bench.sh                  # everything
#   sudo BENCH=write REPEAT=1 scripts/bench.sh
#   sudo BENCH=image,layers scripts/bench.sh
#   sudo BENCH=memory FILESYSTEMS="fuse-overlayfs stratafs" scripts/bench.sh
#   STRATAFS=/path/to/stratafs scripts/bench.sh
#   FILESYSTEMS="kernel fuse-overlayfs" scripts/bench.sh
#
# Environment:
#   STRATAFS     stratafs binary (default: target/release/stratafs)
#   FUSE_OVERLAYFS  fuse-overlayfs binary (default: fuse-overlayfs from PATH)
#   BENCH        all, or groups separated by commas: read, write, image (read every file, gcc and
#                python3 in a chroot, of a host-root image), layers (cold walk at 20/100/200/400
#                layers, mount at 400), rootless (cold walk, untar and 1 GiB read as the user
#                RL_USER in a user namespace; the kernel with -o userxattr), memory (daemon peak
#                RSS and bytes per entry after a cold walk of the read stack), oci (layer unpack
#                of a gzip image vs tar -x, mount of a 20-layer image from a warm store)
#                (default: all)
#   RL_USER      the unprivileged user of BENCH=rootless (default: stratafs-rootless, made by
#                .ci/rootless-user)
#   BENCH_DIR    work dir; the layer stack, the big files and the tarball are built once and kept
#                there (default: /var/tmp/stratafs-bench)
#   FILESYSTEMS  which to run, in order (default: "kernel fuse-overlayfs stratafs")
#   REPEAT       runs per timing; the median is reported (default: 3)
#   RM_TREES     top-level dirs the rm -rf benchmark removes (default: the two merged dirs with
#                the most entries)
#   CHOWN_TREE   top-level dir the chown -R benchmark changes (default: the biggest other
#                merged dir)
#
# The stack: /usr/share spread over 20 layers (big top-level dirs have their children dealt
# round-robin over all layers, so those dirs merge 20 ways; some small dirs are copied into two
# layers, so files shadow each other), a top layer of whiteouts (char 0:0, understood by all three)
# hiding a few files and one dir, a 1 GiB random file in one layer and a 2 GiB one in another.
#
# Write benchmarks: every run mounts on a fresh upper/work pair, and the clock runs from the
# first write after the mount to the end of the unmount plus a sync of the upper's filesystem,
# so work a filesystem defers (flushes, daemon shutdown) is counted. The result is then checked
# on a second mount of the same upper: the checks of all filesystems must agree.
#
# Layout for adding benchmarks: one bench_* function per measurement, run for each filesystem by
# run_bench; mount_fs/umount_fs take an optional upper and work dir for write benchmarks, and
# write_run times one write run of work_NAME, checked by check_NAME.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
STRATAFS=${STRATAFS:-target/release/stratafs}
FUSE_OVERLAYFS=${FUSE_OVERLAYFS:-fuse-overlayfs}
# Absolute, as some stacks are mounted from inside their own dir.
[[ $STRATAFS == /* ]] || STRATAFS=$PWD/$STRATAFS
[[ $FUSE_OVERLAYFS != */* || $FUSE_OVERLAYFS == /* ]] || FUSE_OVERLAYFS=$PWD/$FUSE_OVERLAYFS
BENCH_DIR=${BENCH_DIR:-/var/tmp/stratafs-bench}
FILESYSTEMS=${FILESYSTEMS:-kernel fuse-overlayfs stratafs}
REPEAT=${REPEAT:-3}
BENCH=${BENCH:-all}
SOURCE_TREE=/usr/share
NLAYERS=20
STACK_VERSION=2 # bump when the stack recipe changes, to rebuild the cache

STACK=$BENCH_DIR/stack
MNT_ROOT=$BENCH_DIR/mnt
BIG_FILE_NAME=bench-data/big-1GiB.bin
BIG_FILE_BYTES=$((1024 * 1024 * 1024))
BIG2_FILE_NAME=bench-data/big-2GiB.bin
BIG2_LAYER=12
RW_ROOT=$BENCH_DIR/rw
UNTAR_BYTES=$((20 * 1000 * 1000))
UNTAR_MAX_FILE=32k # find -size: only files below this go into the tarball
UNTAR_TARBALL=$BENCH_DIR/untar-small-files.v1.tar
UNTAR_TOP=untar-slice # the tarball's single top-level dir
CHOWN_OWNER=12345:12345

die() {
    printf 'bench: %s\n' "$*" >&2
    exit 1
}
note() { printf 'bench: %s\n' "$*" >&2; }

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) exit 1; print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

drop_caches() {
    sync
    echo 3 >/proc/sys/vm/drop_caches
}

# ---------------------------------------------------------------------------------------------
# The layer stack (built once, cached under $STACK)

layer_dir() { printf '%s/L%02d' "$STACK" "$1"; }
top_layer() { layer_dir "$NLAYERS"; }

# Layers bottom first, one per line: L00 .. L19, then the whiteout layer L20; or, where a
# benchmark mounts another stack, the layers it put in MOUNT_LAYERS.
MOUNT_LAYERS=()
layers_bottom_first() {
    local i
    if [ "${#MOUNT_LAYERS[@]}" -gt 0 ]; then
        printf '%s\n' "${MOUNT_LAYERS[@]}"
        return
    fi
    for ((i = 0; i <= NLAYERS; i++)); do layer_dir "$i"; echo; done
}

build_stack() {
    if [ -f "$STACK/.done" ] && [ "$(cat "$STACK/.done")" = "$STACK_VERSION" ]; then
        return
    fi
    note "building the layer stack in $STACK (once)"
    rm -rf "$STACK"
    local i dir name n=0
    for ((i = 0; i <= NLAYERS; i++)); do mkdir -p "$(layer_dir "$i")"; done
    for dir in "$SOURCE_TREE"/*/; do
        dir=${dir%/}
        [ ! -L "$dir" ] || continue # symlinks are copied with the plain files below
        name=${dir##*/}
        local children
        children=$(find "$dir" -mindepth 1 -maxdepth 1 | wc -l)
        if [ "$children" -gt "$NLAYERS" ]; then
            # Deal the children over every layer: $name becomes a 20-way merged dir.
            printf '%s %s %s\n' "$name" "$(find "$dir" | wc -l)" "$(du -sk "$dir" | cut -f1)" \
                >>"$STACK/merged.txt"
            local k=0 child dest
            while IFS= read -r -d '' child; do
                dest=$(layer_dir $(((n + k) % NLAYERS)))/$name
                mkdir -p "$dest"
                cp -a "$child" "$dest/"
                k=$((k + 1))
            done < <(find "$dir" -mindepth 1 -maxdepth 1 -print0 | sort -z)
        else
            cp -a "$dir" "$(layer_dir $((n % NLAYERS)))/"
            if [ $((n % 7)) -eq 0 ]; then
                # Also in a higher layer: its files shadow the lower copies.
                cp -a "$dir" "$(layer_dir $(((n + 3) % NLAYERS)))/"
            fi
        fi
        n=$((n + 1))
    done
    # Plain files at the top of the source tree.
    find "$SOURCE_TREE" -mindepth 1 -maxdepth 1 ! -type d -exec cp -a {} "$(layer_dir 0)/" \;

    build_big_file
    mkdir -p "$(layer_dir 5)/${BIG_FILE_NAME%/*}"
    ln "$BENCH_DIR/big-1GiB.bin" "$(layer_dir 5)/$BIG_FILE_NAME"
    build_big2_file

    build_whiteouts
    pick_deep_path
    echo "$STACK_VERSION" >"$STACK/.done"
}

build_big_file() {
    local f=$BENCH_DIR/big-1GiB.bin
    if [ "$(stat -c %s "$f" 2>/dev/null || echo 0)" = "$BIG_FILE_BYTES" ]; then
        return
    fi
    note "writing 1 GiB of random data to $f (once)"
    head -c "$BIG_FILE_BYTES" /dev/urandom >"$f.tmp"
    mv "$f.tmp" "$f"
}

# The copy-up benchmark's 2 GiB lower file: real data (a sparse file would make copy-up cheap),
# the 1 GiB file twice. Its only link: a hard-linked file takes other copy-up paths.
build_big2_file() {
    local f
    f=$(layer_dir "$BIG2_LAYER")/$BIG2_FILE_NAME
    note "writing the 2 GiB file $f (once)"
    mkdir -p "${f%/*}"
    cat "$BENCH_DIR/big-1GiB.bin" "$BENCH_DIR/big-1GiB.bin" >"$f.tmp"
    mv "$f.tmp" "$f"
}

# Whiteouts in the top layer: five files from layer 3 and one directory from layer 7.
build_whiteouts() {
    local top rel
    top=$(top_layer)
    {
        (cd "$(layer_dir 3)" && find . -mindepth 2 -type f | LC_ALL=C sort | awk 'NR <= 5')
        (cd "$(layer_dir 7)" && find . -mindepth 2 -maxdepth 2 -type d | LC_ALL=C sort | awk 'NR == 1')
    } >"$STACK/whiteouts.txt"
    while IFS= read -r rel; do
        mkdir -p "$top/$(dirname "$rel")"
        mknod "$top/$rel" c 0 0
    done <"$STACK/whiteouts.txt"
    [ -s "$STACK/whiteouts.txt" ] || die "no whiteout targets found under $(layer_dir 3) and $(layer_dir 7)"
}

# The deepest regular file of the stack that no whiteout hides; mount+stat looks it up.
pick_deep_path() {
    local i
    for ((i = NLAYERS - 1; i >= 0; i--)); do
        (cd "$(layer_dir "$i")" && find . -type f -printf '%d %p\n')
    done | LC_ALL=C sort -k1,1nr -k2 | awk -v wh="$STACK/whiteouts.txt" '
        BEGIN { while ((getline w < wh) > 0) hidden[w] = 1 }
        # Reads to the end rather than exit early: an early exit is a SIGPIPE under pipefail.
        !found {
            path = substr($0, index($0, " ") + 1)
            p = path
            while (p != ".") {
                if (p in hidden) next
                sub(/\/[^\/]*$/, "", p)
            }
            print substr(path, 3)
            found = 1
        }' >"$STACK/deep_path.txt"
    [ -s "$STACK/deep_path.txt" ] || die "could not pick a deep path in $STACK"
}

# ---------------------------------------------------------------------------------------------
# Mounting: mount_fs FS MNT [UPPER WORK]; umount_fs FS MNT; daemon_pid FS MNT
# FS is kernel, fuse-overlayfs or stratafs, or kernel-metacopy: the kernel with metadata-only
# copy-up turned on (its default is off, as container engines leave it).

lowerdir_top_first() {
    layers_bottom_first | tac | paste -sd:
}

# mount_FS MNT [UPPER WORK]
# mount_kernel EXTRA_OPTIONS MNT [UPPER WORK]
mount_kernel() {
    local opts
    opts="lowerdir=$(lowerdir_top_first)"
    [ -z "${3:-}" ] || opts+=",upperdir=$3,workdir=$4"
    [ -z "$1" ] || opts+=",$1"
    mount -t overlay overlay -o "$opts" "$2"
}

mount_fuse_overlayfs() {
    local opts
    opts="lowerdir=$(lowerdir_top_first)"
    [ -z "${2:-}" ] || opts+=",upperdir=$2,workdir=$3"
    # fuse-overlayfs 1.x warns about every option it passes on but does not know; keep errors.
    "$FUSE_OVERLAYFS" -o "$opts" "$1" 2> >(grep -v 'unknown argument ignored' >&2)
}

mount_stratafs() {
    local args=() layer
    while IFS= read -r layer; do args+=(--layer "$layer"); done < <(layers_bottom_first)
    [ -z "${2:-}" ] || args+=(--upper "$2" --work "$3")
    "$STRATAFS" mount --daemon "${args[@]}" "$1"
}

mount_fs() {
    local fs=$1 mnt=$2
    shift 2
    mkdir -p "$mnt"
    case $fs in
    kernel) mount_kernel "" "$mnt" "$@" ;;
    kernel-metacopy) mount_kernel metacopy=on,redirect_dir=on "$mnt" "$@" ;;
    fuse-overlayfs) mount_fuse_overlayfs "$mnt" "$@" ;;
    stratafs) mount_stratafs "$mnt" "$@" ;;
    *) die "unknown filesystem $fs" ;;
    esac
}

# The FUSE daemon serving MNT (empty for the kernel).
daemon_pid() {
    local fs=$1 mnt=$2 pid
    case $fs in kernel*) return 0 ;; esac
    for pid in $(pgrep -f -- "$mnt" || true); do
        if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "${fs:0:15}" ]; then
            echo "$pid"
            return 0
        fi
    done
}

umount_fs() {
    local fs=$1 mnt=$2 pid i
    mountpoint -q "$mnt" || return 0
    pid=$(daemon_pid "$fs" "$mnt")
    case $fs in
    kernel*) umount "$mnt" ;;
    *) fusermount3 -u "$mnt" ;;
    esac
    # Wait for the daemon so the next run does not overlap with its shutdown (and write
    # benchmarks count the shutdown's work).
    for ((i = 0; i < 1000; i++)); do
        [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 0
        sleep 0.01
    done
    note "$fs daemon $pid still running 10 s after unmounting $mnt"
}

cleanup() {
    local fs
    for fs in kernel kernel-metacopy fuse-overlayfs stratafs; do
        umount_fs "$fs" "$MNT_ROOT/$fs" 2>/dev/null || umount -l "$MNT_ROOT/$fs" 2>/dev/null || true
    done
    # Upper dirs hold gigabytes after the copy-up benchmark.
    rm -rf "$RW_ROOT"
}

# ---------------------------------------------------------------------------------------------
# Measurements: bench_NAME FS MNT prints one number per run (seconds, or KiB for RSS).

# time_mount_stat FS MNT PATH MOUNT_CMD...: REPEAT times, MOUNT_CMD mounts FS at MNT and
# MNT/PATH is stat'ed, timed from the start of the mount command; then FS is unmounted.
time_mount_stat() {
    local fs=$1 mnt=$2 path=$3 t0 t1 r
    shift 3
    for ((r = 0; r < REPEAT; r++)); do
        t0=$(now)
        "$@"
        stat "$mnt/$path" >/dev/null
        t1=$(now)
        umount_fs "$fs" "$mnt"
        elapsed "$t0" "$t1"
        echo
    done
}

# Mount, then the first stat of a deep path.
bench_mount_stat() {
    local deep
    deep=$(cat "$STACK/deep_path.txt")
    time_mount_stat "$1" "$2" "$deep" mount_fs "$1" "$2"
}

# Cold caches, fresh mount, then a timed find. The mount plus find time goes to the
# cold_mount_find row: a filesystem that reads every layer at mount time pays for it there.
bench_cold_find() {
    local fs=$1 mnt=$2 t0 t1 t2 r
    for ((r = 0; r < REPEAT; r++)); do
        drop_caches
        t0=$(now)
        mount_fs "$fs" "$mnt"
        t1=$(now)
        find "$mnt" -printf '%s\n' >/dev/null
        t2=$(now)
        umount_fs "$fs" "$mnt"
        { elapsed "$t0" "$t2" && echo; } >>"$RESULTS/$fs.cold_mount_find.runs"
        elapsed "$t1" "$t2"
        echo
    done
}

# The same find again on a mount whose caches are warm.
bench_warm_find() {
    local fs=$1 mnt=$2 t0 t1 r
    mount_fs "$fs" "$mnt"
    # The warm-up run also counts the entries, to check the filesystems show the same tree.
    find "$mnt" | wc -l >"$RESULTS/$fs.entries"
    for ((r = 0; r < REPEAT; r++)); do
        t0=$(now)
        find "$mnt" -printf '%s\n' >/dev/null
        t1=$(now)
        elapsed "$t0" "$t1"
        echo
    done
    umount_fs "$fs" "$mnt"
}

# Sequential read of the 1 GiB file on a fresh mount (so no page cache of the mount itself)
# while the layer's file is in the page cache: the filesystem's own read cost.
bench_read_1g() {
    local fs=$1 mnt=$2 t0 t1 r
    cat "$(layer_dir 5)/$BIG_FILE_NAME" >/dev/null
    for ((r = 0; r < REPEAT; r++)); do
        mount_fs "$fs" "$mnt"
        t0=$(now)
        dd if="$mnt/$BIG_FILE_NAME" of=/dev/null bs=1M status=none
        t1=$(now)
        umount_fs "$fs" "$mnt"
        elapsed "$t0" "$t1"
        echo
    done
}

# Daemon peak RSS (VmHWM, KiB) after a cold find and the 1 GiB read, just before unmount.
bench_peak_rss() {
    local fs=$1 mnt=$2 pid
    [ "$fs" != kernel ] || return 0
    drop_caches
    mount_fs "$fs" "$mnt"
    find "$mnt" -printf '%s\n' >/dev/null
    dd if="$mnt/$BIG_FILE_NAME" of=/dev/null bs=1M status=none
    pid=$(daemon_pid "$fs" "$mnt")
    [ -n "$pid" ] || die "cannot find the $fs daemon for $mnt"
    awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status"
    umount_fs "$fs" "$mnt"
}

# ---------------------------------------------------------------------------------------------
# Memory benchmark (BENCH=memory): what the daemon keeps after walking the read stack once.

# rss_kib PID FIELD: a field of /proc/PID/status in KiB (VmHWM, VmRSS, RssAnon, ...).
rss_kib() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }

# Cold caches, fresh mount, one find of the whole stack, then the daemon's peak RSS (VmHWM,
# KiB). The peak right after the mount, the entries find saw and the bytes of peak growth per
# entry go to the walk_rss_mounted, walk_entries and walk_bytes_per_entry rows; the thread
# count and the anonymous/file split of the final RSS to a note under the table.
bench_walk_rss() {
    local fs=$1 mnt=$2 pid mounted peak entries r
    [ "$fs" != kernel ] || return 0
    for ((r = 0; r < REPEAT; r++)); do
        drop_caches
        mount_fs "$fs" "$mnt"
        pid=$(daemon_pid "$fs" "$mnt")
        [ -n "$pid" ] || die "cannot find the $fs daemon for $mnt"
        stat "$mnt" >/dev/null # the daemon has served a request: its threads are up
        mounted=$(rss_kib "$pid" VmHWM)
        entries=$(find "$mnt" -printf '%s\n' | wc -l)
        peak=$(rss_kib "$pid" VmHWM)
        printf '%s threads, RssAnon %s KiB, RssFile %s KiB\n' "$(rss_kib "$pid" Threads)" \
            "$(rss_kib "$pid" RssAnon)" "$(rss_kib "$pid" RssFile)" >"$RESULTS/$fs.walk_rss.note"
        umount_fs "$fs" "$mnt"
        echo "$mounted" >>"$RESULTS/$fs.walk_rss_mounted.runs"
        echo "$entries" >>"$RESULTS/$fs.walk_entries.runs"
        echo "$entries" >"$RESULTS/$fs.entries"
        awk -v p="$peak" -v m="$mounted" -v n="$entries" 'BEGIN { printf "%.1f\n", (p - m) * 1024 / n }' \
            >>"$RESULTS/$fs.walk_bytes_per_entry.runs"
        echo "$peak"
    done
}

# ---------------------------------------------------------------------------------------------
# Image benchmarks (BENCH=image): a 3-layer image made of the host's own root (/etc, /usr and
# the merged-/usr links, minus a few big trees no compiler or interpreter needs), hard-linked
# where the bench dir shares the host's filesystem. /usr/lib is split over two layers so it
# merges. Reading it all exercises open/read/release; gcc and python3 run in a chroot of it.

IMAGE=$BENCH_DIR/image
IMAGE_VERSION=1
IMAGE_SKIP_USR_LIB="google-cloud-sdk jvm llvm-*" # large, and not used by gcc or python3

image_layers() { printf '%s\n' "$IMAGE/L0" "$IMAGE/L1" "$IMAGE/L2"; }

# copy_tree SRC DEST_DIR: hard links where the filesystem allows, else a copy.
copy_tree() {
    cp -al "$1" "$2/" 2>/dev/null || { rm -rf "${2:?}/${1##*/}" && cp -a "$1" "$2/"; }
}

build_image() {
    if [ -f "$IMAGE/.done" ] && [ "$(cat "$IMAGE/.done")" = "$IMAGE_VERSION" ]; then
        return
    fi
    note "building the host-root image in $IMAGE (once)"
    rm -rf "$IMAGE"
    local base=$IMAGE/L0 tools=$IMAGE/L1 extra=$IMAGE/L2 e name skip pat
    mkdir -p "$base/usr/lib" "$base/tmp" "$base/bench" "$tools/usr" "$extra/usr/lib"
    chmod 1777 "$base/tmp"
    for e in /bin /sbin /lib /lib64 /lib32 /libx32; do
        [ -e "$e" ] || [ -L "$e" ] || continue
        if [ -L "$e" ]; then cp -a "$e" "$base/"; else copy_tree "$e" "$base"; fi
    done
    copy_tree /etc "$base"
    for e in /usr/lib/*; do
        name=${e##*/} skip=
        for pat in $IMAGE_SKIP_USR_LIB; do
            # shellcheck disable=SC2254 # $pat is a glob on purpose
            case $name in $pat) skip=1 ;; esac
        done
        [ -z "$skip" ] || continue
        case $name in
        python3*) copy_tree "$e" "$extra/usr/lib" ;;
        *) copy_tree "$e" "$base/usr/lib" ;;
        esac
    done
    for e in bin sbin lib64 libexec; do
        [ ! -e "/usr/$e" ] || copy_tree "/usr/$e" "$tools/usr"
    done
    [ ! -d /usr/include ] || copy_tree /usr/include "$extra/usr"
    printf '#include <stdio.h>\nint main(void) { puts("hello"); return 0; }\n' >"$base/bench/hello.c"
    echo "$IMAGE_VERSION" >"$IMAGE/.done"
}

# mount_image FS MNT [UPPER WORK]
mount_image() {
    local -a MOUNT_LAYERS
    mapfile -t MOUNT_LAYERS < <(image_layers)
    mount_fs "$@"
}

# tar reads nothing when it writes to /dev/null itself, hence the cat. Exit 1 is a warning
# (a socket skipped, a file changed while read).
read_all_files() {
    local status=0
    (cd "$1" && tar cf - . 2>/dev/null | cat >/dev/null) || status=$?
    [ "$status" -le 1 ] || return "$status"
}

# 1. Every file of the image, read through a warm mount (one untimed warm-up pass).
bench_read_all() {
    local fs=$1 mnt=$2 t0 t1 r
    mount_image "$fs" "$mnt"
    read_all_files "$mnt"
    for ((r = 0; r < REPEAT; r++)); do
        t0=$(now)
        read_all_files "$mnt"
        t1=$(now)
        elapsed "$t0" "$t1"
        echo
    done
    umount_fs "$fs" "$mnt"
}

# in_chroot ROOT CMD...: a clean environment, so the host's PATH (pyenv shims) plays no part.
in_chroot() {
    local root=$1
    shift
    chroot "$root" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/tmp LANG=C "$@"
}

# chroot_run FS MNT PROGRAM ACTION: times ACTION MNT (REPEAT runs after one warm-up) in a
# chroot of the image with a fresh upper (gcc writes to /tmp). Prints nothing when the image
# has no PROGRAM.
chroot_run() {
    local fs=$1 mnt=$2 program=$3 action=$4 rw=$RW_ROOT/$1 t0 t1 r
    if [ ! -x "$IMAGE/L1/usr/bin/$program" ]; then
        note "$program is not in the host's /usr/bin: row left empty"
        return 0
    fi
    rm -rf "$rw"
    mkdir -p "$rw/upper" "$rw/work"
    mount_image "$fs" "$mnt" "$rw/upper" "$rw/work"
    "$action" "$mnt" || die "$action failed in a chroot of $fs"
    for ((r = 0; r < REPEAT; r++)); do
        t0=$(now)
        "$action" "$mnt"
        t1=$(now)
        elapsed "$t0" "$t1"
        echo
    done
    umount_fs "$fs" "$mnt"
    rm -rf "$rw"
}

compile_hello() { in_chroot "$1" gcc -O2 -o /tmp/hello /bench/hello.c && in_chroot "$1" /tmp/hello >/dev/null; }
python_start_x10() {
    local i
    for ((i = 0; i < 10; i++)); do in_chroot "$1" python3 -c pass || return; done
}

# 2. gcc compile (and link, and run) of a small file in a chroot of the mount, warm.
bench_chroot_gcc() { chroot_run "$1" "$2" gcc compile_hello; }

# 3. python3 start x10 in a chroot of the mount, warm.
bench_chroot_python() { chroot_run "$1" "$2" python3 python_start_x10; }

# ---------------------------------------------------------------------------------------------
# Layer-count benchmarks (BENCH=layers): 3,000 empty files in 60 dirs, every dir present in every
# layer and the files dealt round-robin over the layers, at each count of SWEEP_LAYER_COUNTS.
# Per-directory cost that grows with the layers a name is not in shows here. Layers are given
# by relative names from the stack's dir: 400 absolute paths overflow the kernel's one-page
# mount options.

SWEEP=$BENCH_DIR/sweep
SWEEP_VERSION=1
SWEEP_DIRS=60
SWEEP_FILES_PER_DIR=50
SWEEP_DEEP_PATH=d59/f49
SWEEP_LAYER_COUNTS="20 100 200 400" # the benchmarks below name these counts

sweep_layer_names() {
    local i
    for ((i = 0; i < $1; i++)); do printf 'L%03d\n' "$i"; done
}

build_sweep() {
    local n=$1 dir=$SWEEP/$1 layer
    if [ -f "$dir/.done" ] && [ "$(cat "$dir/.done")" = "$SWEEP_VERSION" ]; then
        return
    fi
    note "building the $n-layer stack in $dir (once)"
    rm -rf "$dir"
    mkdir -p "$dir"
    while IFS= read -r layer; do
        mkdir -p "$dir/$layer"
        (cd "$dir/$layer" && mkdir $(seq -f 'd%02g' 0 $((SWEEP_DIRS - 1))))
    done < <(sweep_layer_names "$n")
    # File j of dir d goes to layer (d * files + j) mod n.
    awk -v dirs="$SWEEP_DIRS" -v files="$SWEEP_FILES_PER_DIR" -v n="$n" 'BEGIN {
        for (d = 0; d < dirs; d++)
            for (j = 0; j < files; j++)
                printf "L%03d/d%02d/f%02d\n", (d * files + j) % n, d, j
    }' | (cd "$dir" && xargs touch)
    echo "$SWEEP_VERSION" >"$dir/.done"
}

# mount_sweep N FS MNT: mounted from inside the stack's dir, with relative layer names.
mount_sweep() {
    local -a MOUNT_LAYERS
    mapfile -t MOUNT_LAYERS < <(sweep_layer_names "$1")
    (cd "$SWEEP/$1" && mount_fs "$2" "$3")
}

# Cold caches, fresh mount, then a timed find (the mount is not timed).
sweep_walk() {
    local n=$1 fs=$2 mnt=$3 t0 t1 r seen want
    want=$((1 + SWEEP_DIRS + SWEEP_DIRS * SWEEP_FILES_PER_DIR)) # the root, the dirs, the files
    for ((r = 0; r < REPEAT; r++)); do
        drop_caches
        mount_sweep "$n" "$fs" "$mnt"
        t0=$(now)
        seen=$(find "$mnt" -printf '%s\n' | wc -l)
        t1=$(now)
        umount_fs "$fs" "$mnt"
        [ "$seen" -eq "$want" ] || note "WARN: $fs shows $seen entries of the $n-layer stack, not $want"
        elapsed "$t0" "$t1"
        echo
    done
}
bench_sweep_walk_20() { sweep_walk 20 "$@"; }
bench_sweep_walk_100() { sweep_walk 100 "$@"; }
bench_sweep_walk_200() { sweep_walk 200 "$@"; }
bench_sweep_walk_400() { sweep_walk 400 "$@"; }

# Mount of the 400-layer stack, then the first stat of a file in its top layer's last dir.
bench_mount_stat_400() {
    time_mount_stat "$1" "$2" "$SWEEP_DEEP_PATH" mount_sweep 400 "$1" "$2"
}

# ---------------------------------------------------------------------------------------------
# Write benchmarks: bench_NAME FS MNT runs write_run NAME REPEAT times; write_run calls
# prepare_NAME (outside the clock: warms the lower data so the disk does not dominate),
# work_NAME MNT (timed) and check_NAME MNT (on a second mount; one line describing the result).

# The merged dirs the rm -rf and chown -R benchmarks work on, unless RM_TREES/CHOWN_TREE say.
pick_write_trees() {
    local merged=$STACK/merged.txt t
    [ -s "$merged" ] || die "$merged is missing: no merged dirs to write to (rm -rf $STACK to rebuild)"
    # merged.txt: NAME ENTRIES KIB, one merged dir per line.
    if [ -z "${RM_TREES:-}" ]; then
        RM_TREES=$(sort -k2,2nr "$merged" | awk 'NR <= 2 { print $1 }' | paste -sd' ')
    fi
    if [ -z "${CHOWN_TREE:-}" ]; then
        CHOWN_TREE=$(sort -k3,3nr "$merged" |
            awk -v rm=" $RM_TREES " '!found && index(rm, " " $1 " ") == 0 { print $1; found = 1 }')
    fi
    for t in $RM_TREES $CHOWN_TREE; do
        [ -n "$(lower_copies "$t")" ] || die "no layer of $STACK has a top-level dir '$t' (check RM_TREES/CHOWN_TREE)"
    done
}

# The layers' copies of top-level dir $1, one per line.
lower_copies() {
    local i
    for ((i = 0; i <= NLAYERS; i++)); do
        [ ! -d "$(layer_dir "$i")/$1" ] || echo "$(layer_dir "$i")/$1"
    done
}

# A contiguous slice (in path order) of the small files of the source tree, about
# UNTAR_BYTES in all, each after its parent dirs, under the single top-level dir UNTAR_TOP.
build_untar_tarball() {
    [ ! -s "$UNTAR_TARBALL" ] || return 0
    note "building $UNTAR_TARBALL from the small files of $SOURCE_TREE (once)"
    local list=$BENCH_DIR/untar-files.txt
    (cd "$SOURCE_TREE" && find . -type f -size "-$UNTAR_MAX_FILE" -printf '%s %P\n') | LC_ALL=C sort -k2 |
        awk -v max="$UNTAR_BYTES" '
        total < max {
            path = substr($0, index($0, " ") + 1)
            n = split(path, part, "/")
            dir = part[1]
            for (i = 1; i < n; i++) {
                if (i > 1) dir = dir "/" part[i]
                if (!(dir in seen)) { seen[dir] = 1; print dir }
            }
            print path
            total += $1
        }' >"$list"
    tar -C "$SOURCE_TREE" --no-recursion --verbatim-files-from --transform "s,^,$UNTAR_TOP/," \
        -cf "$UNTAR_TARBALL.tmp" -T "$list"
    mv "$UNTAR_TARBALL.tmp" "$UNTAR_TARBALL"
    rm -f "$list"
}

# One line describing a tree: entry count, bytes of regular files, and a digest of every
# entry's type, mode, owner, (for files) size, mtime and content, and symlink target.
tree_summary() {
    local dir=$1 entries bytes digest
    entries=$(find "$dir" | wc -l)
    bytes=$(find "$dir" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
    digest=$(cd "$dir" && {
        find . \( -type f -printf '%y %m %U:%G %s %T@ %p\n' \) -o -printf '%y %m %U:%G %p %l\n'
        find . -type f -print0 | xargs -0r md5sum
    } | LC_ALL=C sort | md5sum | cut -c1-12)
    printf '%s entries, %s bytes, digest %s\n' "$entries" "$bytes" "$digest"
}

# The upper dir's disk usage (KiB) goes to $RESULTS/FS.NAME.upper_kib.
# write_run NAME FS MNT
write_run() {
    local name=$1 fs=$2 mnt=$3 rw=$RW_ROOT/$2 t0 t1 status=0
    rm -rf "$rw"
    mkdir -p "$rw/upper" "$rw/work"
    "prepare_$name"
    sync -f "$rw"
    mount_fs "$fs" "$mnt" "$rw/upper" "$rw/work"
    t0=$(now)
    "work_$name" "$mnt" || status=$?
    umount_fs "$fs" "$mnt"
    sync -f "$rw"
    t1=$(now)
    mount_fs "$fs" "$mnt" "$rw/upper" "$rw/work"
    if [ "$status" -ne 0 ]; then
        note "WARN: $name on $fs failed (exit $status)"
        echo "FAILED (exit $status)" >>"$RESULTS/$fs.$name.checks"
    else
        "check_$name" "$mnt" >>"$RESULTS/$fs.$name.checks" ||
            echo "CHECK FAILED" >>"$RESULTS/$fs.$name.checks"
    fi
    umount_fs "$fs" "$mnt"
    du -sk "$rw/upper" | cut -f1 >"$RESULTS/$fs.$name.upper_kib"
    rm -rf "$rw"
    [ "$status" -ne 0 ] || { elapsed "$t0" "$t1" && echo; }
}

repeat_write_run() {
    local r
    for ((r = 0; r < REPEAT; r++)); do write_run "$@"; done
}

# 1. Untar about 20 MB of small files into a new dir: file creation through the filesystem.
prepare_untar() { cat "$UNTAR_TARBALL" >/dev/null; }
work_untar() { tar -xf "$UNTAR_TARBALL" -C "$1"; }
check_untar() { tree_summary "$1/$UNTAR_TOP"; }
bench_untar() { repeat_write_run untar "$1" "$2"; }

# 2. Append one byte to the 2 GiB lower file: a full copy-up of its data.
prepare_append_2g() { cat "$(layer_dir "$BIG2_LAYER")/$BIG2_FILE_NAME" >/dev/null; }
work_append_2g() { printf x >>"$1/$BIG2_FILE_NAME"; }
check_append_2g() { file_summary "$1/$BIG2_FILE_NAME"; }
bench_append_2g() { repeat_write_run append_2g "$1" "$2"; }

# Size and digests of the first MiB and of the last MiB + 1 byte: where copy-up and append meet.
file_summary() {
    printf 'size %s, head %s, tail %s\n' "$(stat -c %s "$1")" \
        "$(head -c 1048576 "$1" | md5sum | cut -c1-12)" "$(tail -c 1048577 "$1" | md5sum | cut -c1-12)"
}

# 3. rm -rf of merged lower trees: a whiteout (or opaque dir) per lower entry.
prepare_rm_trees() {
    local t dirs
    for t in $RM_TREES; do
        mapfile -t dirs < <(lower_copies "$t")
        find "${dirs[@]}" >/dev/null
    done
}
work_rm_trees() {
    local t
    for t in $RM_TREES; do rm -rf -- "${1:?}/$t" || return; done
}
# Lookup and readdir must both miss the removed trees.
check_rm_trees() {
    local t parts=() names
    names=$(find "$1" -mindepth 1 -maxdepth 1 -printf '%f\n')
    for t in $RM_TREES; do
        if [ -e "$1/$t" ] || [ -L "$1/$t" ]; then parts+=("$t present"); else parts+=("$t gone"); fi
        parts+=("listed $(grep -cxF -- "$t" <<<"$names" || true)")
    done
    parts+=("$(wc -l <<<"$names") top-level entries")
    join_comma "${parts[@]}"
}

join_comma() {
    local s
    s=$(printf '%s, ' "$@")
    echo "${s%, }"
}
bench_rm_trees() { repeat_write_run rm_trees "$1" "$2"; }

# 4. chown -R of a merged lower tree: stratafs copies metadata only (the kernel's metacopy
# format); the kernel without metacopy=on and fuse-overlayfs 1.x copy every file's data.
prepare_chown() {
    local dirs
    mapfile -t dirs < <(lower_copies "$CHOWN_TREE")
    find "${dirs[@]}" -type f -print0 | xargs -0r cat >/dev/null
}
work_chown() { chown -R -h "$CHOWN_OWNER" "$1/$CHOWN_TREE"; }
check_chown() {
    printf '%s, not owned by %s: %s\n' "$(tree_summary "$1/$CHOWN_TREE")" "$CHOWN_OWNER" \
        "$(find "$1/$CHOWN_TREE" ! \( -user "${CHOWN_OWNER%:*}" -group "${CHOWN_OWNER#*:}" \) | wc -l)"
}
bench_chown() { repeat_write_run chown "$1" "$2"; }

# The same on the kernel with metacopy=on (the fair comparison), for the kernel column only.
bench_chown_metacopy() {
    local mnt=$MNT_ROOT/kernel-metacopy rw=$RW_ROOT/kernel-metacopy err
    [ "$1" = kernel ] || return 0
    rm -rf "$rw"
    mkdir -p "$rw/upper" "$rw/work" "$mnt"
    if ! err=$(mount_fs kernel-metacopy "$mnt" "$rw/upper" "$rw/work" 2>&1); then
        note "kernel overlayfs does not mount with metacopy=on,redirect_dir=on ($err): row left empty"
        rm -rf "$rw"
        return 0
    fi
    umount_fs kernel-metacopy "$mnt"
    repeat_write_run chown kernel-metacopy "$mnt"
}

# 5. Daemon peak RSS (VmHWM, KiB) after all the write work on one mount, before unmount.
bench_write_rss() {
    local fs=$1 mnt=$2 rw=$RW_ROOT/$1 name pid
    case $fs in kernel*) return 0 ;; esac
    rm -rf "$rw"
    mkdir -p "$rw/upper" "$rw/work"
    mount_fs "$fs" "$mnt" "$rw/upper" "$rw/work"
    for name in untar append_2g rm_trees chown; do
        "work_$name" "$mnt" || note "WARN: $name on $fs failed during the RSS run"
    done
    pid=$(daemon_pid "$fs" "$mnt")
    [ -n "$pid" ] || die "cannot find the $fs daemon for $mnt"
    awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status"
    umount_fs "$fs" "$mnt"
    rm -rf "$rw"
}

# What the checks must show, where that is known without a mount.
write_expectations() {
    local ref big t n
    ref=$(mktemp -d "$BENCH_DIR/untar-ref.XXXXXX")
    tar -xf "$UNTAR_TARBALL" -C "$ref"
    tree_summary "$ref/$UNTAR_TOP" >"$RESULTS/expected.untar.checks"
    rm -rf "$ref"

    big=$(layer_dir "$BIG2_LAYER")/$BIG2_FILE_NAME
    printf 'size %s, head %s, tail %s\n' $((2 * BIG_FILE_BYTES + 1)) \
        "$(head -c 1048576 "$big" | md5sum | cut -c1-12)" \
        "$( { tail -c 1048576 "$big"; printf x; } | md5sum | cut -c1-12)" >"$RESULTS/expected.append_2g.checks"

    # Top-level names: the union of the layers' (whiteouts in this stack are all deeper).
    n=$(find "$STACK"/L* -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -u | wc -l)
    local parts=()
    for t in $RM_TREES; do
        parts+=("$t gone" "listed 0")
        n=$((n - 1))
    done
    parts+=("$n top-level entries")
    join_comma "${parts[@]}" >"$RESULTS/expected.rm_trees.checks"
}

# ---------------------------------------------------------------------------------------------
# Rootless benchmarks (BENCH=rootless): each run happens inside a user namespace as the
# unprivileged user RL_USER (made by .ci/rootless-user), as rootless podman runs its mount
# program: runuser -u RL_USER -- unshare --map-auto --map-root-user --mount. The kernel column
# is overlayfs with -o userxattr (in the same kind of namespace), fuse-overlayfs runs rootless,
# and stratafs picks its rootless mode by itself. The stack (/usr/share dealt over RL_NLAYERS
# layers, every top-level dir merged, plus a copy of the 1 GiB file) and the stratafs binary are
# copied under RL_DIR and owned by the user, who cannot read root's paths. Only the cache drop
# runs outside the namespace, as root.

RL_USER=${RL_USER:-stratafs-rootless}
RL_DIR=$BENCH_DIR/rootless
RL_STACK=$RL_DIR/stack
RL_NLAYERS=5
RL_VERSION=1
RL_PIDS=$RL_DIR/run/daemon.pids # FUSE daemons started in a namespace, for cleanup

build_rootless_stack() {
    id -u "$RL_USER" >/dev/null 2>&1 || die "no user $RL_USER: run .ci/rootless-user as root"
    if ! [ -f "$RL_STACK/.done" ] || [ "$(cat "$RL_STACK/.done")" != "$RL_VERSION" ]; then
        note "building the rootless stack in $RL_STACK (once)"
        rm -rf "$RL_STACK"
        local i dir name child k
        for ((i = 0; i < RL_NLAYERS; i++)); do mkdir -p "$RL_STACK/L$i"; done
        for dir in "$SOURCE_TREE"/*/; do
            dir=${dir%/}
            [ ! -L "$dir" ] || continue
            name=${dir##*/} k=0
            while IFS= read -r -d '' child; do
                mkdir -p "$RL_STACK/L$((k % RL_NLAYERS))/$name"
                cp -a "$child" "$RL_STACK/L$((k % RL_NLAYERS))/$name/"
                k=$((k + 1))
            done < <(find "$dir" -mindepth 1 -maxdepth 1 -print0 | sort -z)
        done
        build_big_file
        mkdir -p "$RL_STACK/L1/${BIG_FILE_NAME%/*}"
        cp "$BENCH_DIR/big-1GiB.bin" "$RL_STACK/L1/$BIG_FILE_NAME"
        # The namespace maps the user to root: the stack reads as root-owned inside it.
        chown -R "$RL_USER:$RL_USER" "$RL_STACK"
        echo "$RL_VERSION" >"$RL_STACK/.done"
    fi
    build_untar_tarball
    mkdir -p "$RL_DIR/bin" "$RL_DIR/run" "$RL_DIR/mnt"
    if [ -x "$STRATAFS" ]; then install -m 0755 "$STRATAFS" "$RL_DIR/bin/stratafs"; fi
    install -m 0644 "$UNTAR_TARBALL" "$RL_DIR/untar.tar"
    chmod 0755 "$RL_DIR" "$RL_DIR/bin"
    chown "$RL_USER:$RL_USER" "$RL_DIR/run" "$RL_DIR/mnt"
    : >"$RL_PIDS"
    chown "$RL_USER:$RL_USER" "$RL_PIDS"
    rm -f "$RL_DIR"/run/entries-* # counts of an earlier run
}

# The functions below run inside the namespace (handed over by declare -f); they see only
# the RL_* variables and the binaries passed as arguments.
rl_mount() {
    local fs=$1 mnt=$2 upper=${3:-} work=${4:-} lowers layer args=() pid
    lowers=$(find "$RL_STACK" -mindepth 1 -maxdepth 1 -name 'L*' | sort -r | paste -sd:)
    mkdir -p "$mnt"
    case $fs in
    kernel)
        local opts="lowerdir=$lowers,userxattr"
        [ -z "$upper" ] || opts+=",upperdir=$upper,workdir=$work"
        mount -t overlay overlay -o "$opts" "$mnt"
        ;;
    fuse-overlayfs)
        local opts="lowerdir=$lowers"
        [ -z "$upper" ] || opts+=",upperdir=$upper,workdir=$work"
        "$RL_FUSE_OVERLAYFS" -o "$opts" "$mnt" 2> >(grep -v 'unknown argument ignored' >&2)
        ;;
    stratafs)
        while IFS= read -r layer; do args+=(--layer "$layer"); done < <(tr : '\n' <<<"$lowers" | tac)
        [ -z "$upper" ] || args+=(--upper "$upper" --work "$work")
        "$RL_STRATAFS" mount --daemon "${args[@]}" "$mnt"
        ;;
    esac
    [ "$fs" != kernel ] || return 0
    for pid in $(pgrep -f -- "$mnt" || true); do
        if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "${fs:0:15}" ]; then
            echo "$pid" >>"$RL_PIDS"
            RL_MOUNT_PID=$pid
        fi
    done
}

# Unmounts and waits for the daemon of this namespace's mount, so its shutdown is counted.
rl_umount() {
    local mnt=$1 pid i
    mountpoint -q "$mnt" || return 0
    umount "$mnt"
    pid=${RL_MOUNT_PID:-}
    for ((i = 0; i < 1000; i++)); do
        [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 0
        sleep 0.01
    done
    echo "bench: daemon $pid still running 10 s after unmounting $mnt" >&2
}

rl_now() { date +%s.%N; }
rl_elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f\n", b - a }'; }

# rl_action FS ACTION: one timed run inside the namespace; prints seconds. The trap unmounts
# whatever the run left mounted, also when it fails.
rl_action() {
    local fs=$1 action=$2 mnt=$RL_DIR/mnt/$1 rw=$RL_DIR/run/rw-$1 t0 t1
    # Globals: the trap runs after this function has returned.
    RL_MNT=$mnt RL_RW=$rw
    trap 'rl_umount "$RL_MNT" 2>/dev/null || umount -l "$RL_MNT" 2>/dev/null; rm -rf "$RL_RW"' EXIT
    case $action in
    walk)
        rl_mount "$fs" "$mnt"
        t0=$(rl_now)
        find "$mnt" -printf '%s\n' >/dev/null
        t1=$(rl_now)
        find "$mnt" | wc -l >"$RL_DIR/run/entries-$fs"
        ;;
    untar)
        cat "$RL_DIR/untar.tar" >/dev/null
        rm -rf "$rw"
        mkdir -p "$rw/upper" "$rw/work"
        rl_mount "$fs" "$mnt" "$rw/upper" "$rw/work"
        t0=$(rl_now)
        # No chown: the tarball's owners are not all mapped in the namespace.
        tar --no-same-owner -xf "$RL_DIR/untar.tar" -C "$mnt"
        rl_umount "$mnt"
        sync -f "$rw"
        t1=$(rl_now)
        ;;
    read_1g)
        cat "$RL_STACK/L1/$RL_BIG_FILE_NAME" >/dev/null
        rl_mount "$fs" "$mnt"
        t0=$(rl_now)
        dd if="$mnt/$RL_BIG_FILE_NAME" of=/dev/null bs=1M status=none
        t1=$(rl_now)
        ;;
    esac
    rl_umount "$mnt"
    rl_elapsed "$t0" "$t1"
}

# in_userns FS ACTION: rl_action as RL_USER in a new user and mount namespace.
in_userns() (
    local strata=$RL_DIR/bin/stratafs
    cd / # the user may not read the checkout
    runuser -u "$RL_USER" -- env RL_DIR="$RL_DIR" RL_STACK="$RL_STACK" RL_PIDS="$RL_PIDS" \
        RL_STRATAFS="$strata" RL_FUSE_OVERLAYFS="$(command -v "$FUSE_OVERLAYFS")" \
        RL_BIG_FILE_NAME="$BIG_FILE_NAME" \
        unshare --map-auto --map-root-user --mount bash -c \
        "set -euo pipefail; $(declare -f rl_mount rl_umount rl_now rl_elapsed rl_action); rl_action \"\$@\"" \
        bash "$@"
)

# Ends the daemons a namespace left behind (a failed run), by the pids recorded at mount.
rl_cleanup() {
    local pid
    [ -f "$RL_PIDS" ] || return 0
    while IFS= read -r pid; do
        case $(cat "/proc/$pid/comm" 2>/dev/null) in
        stratafs | fuse-overlayfs) kill "$pid" 2>/dev/null || true ;;
        esac
    done < <(sort -u "$RL_PIDS")
    : >"$RL_PIDS"
    rm -rf "$RL_DIR"/run/rw-*
}

rl_repeat() {
    local r
    for ((r = 0; r < REPEAT; r++)); do "$@"; done
}

# 1. Cold caches (dropped as root), fresh mount in the namespace, then a timed find.
rl_cold_walk() {
    drop_caches
    in_userns "$1" walk
}
bench_rl_walk() {
    rl_repeat rl_cold_walk "$1"
    [ ! -s "$RL_DIR/run/entries-$1" ] || cp "$RL_DIR/run/entries-$1" "$RESULTS/$1.rl_entries"
}

# 2. Untar ~20 MB of small files on a fresh upper; the clock runs to the end of umount + sync.
bench_rl_untar() { rl_repeat in_userns "$1" untar; }

# 3. Sequential read of the 1 GiB file on a fresh mount, the layer's file in the page cache.
bench_rl_read_1g() { rl_repeat in_userns "$1" read_1g; }

# ---------------------------------------------------------------------------------------------
# Running and reporting

# ---------------------------------------------------------------------------------------------
# OCI image benchmarks (BENCH=oci), on images stratafs itself writes into OCI layouts with
# `commit --to-layout` (built once under $OCI_DIR):
#   host:v3  the host-root image of BENCH=image (3 layers, gzip, as registries ship them);
#   stack:l20  /usr/share dealt over 20 layers (plain tar), the last layer deleting a few
#              names of the others.
# oci_unpack: every layer of host:v3 unpacked into new dirs, then synced (stratafs layer
# unpack syncs before its final rename): `stratafs layer unpack` in the stratafs column,
# `tar -x` (xattrs, numeric owners, modes) + `sync -f` in the kernel column.
# oci_mount_20: mount of stack:l20 from a warm store (its layers already unpacked) plus a
# first stat: `stratafs image mount`; the kernel and fuse-overlayfs columns mount the same
# store dirs as lowerdirs.

OCI_DIR=$BENCH_DIR/oci
OCI_VERSION=1
OCI_STATE=$OCI_DIR/state
OCI_STACK_LAYERS=20

# oci_commit LAYOUT TAG FROM DIR [OUT]: DIR (an upper dir over nothing) as a new layer on FROM.
oci_commit() {
    local empty=$OCI_DIR/empty args=()
    mkdir -p "$empty"
    [ -z "${5:-}" ] || args=(-o "$5")
    "$STRATAFS" commit --upper "$4" --layer "$empty" "${args[@]}" \
        --to-layout "$1:$2" --from "$3" >/dev/null
}

# A layout at $1 holding one image without layers, tagged `empty`, to commit the first layer on.
oci_empty_layout() {
    local dir=$1 config manifest sha_c sha_m
    mkdir -p "$dir/blobs/sha256"
    config='{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/bin:/bin"]},"rootfs":{"type":"layers","diff_ids":[]}}'
    sha_c=$(printf '%s' "$config" | sha256sum | cut -d' ' -f1)
    printf '%s' "$config" >"$dir/blobs/sha256/$sha_c"
    manifest=$(printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[]}' \
        "$sha_c" "${#config}")
    sha_m=$(printf '%s' "$manifest" | sha256sum | cut -d' ' -f1)
    printf '%s' "$manifest" >"$dir/blobs/sha256/$sha_m"
    printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"empty"}}]}' \
        "$sha_m" "${#manifest}" >"$dir/index.json"
    echo '{"imageLayoutVersion":"1.0.0"}' >"$dir/oci-layout"
}

# build_oci: both images, each built once (a marker file says it is whole).
build_oci() {
    [ -x "$STRATAFS" ] || die "BENCH=oci builds its images with stratafs: $STRATAFS is missing"
    mkdir -p "$OCI_DIR"
    build_oci_host
    build_oci_stack
}

build_oci_host() {
    local i prev=empty dir=$OCI_DIR/host
    [ "$(cat "$dir.done" 2>/dev/null)" != "$OCI_VERSION" ] || return 0
    build_image
    note "building the OCI image $dir:v3 (once)"
    rm -rf "$dir"
    oci_empty_layout "$dir"
    for i in 0 1 2; do
        oci_commit "$dir" "v$((i + 1))" "$prev" "$IMAGE/L$i"
        prev=v$((i + 1))
    done
    echo "$OCI_VERSION" >"$dir.done"
}

build_oci_stack() {
    local i prev=empty dir=$OCI_DIR/stack src=$OCI_DIR/stack-src d name n=0
    [ "$(cat "$dir.done" 2>/dev/null)" != "$OCI_VERSION" ] || return 0
    note "building the OCI image $dir:l$OCI_STACK_LAYERS (once)"
    rm -rf "$dir" "$src" "$OCI_STATE"
    # Top-level dirs of /usr/share dealt round-robin over the layers but the last (hard links).
    for ((i = 0; i < OCI_STACK_LAYERS; i++)); do mkdir -p "$src/L$i/usr/share"; done
    for d in "$SOURCE_TREE"/*/; do
        d=${d%/}
        [ ! -L "$d" ] || continue
        copy_tree "$d" "$src/L$((n % (OCI_STACK_LAYERS - 1)))/usr/share"
        n=$((n + 1))
    done
    # The top layer deletes the first file of every tenth dir (char 0:0 whiteouts, as an upper).
    n=0
    for d in "$SOURCE_TREE"/*/; do
        n=$((n + 1))
        [ $((n % 10)) -eq 0 ] || continue
        name=$(find "$d" -maxdepth 1 -type f -printf '%f\n' | sort | head -n1)
        [ -n "$name" ] || continue
        d=${d%/}
        mkdir -p "$src/L$((OCI_STACK_LAYERS - 1))/usr/share/${d##*/}"
        mknod "$src/L$((OCI_STACK_LAYERS - 1))/usr/share/${d##*/}/$name" c 0 0
    done
    oci_empty_layout "$dir"
    for ((i = 0; i < OCI_STACK_LAYERS; i++)); do
        oci_commit "$dir" "l$((i + 1))" "$prev" "$src/L$i" "$OCI_DIR/layer.tar"
        rm -f "$OCI_DIR/layer.tar"
        prev=l$((i + 1))
    done
    rm -rf "$src"
    # Warm the store: the first mount unpacks every layer.
    mkdir -p "$MNT_ROOT/oci-warmup"
    "$STRATAFS" image mount --daemon --state-dir "$OCI_STATE" "$dir:l$OCI_STACK_LAYERS" \
        "$MNT_ROOT/oci-warmup"
    umount_fs stratafs "$MNT_ROOT/oci-warmup"
    echo "$OCI_VERSION" >"$dir.done"
}

# oci_layers LAYOUT TAG: the image's diffIDs, bottom first, as hex.
oci_diff_ids() {
    local dir=$1 tag=$2 manifest config
    manifest=$(tr -d ' \n' <"$dir/index.json" | grep -o '"digest":"sha256:[0-9a-f]*","size":[0-9]*,"annotations":{"org.opencontainers.image.ref.name":"'"$tag"'"' |
        sed 's/.*"sha256:\([0-9a-f]*\)".*/\1/')
    config=$(tr -d ' \n' <"$dir/blobs/sha256/$manifest" | sed 's/.*"config":{[^}]*"digest":"sha256:\([0-9a-f]*\)".*/\1/')
    tr -d ' \n' <"$dir/blobs/sha256/$config" | sed 's/.*"diff_ids":\[\([^]]*\)\].*/\1/' | tr ',' '\n' |
        sed 's/"sha256:\([0-9a-f]*\)"/\1/'
}

# oci_layer_blobs LAYOUT TAG: the image's layer blob paths, bottom first.
oci_layer_blobs() {
    local dir=$1 tag=$2 manifest
    manifest=$(tr -d ' \n' <"$dir/index.json" | grep -o '"digest":"sha256:[0-9a-f]*","size":[0-9]*,"annotations":{"org.opencontainers.image.ref.name":"'"$tag"'"' |
        sed 's/.*"sha256:\([0-9a-f]*\)".*/\1/')
    tr -d ' \n' <"$dir/blobs/sha256/$manifest" | sed 's/.*"layers":\[\(.*\)\].*/\1/' |
        grep -o '"digest":"sha256:[0-9a-f]*"' | sed "s#.*sha256:\([0-9a-f]*\)\"#$dir/blobs/sha256/\1#"
}

bench_oci_unpack() {
    local fs=$1 r t0 t1 blob i out=$BENCH_DIR/oci-unpack
    case $fs in kernel | stratafs) ;; *) return 0 ;; esac
    for ((r = 0; r < REPEAT; r++)); do
        rm -rf "$out"
        mkdir -p "$out"
        sync
        i=0
        t0=$(now)
        while IFS= read -r blob; do
            if [ "$fs" = kernel ]; then
                mkdir "$out/$i"
                tar --xattrs --xattrs-include='*' --numeric-owner -xpzf "$blob" -C "$out/$i"
                sync -f "$out/$i"
            else
                "$STRATAFS" layer unpack "$blob" "$out/$i" 2>/dev/null
            fi
            i=$((i + 1))
        done < <(oci_layer_blobs "$OCI_DIR/host" v3)
        t1=$(now)
        elapsed "$t0" "$t1"
        echo
    done
    rm -rf "$out"
}

# oci_mount FS MNT: stack:l20 by `stratafs image mount` in the stratafs column, by its
# unpacked store dirs (MOUNT_LAYERS) in the others.
oci_mount() {
    local fs=$1 mnt=$2
    if [ "$fs" = stratafs ]; then
        "$STRATAFS" image mount --daemon --state-dir "$OCI_STATE" \
            "$OCI_DIR/stack:l$OCI_STACK_LAYERS" "$mnt"
    else
        mount_fs "$fs" "$mnt"
    fi
}

bench_oci_mount_20() {
    local fs=$1 mnt=$2 deep
    local -a MOUNT_LAYERS
    mapfile -t MOUNT_LAYERS < <(oci_diff_ids "$OCI_DIR/stack" "l$OCI_STACK_LAYERS" | sed "s#^#$OCI_STATE/layers/sha256/#")
    deep=usr/share/$(find "${MOUNT_LAYERS[0]}/usr/share" -mindepth 2 -maxdepth 2 -type f -printf '%P\n' | sort | tail -n1)
    mkdir -p "$mnt"
    time_mount_stat "$fs" "$mnt" "$deep" oci_mount "$fs" "$mnt"
}

# name|label|unit; unit "s" = seconds (ratios of times), "GB/s" = seconds shown as throughput
# of the 1 GiB file (ratios of times), "MiB" = KiB shown in MiB, "B" = bytes, "n" = a count.
READ_BENCHES=(
    "mount_stat|mount + first stat of a deep path|s"
    "cold_find|find -printf %s, cold caches, fresh mount|s"
    "cold_mount_find|  the same, including the mount|s"
    "warm_find|find -printf %s, warm|s"
    "read_1g|sequential read 1 GiB (dd bs=1M)|GB/s"
    "peak_rss|daemon peak RSS (VmHWM)|MiB"
)
IMAGE_BENCHES=(
    "read_all|read every file of a host-root image, warm|s"
    "chroot_gcc|gcc of a small file in a chroot, warm|s"
    "chroot_python|python3 -c pass x10 in a chroot, warm|s"
)
LAYERS_BENCHES=(
    "sweep_walk_20|cold walk, 3,000 files in 60 dirs, 20 layers|s"
    "sweep_walk_100|  the same, 100 layers|s"
    "sweep_walk_200|  the same, 200 layers|s"
    "sweep_walk_400|  the same, 400 layers|s"
    "mount_stat_400|mount + first stat, 400 layers|s"
)
WRITE_BENCHES=(
    "untar|untar ~20 MB of small files|s"
    "append_2g|append 1 byte to a 2 GiB lower file|s"
    "rm_trees|rm -rf two merged lower trees|s"
    "chown|chown -R a lower tree (kernel: data copy)|s"
    "chown_metacopy|  kernel -o metacopy=on,redirect_dir=on|s"
    "write_rss|daemon peak RSS after the write work|MiB"
)
ROOTLESS_BENCHES=(
    "rl_walk|rootless: find -printf %s, cold, fresh mount|s"
    "rl_untar|rootless: untar ~20 MB of small files|s"
    "rl_read_1g|rootless: sequential read 1 GiB (dd bs=1M)|GB/s"
)
MEMORY_BENCHES=(
    "walk_rss|daemon peak RSS after a cold find (VmHWM)|MiB"
    "walk_rss_mounted|  the same, right after the mount|MiB"
    "walk_entries|  entries find saw|n"
    "walk_bytes_per_entry|  peak growth per entry (bytes)|B"
)
# Rows filled in by another row's benchmark (cold_find, walk_rss).
DERIVED_BENCHES=" cold_mount_find walk_rss_mounted walk_entries walk_bytes_per_entry "
OCI_BENCHES=(
    "oci_unpack|unpack a host-root image, 3 gzip layers (k: tar)|s"
    "oci_mount_20|mount + first stat, 20-layer image, warm store|s"
)
# The write benchmarks that leave a result to check, in report order.
CHECKED_WRITES=(untar append_2g rm_trees chown)

run_bench() {
    local name=$1 fs=$2 out=$RESULTS/$2.$1
    "bench_$name" "$fs" "$MNT_ROOT/$fs" >"$out.runs"
    if [ -s "$out.runs" ]; then median <"$out.runs" >"$out"; else : >"$out"; fi
}

format_value() {
    local unit=$1 v=$2
    [ -n "$v" ] || {
        echo "-"
        return
    }
    case $unit in
    s) awk -v v="$v" 'BEGIN { printf "%.3f s", v }' ;;
    GB/s) awk -v v="$v" -v b="$BIG_FILE_BYTES" 'BEGIN { printf "%.2f GB/s", b / 1e9 / v }' ;;
    MiB) awk -v v="$v" 'BEGIN { printf "%.1f MiB", v / 1024 }' ;;
    B) awk -v v="$v" 'BEGIN { printf "%.0f B", v }' ;;
    n) awk -v v="$v" 'BEGIN { printf "%d", v }' ;;
    esac
}

ratio() {
    [ -n "$1" ] && [ -n "$2" ] || {
        echo "-"
        return
    }
    awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'
}

result() { cat "$RESULTS/$1.$2" 2>/dev/null || true; }

print_table() {
    local entry name label unit k f s
    printf '\n%-44s %14s %14s %14s %10s %10s %10s\n' "" kernel fuse-overlayfs stratafs \
        "strata/k" "fuse-ovl/k" "strata/fo"
    for entry in "${BENCHES[@]}"; do
        IFS='|' read -r name label unit <<<"$entry"
        k=$(result kernel "$name")
        f=$(result fuse-overlayfs "$name")
        s=$(result stratafs "$name")
        printf '%-44s %14s %14s %14s %10s %10s %10s\n' "$label" \
            "$(format_value "$unit" "$k")" "$(format_value "$unit" "$f")" "$(format_value "$unit" "$s")" \
            "$(ratio "$s" "$k")" "$(ratio "$f" "$k")" "$(ratio "$s" "$f")"
    done
    printf '\nMedians of %s runs. Ratios compare times (and RSS): above 1 means slower (bigger).\n' "$REPEAT"
    # The read stack (read, memory) and the rootless stack are counted apart: one count each.
    local fs stack counts distinct
    for stack in entries:read rl_entries:rootless; do
        counts=()
        for fs in kernel fuse-overlayfs stratafs; do
            [ -s "$RESULTS/$fs.${stack%%:*}" ] && counts+=("$fs $(cat "$RESULTS/$fs.${stack%%:*}")")
        done
        [ "${#counts[@]}" -gt 0 ] || continue
        printf 'Entries seen by find on the %s stack: %s\n' "${stack#*:}" "$(join_comma "${counts[@]}")"
        distinct=$(printf '%s\n' "${counts[@]}" | awk '{ print $2 }' | sort -u | wc -l)
        [ "$distinct" -le 1 ] ||
            printf 'WARNING: the filesystems show different trees (entry counts differ)\n'
    done
}

print_write_notes() {
    printf 'Write rows: from the first write after the mount to the end of umount + sync, on a fresh\n'
    printf "upper each run. The chown row's kernel column copies data (metacopy off, its default, as\n"
    printf 'container engines leave it); the next row is the kernel with metacopy, the other columns\n'
    printf 'repeated. fuse-overlayfs 1.x has no metacopy: it always copies data.\n'
}

# The checks of each write benchmark (made on a second mount of each upper) must agree with
# each other and with what is expected, where that is known without a mount.
print_write_checks() {
    local name src f value values runs_differ lines sizes kib
    printf '\nChecks of the write results:\n'
    for name in "${CHECKED_WRITES[@]}"; do
        lines=() values=() sizes=() runs_differ=
        for src in expected kernel kernel-metacopy fuse-overlayfs stratafs; do
            f=$RESULTS/$src.$name.checks
            [ -s "$f" ] || continue
            [ "$(sort -u "$f" | wc -l)" -le 1 ] || runs_differ=1
            value=$(sort -u "$f" | paste -sd'|')
            lines+=("$src: $value")
            values+=("$value")
            kib=$(cat "$RESULTS/$src.$name.upper_kib" 2>/dev/null || true)
            [ -z "$kib" ] || sizes+=("$src $(format_value MiB "$kib")")
        done
        [ "${#lines[@]}" -gt 0 ] || continue
        if [ -z "$runs_differ" ] && [ "$(printf '%s\n' "${values[@]}" | sort -u | wc -l)" -eq 1 ]; then
            printf '  %s: all agree (%s): %s\n' "$name" \
                "$(printf '%s\n' "${lines[@]}" | cut -d: -f1 | paste -sd, | sed 's/,/, /g')" "${values[0]}"
        else
            printf 'WARN: %s: the results differ:\n' "$name"
            printf '    %s\n' "${lines[@]}"
        fi
        printf '    upper dir after it: %s\n' "$(join_comma "${sizes[@]}")"
    done
}

# has_group NAME: whether BENCH asks for that group of benchmarks.
has_group() { [[ " ${BENCH//,/ } " == *" $1 "* || $BENCH == all ]]; }

main() {
    [ "$(id -u)" -eq 0 ] || die "run as root (mounts and drop_caches need it)"
    local group groups
    groups=${BENCH//,/ }
    [ "$groups" != all ] || groups="read write image layers rootless memory oci"
    BENCHES=()
    for group in $groups; do
        case $group in
        read) BENCHES+=("${READ_BENCHES[@]}") ;;
        write) BENCHES+=("${WRITE_BENCHES[@]}") ;;
        image) BENCHES+=("${IMAGE_BENCHES[@]}") ;;
        layers) BENCHES+=("${LAYERS_BENCHES[@]}") ;;
        rootless) BENCHES+=("${ROOTLESS_BENCHES[@]}") ;;
        memory) BENCHES+=("${MEMORY_BENCHES[@]}") ;;
        oci) BENCHES+=("${OCI_BENCHES[@]}") ;;
        *) die "BENCH must be all or a list of read, write, image, layers, rootless, memory, oci, not '$BENCH'" ;;
        esac
    done
    if has_group read || has_group layers || has_group rootless || has_group memory; then
        [ -w /proc/sys/vm/drop_caches ] || die "/proc/sys/vm/drop_caches is not writable: cold runs need it"
    fi
    local fs available=()
    for fs in $FILESYSTEMS; do
        case $fs in
        kernel) grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null ||
            die "kernel overlayfs is not available (modprobe overlay)" ;;
        fuse-overlayfs) command -v "$FUSE_OVERLAYFS" >/dev/null ||
            die "fuse-overlayfs is not installed: apt-get install fuse-overlayfs" ;;
        stratafs) if [ ! -x "$STRATAFS" ]; then
            note "SKIPPING stratafs: $STRATAFS is not an executable (cargo build --release, or set STRATAFS=path)"
            continue
        fi ;;
        *) die "unknown filesystem in FILESYSTEMS: $fs" ;;
        esac
        available+=("$fs")
    done
    [ "${#available[@]}" -gt 0 ] || die "nothing to benchmark"

    mkdir -p "$BENCH_DIR" "$MNT_ROOT"
    RESULTS=$(mktemp -d "$BENCH_DIR/results.XXXXXX")
    trap 'cleanup; rl_cleanup; rm -rf "$RESULTS"' EXIT
    trap 'exit 130' INT TERM
    if has_group read || has_group write || has_group memory; then
        build_stack
        find "$STACK" >/dev/null # same starting point for every filesystem
        printf 'stack: %s layers + whiteout layer, %s entries, deep path %s\n' "$NLAYERS" \
            "$(find "$STACK"/L* | wc -l)" "$(cat "$STACK/deep_path.txt")"
    fi
    if has_group write; then
        build_untar_tarball
        pick_write_trees
        write_expectations
    fi
    if has_group image; then
        build_image
        printf 'image: %s layers of the host root, %s entries, %s\n' "$(image_layers | wc -l)" \
            "$(find "$IMAGE"/L* | wc -l)" "$(du -sh --apparent-size "$IMAGE" | cut -f1)"
    fi
    if has_group layers; then
        local n
        for n in $SWEEP_LAYER_COUNTS; do build_sweep "$n"; done
        printf 'layer sweep: %s dirs in every layer, %s files dealt over %s layers\n' "$SWEEP_DIRS" \
            $((SWEEP_DIRS * SWEEP_FILES_PER_DIR)) "${SWEEP_LAYER_COUNTS// /, }"
    fi
    if has_group oci; then
        build_oci
        printf 'oci: host:v3 %s in 3 gzip layers (%s); stack:l%s %s entries in %s layers\n' \
            "$(du -sh --apparent-size "$IMAGE" | cut -f1)" "$(oci_layer_blobs "$OCI_DIR/host" v3 | xargs du -ch | tail -n1 | cut -f1)" \
            "$OCI_STACK_LAYERS" "$(oci_diff_ids "$OCI_DIR/stack" "l$OCI_STACK_LAYERS" | sed "s#^#$OCI_STATE/layers/sha256/#" | xargs -I{} find {} | wc -l)" \
            "$OCI_STACK_LAYERS"
    fi
    if has_group rootless; then
        build_rootless_stack
        printf 'rootless: as %s in a user namespace; %s layers of %s (%s entries) + the 1 GiB file; kernel -o userxattr\n' \
            "$RL_USER" "$RL_NLAYERS" "$SOURCE_TREE" "$(find "$RL_STACK"/L* | wc -l)"
    fi
    printf 'kernel %s; fuse-overlayfs %s; stratafs %s\n' "$(uname -r)" \
        "$("$FUSE_OVERLAYFS" --version 2>&1 | awk '/fuse-overlayfs/ && !v { v = $NF } END { print v }')" \
        "$(git log -1 --format='%h %s' 2>/dev/null | cut -c1-60) ($STRATAFS)"
    if has_group write; then
        printf 'write: untar %s entries (%s MB) into a new dir; rm -rf %s; chown -R %s\n' \
            "$(tar -tf "$UNTAR_TARBALL" | wc -l)" \
            "$(awk -v b="$(stat -c %s "$UNTAR_TARBALL")" 'BEGIN { printf "%.1f", b / 1e6 }')" \
            "$(for t in $RM_TREES; do awk -v t="$t" '$1 == t { printf "%s (%s entries) ", $1, $2 }' \
                "$STACK/merged.txt"; done | sed 's/ $//')" \
            "$(awk -v t="$CHOWN_TREE" '$1 == t { printf "%s (%s entries, %.0f MiB)", $1, $2, $3 / 1024 }' \
                "$STACK/merged.txt")"
    fi

    local entry name
    for entry in "${BENCHES[@]}"; do
        name=${entry%%|*}
        [[ $DERIVED_BENCHES != *" $name "* ]] || continue # filled in by another row's run
        for fs in "${available[@]}"; do
            # Daemon RSS has no kernel value; the metacopy row is the kernel's only.
            case $name:$fs in
            peak_rss:kernel | write_rss:kernel | walk_rss:kernel) ;;
            chown_metacopy:kernel) note "$name: kernel-metacopy" ;;
            chown_metacopy:*) continue ;;
            *) note "$name: $fs" ;;
            esac
            run_bench "$name" "$fs"
        done
    done
    for fs in "${available[@]}"; do
        for name in $DERIVED_BENCHES; do
            [ ! -f "$RESULTS/$fs.$name.runs" ] || median <"$RESULTS/$fs.$name.runs" >"$RESULTS/$fs.$name"
        done
        # The metacopy row compares the kernel with metacopy against the same FUSE runs.
        [ "$fs" = kernel ] || [ ! -f "$RESULTS/$fs.chown" ] || cp "$RESULTS/$fs.chown" "$RESULTS/$fs.chown_metacopy"
    done
    print_table
    if has_group memory; then
        for fs in "${available[@]}"; do
            [ ! -s "$RESULTS/$fs.walk_rss.note" ] || printf 'after the walk, %s: %s\n' "$fs" "$(cat "$RESULTS/$fs.walk_rss.note")"
        done
    fi
    if has_group write; then
        print_write_notes
        print_write_checks
    fi
}

main "$@"
