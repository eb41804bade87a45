#!/usr/bin/env bash
# Public filesystem suites against stratafs with a writable upper:
#   pjdfstest (the Rust rewrite): on stratafs and, in the same run, on kernel overlayfs with the
#     options the differential tests use; fails on any stratafs failure that is not listed, with
#     its reason, in scripts/suites/pjdfstest-expected-failures.txt.
#   fsx (the Rust port): default operations, no mmap, on files that start in a lower layer, and
#     with reads and writes served by the daemon (--no-passthrough); bounded operation counts.
#     fsx-rs has no O_DIRECT mode (the C fsx's -Z): tests/direct_io.rs is the direct-I/O variant.
#
# Usage: bash scripts/suites.sh [pjdfstest|fsx|all]     (default: all; run as root)
# Environment:
#   STRATAFS_BIN      the binary to test (default: target/release/stratafs, built if missing)
#   SUITES_TOOLS_DIR  where the pinned tools are installed (default: /var/cache/stratafs-ci/tools)
#   FSX_OPS           operations per fsx run (default: 20000)
#   FSX_SEED          first fsx seed (default: 1); each variant adds its number
#   SUITES_KEEP=1     keep the scratch dir (logs, upper dirs) for a look after the run
#
# Everything lives in one scratch dir that the exit trap unmounts and removes, also on failure.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HERE="$REPO/scripts/suites"
WHAT=${1:-all}
case "$WHAT" in pjdfstest | fsx | all) ;; *)
    echo "usage: $0 [pjdfstest|fsx|all]" >&2
    exit 2
    ;;
esac

PJDFSTEST_VERSION=0.2.2
FSX_VERSION=0.3.2
TOOLS=${SUITES_TOOLS_DIR:-/var/cache/stratafs-ci/tools}
FSX_OPS=${FSX_OPS:-20000}
FSX_SEED=${FSX_SEED:-1}
OVERLAY_OPTS=redirect_dir=on,index=on,metacopy=on
EXPECTED="$HERE/pjdfstest-expected-failures.txt"

say() { printf '\n--- %s\n' "$*"; }
die() {
    printf 'suites: %s\n' "$*" >&2
    exit 1
}

[ "$(id -u)" -eq 0 ] || die "run as root: the suites mount FUSE and kernel overlay filesystems"

# ---------------------------------------------------------------------------------------------
# Tools, pinned. `cargo install` does nothing when the same version is already in $TOOLS.
install_tool() { # NAME VERSION
    local bin="$TOOLS/bin/$1"
    if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -qw "$2"; then
        return 0
    fi
    say "installing $1 $2 into $TOOLS"
    cargo install --quiet --locked --root "$TOOLS" "$1" --version "$2" ||
        die "cargo install $1 --version $2 failed (see above)"
}
[ "$WHAT" = fsx ] || install_tool pjdfstest "$PJDFSTEST_VERSION"
[ "$WHAT" = pjdfstest ] || install_tool fsx "$FSX_VERSION"
PJDFSTEST="$TOOLS/bin/pjdfstest"
FSX="$TOOLS/bin/fsx"

if [ -z "${STRATAFS_BIN:-}" ]; then
    (cd "$REPO" && cargo build --quiet --release --bin stratafs) || die "cargo build --release failed"
    STRATAFS_BIN="$REPO/target/release/stratafs"
fi
[ -x "$STRATAFS_BIN" ] || die "$STRATAFS_BIN is not an executable: set STRATAFS_BIN"

# pjdfstest switches to two unprivileged users, each with a group of its own name or nogroup.
if [ "$WHAT" != fsx ] && ! getent passwd tests >/dev/null; then
    useradd --system --user-group --no-create-home --shell /usr/sbin/nologin tests ||
        die "cannot create the user 'tests' that pjdfstest switches to"
fi
NOBODY_GROUP=$(getent group nogroup >/dev/null && echo nogroup || echo nobody)

# ---------------------------------------------------------------------------------------------
# Scratch dir and mounts, all undone by the exit trap.
SCRATCH=$(mktemp -d /tmp/stratafs-suites.XXXXXX)
# pjdfstest's unprivileged users must reach the mounts through it.
chmod 755 "$SCRATCH"
MOUNTS=()             # mountpoints, in mount order
DAEMONS=()            # pids of stratafs daemons we started
declare -A DAEMON_AT=() # mountpoint -> pid of the daemon serving it

cleanup() {
    local rc=$? i m pid
    set +e
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
        m=${MOUNTS[i]}
        findmnt -M "$m" >/dev/null 2>&1 || continue
        timeout 30 umount "$m" 2>/dev/null || umount -l "$m"
    done
    for pid in "${DAEMONS[@]}"; do
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && { echo "suites: daemon $pid still running: killing it" >&2; kill -9 "$pid"; }
        wait "$pid" 2>/dev/null
    done
    if [ -n "${SUITES_KEEP:-}" ]; then
        echo "suites: scratch dir kept: $SCRATCH"
    else
        rm -rf "$SCRATCH"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# mount_stratafs NAME [OPTIONS...]: stratafs over $SCRATCH/lower with NAME/upper, at NAME/mnt.
mount_stratafs() {
    local name=$1 base="$SCRATCH/$1"
    shift
    mkdir -p "$base/upper" "$base/work" "$base/mnt"
    "$STRATAFS_BIN" mount --layer "$SCRATCH/lower" --upper "$base/upper" --work "$base/work" \
        "$@" "$base/mnt" </dev/null >/dev/null 2>>"$base/stratafs.log" &
    DAEMONS+=($!)
    DAEMON_AT["$base/mnt"]=$!
    MOUNTS+=("$base/mnt")
    for _ in $(seq 300); do
        [[ $(findmnt -n -M "$base/mnt" -o FSTYPE 2>/dev/null) == fuse* ]] && return 0
        kill -0 "$!" 2>/dev/null || break
        sleep 0.1
    done
    die "stratafs did not mount $base/mnt; its log:
$(cat "$base/stratafs.log")"
}

# mount_overlay NAME: kernel overlayfs over a copy of the lower layer.
mount_overlay() {
    local base="$SCRATCH/$1"
    mkdir -p "$base/upper" "$base/work" "$base/mnt"
    cp -a "$SCRATCH/lower" "$base/lower"
    mount -t overlay overlay \
        -o "lowerdir=$base/lower,upperdir=$base/upper,workdir=$base/work,$OVERLAY_OPTS" "$base/mnt" ||
        die "cannot mount kernel overlayfs ($OVERLAY_OPTS)"
    MOUNTS+=("$base/mnt")
}

# unmount MOUNTPOINT: a clean unmount; a stratafs daemon must then exit by itself. Waiting for
# it also keeps an exiting daemon from racing the next mount at the same path.
unmount() {
    local pid=${DAEMON_AT["$1"]:-}
    umount "$1" || die "umount $1 failed"
    [ -n "$pid" ] || return 0
    for _ in $(seq 300); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        fail "the stratafs daemon of $1 (pid $pid) did not exit within 30 s of its unmount"
    else
        wait "$pid" || fail "the stratafs daemon of $1 exited with status $? (log: ${1%/mnt}/stratafs.log)"
    fi
}

# The lower layer: a directory for pjdfstest to work in, and files for fsx to start from.
mkdir -p "$SCRATCH/lower/pjd" "$SCRATCH/lower/fsx" "$SCRATCH/second"
chmod 755 "$SCRATCH/lower" "$SCRATCH/lower/pjd"
for f in truncated copied held; do
    head -c 262144 /dev/urandom >"$SCRATCH/lower/fsx/$f"
done

FAILURES=0
fail() {
    printf 'suites: FAIL %s\n' "$*" >&2
    FAILURES=$((FAILURES + 1))
}

# ---------------------------------------------------------------------------------------------
# pjdfstest
pjdfstest_config() {
    cat >"$SCRATCH/pjdfstest.toml" <<EOF
[features]
posix_fallocate = {}
utime_now = {}
utimensat = {}
rename_ctime = {}

[settings]
naptime = 0.01
# The EROFS cases remount with mount(8), which hands a FUSE remount to mount.fuse with the source
# name ("stratafs") as the program to run: they stay skipped, on both filesystems.
allow_remount = false

[dummy_auth]
entries = [["nobody", "$NOBODY_GROUP"], ["tests", "tests"]]
EOF
}

# pjdfstest stops at the first error outside a test case (its panic message is swallowed), so
# each syscall's cases run in a process of their own and one abort costs only that group.
PJDFSTEST_GROUPS="chmod chown ftruncate link mkdir mkfifo mknod open posix_fallocate rename rmdir
    symlink truncate unlink utimensat"

# run_pjdfstest NAME DIR: runs the suite in DIR; NAME.pjdfstest.log holds the output, NAME.failed
# the names of the failed cases (GROUP::ABORTED for a group whose run did not finish) and
# NAME.passed those that passed. The exit status of pjdfstest itself is not the verdict.
run_pjdfstest() {
    local name=$1 dir=$2 log="$SCRATCH/$1.pjdfstest.log" group glog
    : >"$log"
    for group in $PJDFSTEST_GROUPS; do
        glog="$SCRATCH/$name.$group.log"
        # The pattern is a substring match ("link::" also runs symlink:: and unlink::): keep
        # only the group's own cases.
        RUST_BACKTRACE=0 timeout 600 "$PJDFSTEST" -c "$SCRATCH/pjdfstest.toml" -s "$SCRATCH/second" \
            -p "$dir" "$group::" >"$glog" 2>&1 || true
        awk -v g="$group::" 'index($1, g) == 1 { print; if ($NF == "FAILED") { getline; print } }' \
            "$glog" >>"$log"
        if ! grep -q '^Summary:' "$glog"; then
            printf '%s::ABORTED FAILED\n\tpjdfstest stopped after: %s\n' "$group" \
                "$(tail -n 1 "$glog" | awk '{ print $1 }')" >>"$log"
        fi
    done
    awk '$NF == "FAILED" { print $1 }' "$log" | sort -u >"$SCRATCH/$name.failed"
    awk '$NF == "ok" { print $1 }' "$log" | sort -u >"$SCRATCH/$name.passed"
    printf '%-9s %s passed, %s failed, %s skipped\n' "$name:" "$(wc -l <"$SCRATCH/$name.passed")" \
        "$(wc -l <"$SCRATCH/$name.failed")" "$(grep -c ' skipped$' "$log" || true)"
}

# Expected failures: "PATTERN REASON" lines; the reason is required.
expected_patterns() {
    local line n=0
    while IFS= read -r line || [ -n "$line" ]; do
        n=$((n + 1))
        case "$line" in '' | \#*) continue ;; esac
        read -r pattern reason <<<"$line"
        [ -n "${reason:-}" ] || die "$EXPECTED line $n: '$pattern' has no reason; say why it fails"
        printf '%s\n' "$pattern"
    done <"$EXPECTED"
}
matches_expected() { # NAME
    local p
    for p in "${PATTERNS[@]}"; do
        # shellcheck disable=SC2053 # the pattern is a glob on purpose
        [[ $1 == $p ]] && return 0
    done
    return 1
}

suite_pjdfstest() {
    say "pjdfstest $PJDFSTEST_VERSION: kernel overlayfs ($OVERLAY_OPTS), then stratafs"
    pjdfstest_config
    mapfile -t PATTERNS < <(expected_patterns)
    mount_overlay kernel
    mount_stratafs strata-pjd
    run_pjdfstest kernel "$SCRATCH/kernel/mnt/pjd"
    run_pjdfstest stratafs "$SCRATCH/strata-pjd/mnt/pjd"
    unmount "$SCRATCH/strata-pjd/mnt"
    unmount "$SCRATCH/kernel/mnt"

    # Each stratafs failure is listed, or failed by the kernel too (still to be listed), or new.
    local t p hit listed=0 unexpected=() kernel_too=() stale=() kernel_unlisted=0
    while read -r t; do
        if matches_expected "$t"; then
            listed=$((listed + 1))
        elif grep -qxF "$t" "$SCRATCH/kernel.failed"; then
            kernel_too+=("$t")
        else
            unexpected+=("$t")
        fi
    done <"$SCRATCH/stratafs.failed"
    while read -r t; do
        matches_expected "$t" || kernel_unlisted=$((kernel_unlisted + 1))
    done <"$SCRATCH/kernel.failed"
    for t in "${unexpected[@]}" "${kernel_too[@]}"; do
        if grep -qxF "$t" "$SCRATCH/kernel.failed"; then
            echo "  FAILED $t (kernel overlayfs fails it too: list it with the reason)"
        else
            echo "  FAILED $t"
        fi
        # The message pjdfstest printed under the case name.
        awk -v t="$t" '$1 == t && $NF == "FAILED" { getline; print "        " $0; exit }' \
            "$SCRATCH/stratafs.pjdfstest.log"
    done
    for p in "${PATTERNS[@]}"; do
        hit=0
        while read -r t; do
            # shellcheck disable=SC2053 # the pattern is a glob on purpose
            if [[ $t == $p ]]; then
                hit=1
                break
            fi
        done <"$SCRATCH/stratafs.failed"
        [ "$hit" -eq 1 ] || stale+=("$p")
    done
    echo "stratafs failures: ${#unexpected[@]} new, ${#kernel_too[@]} also failed by the kernel but not" \
        "listed, $listed listed in ${EXPECTED#"$REPO"/}"
    echo "kernel overlayfs failures not listed (no verdict on stratafs): $kernel_unlisted"
    for p in "${stale[@]}"; do
        echo "  note: '$p' in ${EXPECTED#"$REPO"/} matched no stratafs failure: remove it if it stays fixed"
    done
    if [ ${#unexpected[@]} -ne 0 ] || [ ${#kernel_too[@]} -ne 0 ]; then
        fail "pjdfstest: $((${#unexpected[@]} + ${#kernel_too[@]})) stratafs failure(s) not in ${EXPECTED#"$REPO"/}"
    fi
}

# ---------------------------------------------------------------------------------------------
# fsx
# run_fsx LABEL FILE SEED [CONFIG]
run_fsx() {
    local label=$1 file=$2 seed=$3 config=${4:-} log="$SCRATCH/fsx-$1.log" args=()
    [ -z "$config" ] || args=(-f "$config")
    local start=$SECONDS
    if timeout 600 "$FSX" "${args[@]}" -N "$FSX_OPS" -S "$seed" -P "$SCRATCH" "$file" >"$log" 2>&1; then
        printf 'fsx %-22s %s ops, seed %s: ok (%ss)\n' "$label" "$FSX_OPS" "$seed" $((SECONDS - start))
    else
        tail -n 40 "$log" >&2
        fail "fsx $label (seed $seed, $FSX_OPS ops, $file): output above; rerun: $FSX ${args[*]} -N $FSX_OPS -S $seed FILE"
    fi
}

checksums() { # DIR: one "sum name" line per fsx file
    (cd "$1" && find . -maxdepth 1 -type f ! -name '*.fsx*' -print0 | sort -z | xargs -0 -r md5sum)
}

suite_fsx() {
    say "fsx $FSX_VERSION: $FSX_OPS operations per run"
    mount_stratafs strata-fsx
    local m="$SCRATCH/strata-fsx/mnt/fsx"

    run_fsx default "$m/new-default" $((FSX_SEED + 0))
    run_fsx no-mmap "$m/new-no-mmap" $((FSX_SEED + 1)) "$HERE/fsx-no-mmap.toml"

    # A lower file opened with O_TRUNC: copied up without its data.
    run_fsx lower-truncated "$m/truncated" $((FSX_SEED + 2)) "$HERE/fsx-no-mmap.toml"

    # A lower file whose metadata is copied up first (chmod: a metacopy upper), then its data
    # when fsx opens it for writing. The data seen before fsx must be the lower file's.
    chmod 0600 "$m/copied"
    cmp "$m/copied" "$SCRATCH/lower/fsx/copied" || fail "lower file reads differently after chmod (metadata copy-up)"
    run_fsx lower-copied "$m/copied" $((FSX_SEED + 3)) "$HERE/fsx-lower.toml"

    # A lower file held open by a reader while fsx writes it: the reader must keep reading the
    # lower data (with passthrough the name moves to a new inode), fsx must see its own writes.
    exec {held}<"$m/held"
    run_fsx lower-held-open "$m/held" $((FSX_SEED + 4)) "$HERE/fsx-lower.toml"
    cmp - "$SCRATCH/lower/fsx/held" <&"$held" || fail "a reader opened before the copy-up saw other data than the lower file"
    exec {held}<&-

    # What fsx left must survive a remount.
    checksums "$m" >"$SCRATCH/fsx-before.sums"
    unmount "$SCRATCH/strata-fsx/mnt"
    mount_stratafs strata-fsx
    checksums "$m" >"$SCRATCH/fsx-after.sums"
    diff -u "$SCRATCH/fsx-before.sums" "$SCRATCH/fsx-after.sums" ||
        fail "fsx files differ after a remount (md5sum before/after above)"
    unmount "$SCRATCH/strata-fsx/mnt"

    # Reads and writes served by the daemon instead of the kernel's passthrough.
    mount_stratafs strata-nopt --no-passthrough
    m="$SCRATCH/strata-nopt/mnt/fsx"
    run_fsx no-passthrough "$m/new-default" $((FSX_SEED + 5))
    run_fsx no-passthrough-lower "$m/copied" $((FSX_SEED + 6)) "$HERE/fsx-lower.toml"
    unmount "$SCRATCH/strata-nopt/mnt"
}

[ "$WHAT" = fsx ] || suite_pjdfstest
[ "$WHAT" = pjdfstest ] || suite_fsx

if [ "$FAILURES" -ne 0 ]; then
    die "$FAILURES suite check(s) failed (see FAIL lines above)"
fi
echo "suites: all passed"
