#!/usr/bin/env bash
# Read-path benchmark: stratafs vs kernel overlayfs vs fuse-overlayfs on one layer stack, in
# one run, as root. Prints a table of medians with ratios.
#
#   sudo scripts/bench.sh                  # everything
#   STRATAFS=/path/to/stratafs scripts/bench.sh
#   FILESYSTEMS="kernel fuse-overlayfs" scripts/bench.sh
#
# Environment:
#   STRATAFS     stratafs binary (default: target/release/stratafs)
#   BENCH_DIR    work dir; the layer stack and the 1 GiB file are built once and kept there
#                (default: /var/tmp/stratafs-bench)
#   FILESYSTEMS  which to run, in order (default: "kernel fuse-overlayfs stratafs")
#   REPEAT       runs per timing; the median is reported (default: 3)
#
# The stack: /usr/share spread over 20 layers (big top-level dirs have their children dealt
# round-robin over all layers, so those dirs merge 20 ways; some small dirs are copied into two
# layers, so files shadow each other), a top layer of whiteouts (char 0:0, understood by all three)
# hiding a few files and one dir, and a 1 GiB random file in one layer.
#
# Layout for adding benchmarks: one bench_* function per measurement, run for each filesystem by
# run_bench; mount_fs/umount_fs take an optional upper and work dir for write benchmarks.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
STRATAFS=${STRATAFS:-target/release/stratafs}
BENCH_DIR=${BENCH_DIR:-/var/tmp/stratafs-bench}
FILESYSTEMS=${FILESYSTEMS:-kernel fuse-overlayfs stratafs}
REPEAT=${REPEAT:-3}
SOURCE_TREE=/usr/share
NLAYERS=20
STACK_VERSION=1 # bump when the stack recipe changes, to rebuild the cache

STACK=$BENCH_DIR/stack
MNT_ROOT=$BENCH_DIR/mnt
BIG_FILE_NAME=bench-data/big-1GiB.bin
BIG_FILE_BYTES=$((1024 * 1024 * 1024))

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

# Layers bottom first, one per line: L00 .. L19, then the whiteout layer L20.
layers_bottom_first() {
    local i
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

lowerdir_top_first() {
    layers_bottom_first | tac | paste -sd:
}

# mount_FS MNT [UPPER WORK]
mount_kernel() {
    local opts
    opts="lowerdir=$(lowerdir_top_first)"
    [ -z "${2:-}" ] || opts+=",upperdir=$2,workdir=$3"
    mount -t overlay overlay -o "$opts" "$1"
}

mount_fuse_overlayfs() {
    local opts
    opts="lowerdir=$(lowerdir_top_first)"
    [ -z "${2:-}" ] || opts+=",upperdir=$2,workdir=$3"
    # fuse-overlayfs 1.x warns about every option it passes on but does not know; keep errors.
    fuse-overlayfs -o "$opts" "$1" 2> >(grep -v 'unknown argument ignored' >&2)
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
    kernel) mount_kernel "$mnt" "$@" ;;
    fuse-overlayfs) mount_fuse_overlayfs "$mnt" "$@" ;;
    stratafs) mount_stratafs "$mnt" "$@" ;;
    *) die "unknown filesystem $fs" ;;
    esac
}

# The FUSE daemon serving MNT (empty for the kernel).
daemon_pid() {
    local fs=$1 mnt=$2 pid
    [ "$fs" != kernel ] || return 0
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
    kernel) umount "$mnt" ;;
    *) fusermount3 -u "$mnt" ;;
    esac
    # Wait for the daemon so the next run does not overlap with its shutdown.
    for ((i = 0; i < 200; i++)); do
        [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 0
        sleep 0.05
    done
    note "$fs daemon $pid still running 10 s after unmounting $mnt"
}

cleanup() {
    local fs
    for fs in kernel fuse-overlayfs stratafs; do
        umount_fs "$fs" "$MNT_ROOT/$fs" 2>/dev/null || umount -l "$MNT_ROOT/$fs" 2>/dev/null || true
    done
}

# ---------------------------------------------------------------------------------------------
# Measurements: bench_NAME FS MNT prints one number per run (seconds, or KiB for RSS).

# Mount, then the first stat of a deep path; timed from the start of the mount command.
bench_mount_stat() {
    local fs=$1 mnt=$2 deep t0 t1 r
    deep=$(cat "$STACK/deep_path.txt")
    for ((r = 0; r < REPEAT; r++)); do
        t0=$(now)
        mount_fs "$fs" "$mnt"
        stat "$mnt/$deep" >/dev/null
        t1=$(now)
        umount_fs "$fs" "$mnt"
        elapsed "$t0" "$t1"
        echo
    done
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
        echo "$(elapsed "$t0" "$t2")" >>"$RESULTS/$fs.cold_mount_find.runs"
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
# Running and reporting

# name|label|unit; unit "s" = seconds (ratios of times), "GB/s" = seconds shown as throughput
# of the 1 GiB file (ratios of times), "MiB" = KiB shown in MiB.
BENCHES=(
    "mount_stat|mount + first stat of a deep path|s"
    "cold_find|find -printf %s, cold caches, fresh mount|s"
    "cold_mount_find|  the same, including the mount|s"
    "warm_find|find -printf %s, warm|s"
    "read_1g|sequential read 1 GiB (dd bs=1M)|GB/s"
    "peak_rss|daemon peak RSS (VmHWM)|MiB"
)

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
    local fs counts=() distinct
    for fs in kernel fuse-overlayfs stratafs; do
        [ -s "$RESULTS/$fs.entries" ] && counts+=("$fs $(cat "$RESULTS/$fs.entries")")
    done
    printf 'Entries seen by find: %s\n' "$(printf '%s, ' "${counts[@]}" | sed 's/, $//')"
    distinct=$(printf '%s\n' "${counts[@]}" | awk '{ print $2 }' | sort -u | wc -l)
    [ "$distinct" -le 1 ] || printf 'WARNING: the filesystems show different trees (entry counts differ)\n'
}

main() {
    [ "$(id -u)" -eq 0 ] || die "run as root (mounts and drop_caches need it)"
    [ -w /proc/sys/vm/drop_caches ] || die "/proc/sys/vm/drop_caches is not writable: cold runs need it"
    local fs available=()
    for fs in $FILESYSTEMS; do
        case $fs in
        kernel) grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null ||
            die "kernel overlayfs is not available (modprobe overlay)" ;;
        fuse-overlayfs) command -v fuse-overlayfs >/dev/null ||
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
    trap 'cleanup; rm -rf "$RESULTS"' EXIT
    trap 'exit 130' INT TERM
    build_stack
    find "$STACK" >/dev/null # same starting point for every filesystem

    printf 'stack: %s layers + whiteout layer, %s entries, deep path %s\n' "$NLAYERS" \
        "$(find "$STACK"/L* | wc -l)" "$(cat "$STACK/deep_path.txt")"
    printf 'kernel %s; fuse-overlayfs %s; stratafs %s\n' "$(uname -r)" \
        "$(fuse-overlayfs --version 2>&1 | awk '/fuse-overlayfs/ && !v { v = $NF } END { print v }')" \
        "$(git log -1 --format='%h %s' 2>/dev/null | cut -c1-60) ($STRATAFS)"

    local entry name
    for entry in "${BENCHES[@]}"; do
        name=${entry%%|*}
        [ "$name" != cold_mount_find ] || continue # filled in by cold_find
        for fs in "${available[@]}"; do
            note "$name: $fs"
            run_bench "$name" "$fs"
        done
    done
    for fs in "${available[@]}"; do
        median <"$RESULTS/$fs.cold_mount_find.runs" >"$RESULTS/$fs.cold_mount_find"
    done
    print_table
}

main "$@"
