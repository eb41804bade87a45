#!/usr/bin/env bash
# Rootless pass of the container-engine test: podman (and buildah) run by an unprivileged user with
# subordinate ids, stratafs as the overlay mount_program. podman starts the mount program inside its
# user namespace, where trusted.* xattrs cannot be written, so stratafs must pick the rootless
# (userxattr) format by itself.
#
# Usage (as root; the user comes from .ci/rootless-user, which this runs when the user is missing):
#   bash scripts/e2e-podman-rootless.sh
#   MOUNT_PROGRAM=/usr/bin/fuse-overlayfs bash scripts/e2e-podman-rootless.sh   # the reference
# Every check prints `PASS name` or `FAIL name: detail`; the last line is `N passed, N failed` and the
# exit status is non-zero when anything failed. Everything lives in one temp dir removed at exit.
set -u

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/e2e-lib.sh
. "$REPO/scripts/e2e-lib.sh"

[ "$(id -u)" -eq 0 ] || { echo "run as root: it acts as the unprivileged user of .ci/rootless-user" >&2; exit 1; }
for tool in podman buildah runc newuidmap setpriv; do
    command -v "$tool" >/dev/null || { fail tools "$tool is missing (apt-get install podman buildah runc uidmap)"; finish; }
done
[ -x /bin/busybox ] || { fail tools "/bin/busybox is missing (apt-get install busybox-static)"; finish; }
e2e_rootless_user "$REPO" || { fail rootless_user "cannot create the user (.ci/rootless-user)"; finish; }

MOUNT_PROGRAM=$(readlink -f "${MOUNT_PROGRAM:-$REPO/target/release/stratafs}")
[ -x "$MOUNT_PROGRAM" ] || { fail mount_program "$MOUNT_PROGRAM is not executable (cargo build --release)"; finish; }
echo "mount program: $MOUNT_PROGRAM; user: $USER_NAME ($UID_N)"

T=$(mktemp -d /var/tmp/stratafs-e2e-rootless.XXXXXX) || { fail temp_dir "mktemp failed"; finish; }
mkdir -p "$T"/{logs,host,build,rootfs/{data,opt/tree/sub,opt/moveme}}
e2e_rootless_dirs
pm() { as_user timeout -k 5 120 podman "$@"; }
ba() { as_user timeout -k 5 120 buildah "$@"; }

# shellcheck disable=SC2317 # reached through the exit trap
cleanup() {
    e2e_rootless_reset
    rm -rf "$T"
}
trap cleanup EXIT

cat >"$T/mount-program" <<EOF
#!/bin/sh
echo "\$(date +%H:%M:%S.%N) uid=\$(id -u) \$*" >>"$T/logs/mount.log"
exec "$MOUNT_PROGRAM" "\$@"
EOF
chmod 755 "$T/mount-program"
e2e_podman_config "$T" "$T/mount-program" rootless

# Base image: busybox, files to change in later layers.
R=$T/rootfs
e2e_busybox_rootfs "$R"
echo f >"$R/data/f"
echo g >"$R/data/g"
echo h >"$R/data/h"
echo a >"$R/opt/tree/a"
echo b >"$R/opt/tree/sub/b"
echo x >"$R/opt/moveme/x"
chmod 1777 "$R/tmp"
tar -C "$R" --numeric-owner -cf "$T/base.tar" .
echo "bind mounted from the host" >"$T/host/h"
cat >"$T/build/Containerfile" <<'EOF'
FROM localhost/rl-base:latest
RUN chmod 600 /data/f && chown 1:2 /data/g && touch -d '2001-01-01 00:00:00' /data/h
RUN rm -rf /opt/tree && mkdir /opt/tree && echo fresh > /opt/tree/new
RUN mv /opt/moveme /opt/moved && ln /data/f /data/f-link
EOF
chown -R "$UID_N:$GID_N" "$T"

run_check() { # NAME CMD...: passes when CMD exits 0
    local name=$1 out
    shift
    if out=$("$@" 2>&1); then pass "$name"; else fail "$name" "$(tail_of "$out")"; fi
}

run_check import pm import --change 'CMD ["/bin/sh"]' --change 'ENV PATH=/bin' "$T/base.tar" localhost/rl-base:latest
run_check build pm build --network=none -t localhost/rl-built:latest "$T/build"

# shellcheck disable=SC2016 # expanded inside the container
out=$(pm run --rm --network=none -v rlvol:/vol -v "$T/host:/host:ro" localhost/rl-built sh -c '
    echo "mode=$(stat -c %a /data/f)"; echo "owner=$(stat -c %u:%g /data/g)"; echo "mtime=$(stat -c %Y /data/h)"
    echo "tree=$(ls /opt/tree | tr "\n" " ")"; echo "moveme=$(test -e /opt/moveme && echo present || echo gone)"
    echo "moved=$(cat /opt/moved/x)"; echo "link=$(cat /data/f-link)"
    ln /data/g /data/g-link && echo "links=$(stat -c %h /data/g)"
    echo v > /vol/x && echo "vol=$(cat /vol/x)"; echo "bind=$(cat /host/h)"
    echo "ro_bind=$(echo no >> /host/h 2>/dev/null && echo writable || echo refused)"
    chmod 644 /data/g && echo "chmod_in_container=ok"' 2>&1)
val() { printf '%s\n' "$out" | sed -n "s/^$1=//p" | head -n1; }
check build_chmod 600 "$(val mode)"
check build_chown 1:2 "$(val owner)"
check build_touch 978307200 "$(val mtime)"
check build_rm_rf_recreate "new " "$(val tree)"
check build_mv_lower_dir gone "$(val moveme)"
check build_mv_lower_dir_content x "$(val moved)"
# A layer holds no hard link to a file of another layer: the build's link is a copy there.
check build_hard_link_content f "$(val link)"
check run_hard_link_lower 2 "$(val links)"
check run_volume v "$(val vol)"
check run_bind "bind mounted from the host" "$(val bind)"
check run_bind_read_only refused "$(val ro_bind)"
check run_chmod_lower ok "$(val chmod_in_container)"
[ -n "$(val mode)" ] || echo "run output: $(tail_of "$out")"

run_check run_kept pm run --network=none --name rl-c1 localhost/rl-built sh -c \
    'echo changed > /data/g && rm /data/h && mkdir /newdir && chmod 700 /opt/moved'
diff=$(pm diff rl-c1 2>&1 | sort | tr '\n' ' ')
for want in "C /data/g" "D /data/h" "A /newdir" "C /opt/moved"; do
    case " $diff" in *" $want "*) pass "diff: $want" ;; *) fail "diff: $want" "got: $diff" ;; esac
done
run_check commit pm commit rl-c1 localhost/rl-committed:latest
# shellcheck disable=SC2016 # expanded inside the container
out=$(pm run --rm --network=none localhost/rl-committed sh -c '
    echo "g=$(cat /data/g)"; echo "h=$(test -e /data/h && echo present || echo gone)"
    echo "newdir=$(test -d /newdir && echo dir)"; echo "moved=$(stat -c %a /opt/moved)"
    echo "tree=$(ls /opt/tree | tr "\n" " ")"' 2>&1)
check committed_change changed "$(val g)"
check committed_delete gone "$(val h)"
check committed_add dir "$(val newdir)"
check committed_chmod 700 "$(val moved)"
check committed_opaque_dir "new " "$(val tree)"

# buildah, when it runs rootless here.
if ctr=$(ba from localhost/rl-built 2>"$T/logs/buildah.err"); then
    if ba run --network=none "$ctr" sh -c 'chmod 640 /data/g && rm -rf /opt/tree && mkdir /opt/tree' >>"$T/logs/buildah.err" 2>&1; then
        run_check buildah_commit ba commit "$ctr" localhost/rl-buildah:latest
        check buildah_chmod 640 "$(pm run --rm --network=none localhost/rl-buildah stat -c %a /data/g 2>&1)"
        check buildah_opaque_dir "" "$(pm run --rm --network=none localhost/rl-buildah ls /opt/tree 2>&1)"
    else
        fail buildah_run "$(tail_of "$(cat "$T/logs/buildah.err")")"
    fi
    ba rm "$ctr" >/dev/null 2>&1
else
    echo "SKIP buildah: buildah from failed rootless here: $(tail_of "$(cat "$T/logs/buildah.err")")"
fi

# The mount program really ran as the user's namespace root, and stratafs chose the rootless format.
calls=$(grep -c 'upperdir=' "$T/logs/mount.log" 2>/dev/null || echo 0)
if [ "$calls" -gt 0 ]; then
    pass "mount_program used ($calls writable mounts)"
else
    fail mount_program_used "no writable mount logged"
fi
finish
