#!/usr/bin/env bash
# Reserve, check and release hugepages (and hugetlbfs mounts) for ZProxy / DPDK.
#
# See --help. Environment overrides (mainly for tests):
#   HUGEPAGES_SYSFS      root of the sysfs tree           (default /sys)
#   HUGEPAGES_MOUNTS     mount table to read              (default /proc/mounts)
#   HUGEPAGES_STATE_DIR  where mounts made by us are kept (default /run/zproxy-hugepages)
set -euo pipefail

PROG=hugepages
SYSFS=${HUGEPAGES_SYSFS:-/sys}
MOUNTS=${HUGEPAGES_MOUNTS:-/proc/mounts}
STATE_DIR=${HUGEPAGES_STATE_DIR:-/run/zproxy-hugepages}
STATE_FILE=$STATE_DIR/mounts

DEFAULT_PAGES=512

usage() {
    cat <<EOF
Usage:
  $0 [--pages N | --mb MB] [--size 2M|1G] [--node N|all] [--mount DIR]
        Reserve hugepages and make sure a hugetlbfs of that page size is mounted.
        Default: $DEFAULT_PAGES pages of 2M on all nodes, mounted on /dev/hugepages
        (/dev/hugepages-1G for 1G pages). Never shrinks a larger reservation.
  $0 --check [--pages N | --mb MB] [--size 2M|1G] [--node N|all]
        Print reserved/free pages per node and per size, and hugetlbfs mounts.
        Exit 1 when fewer than the requested pages (default $DEFAULT_PAGES) of that size
        are free, or when no hugetlbfs of that size is mounted.
  $0 --clear [--size 2M|1G] [--node N|all] [--mount DIR]
        Set the reservation back to 0 and unmount the hugetlbfs mounts this script made
        (only when they hold no files).
  $0 -h | --help

Exit codes: 0 ok, 1 check failed / kernel refused, 2 usage error or not root.
Env: HUGEPAGES_SYSFS (default /sys), HUGEPAGES_MOUNTS (default /proc/mounts),
     HUGEPAGES_STATE_DIR (default /run/zproxy-hugepages).
EOF
}

msg() { echo "$PROG: $*"; }
err() { echo "$PROG: error: $*" >&2; }
die() { local code=$1; shift; err "$*"; exit "$code"; }

# ---- argument parsing ------------------------------------------------------
MODE=reserve
PAGES=""
MB=""
SIZE=2M
NODE=all
MOUNT_DIR=""

need_arg() { [[ $# -ge 2 && -n $2 ]] || die 2 "option $1 needs a value (see --help)"; }

while [[ $# -gt 0 ]]; do
    case $1 in
        -h|--help) usage; exit 0 ;;
        --check) MODE=check; shift ;;
        --clear) MODE=clear; shift ;;
        --pages) need_arg "$@"; PAGES=$2; shift 2 ;;
        --pages=*) PAGES=${1#*=}; shift ;;
        --mb) need_arg "$@"; MB=$2; shift 2 ;;
        --mb=*) MB=${1#*=}; shift ;;
        --size) need_arg "$@"; SIZE=$2; shift 2 ;;
        --size=*) SIZE=${1#*=}; shift ;;
        --node) need_arg "$@"; NODE=$2; shift 2 ;;
        --node=*) NODE=${1#*=}; shift ;;
        --mount) need_arg "$@"; MOUNT_DIR=$2; shift 2 ;;
        --mount=*) MOUNT_DIR=${1#*=}; shift ;;
        *) die 2 "unknown argument '$1' (see --help)" ;;
    esac
done

[[ -n $PAGES && -n $MB ]] && die 2 "give either --pages or --mb, not both"
[[ -z $PAGES || $PAGES =~ ^[0-9]+$ ]] || die 2 "--pages must be a non-negative integer, got '$PAGES'"
[[ -z $MB || $MB =~ ^[0-9]+$ ]] || die 2 "--mb must be a non-negative integer, got '$MB'"
[[ $NODE == all || $NODE =~ ^[0-9]+$ ]] || die 2 "--node must be a node number or 'all', got '$NODE'"

# Page size -> kB.
size_to_kb() {
    local s=${1^^}
    s=${s%B}
    case $s in
        *K) echo $(( ${s%K} )) ;;
        *M) echo $(( ${s%M} * 1024 )) ;;
        *G) echo $(( ${s%G} * 1024 * 1024 )) ;;
        *) return 1 ;;
    esac
}
kb_to_size() {
    local kb=$1
    if (( kb % 1048576 == 0 )); then echo "$((kb / 1048576))G"
    elif (( kb % 1024 == 0 )); then echo "$((kb / 1024))M"
    else echo "${kb}K"; fi
}

[[ ${SIZE^^} =~ ^[0-9]+[KMG]B?$ ]] || die 2 "--size must look like 2M or 1G, got '$SIZE'"
SIZE_KB=$(size_to_kb "$SIZE")
SIZE_NAME=$(kb_to_size "$SIZE_KB")

GLOBAL_DIR=$SYSFS/kernel/mm/hugepages
NODE_ROOT=$SYSFS/devices/system/node

supported_sizes() {
    local d out=()
    for d in "$GLOBAL_DIR"/hugepages-*kB; do
        [[ -d $d ]] || continue
        local kb=${d##*/hugepages-}; kb=${kb%kB}
        out+=("$(kb_to_size "$kb")")
    done
    echo "${out[*]:-none}"
}

[[ -d $GLOBAL_DIR ]] || die 1 "$GLOBAL_DIR does not exist: this kernel has no hugepage support"
if [[ ! -d $GLOBAL_DIR/hugepages-${SIZE_KB}kB ]]; then
    die 2 "page size $SIZE_NAME is not supported by this machine; supported sizes: $(supported_sizes)"
fi

# Directory holding nr_hugepages/free_hugepages for the chosen node (or global).
size_dir_for() { # node
    if [[ $1 == all ]]; then
        echo "$GLOBAL_DIR/hugepages-${SIZE_KB}kB"
    else
        echo "$NODE_ROOT/node$1/hugepages/hugepages-${SIZE_KB}kB"
    fi
}
SIZE_DIR=$(size_dir_for "$NODE")
if [[ $NODE != all && ! -d $SIZE_DIR ]]; then
    nodes=$(cd "$NODE_ROOT" 2>/dev/null && ls -d node[0-9]* 2>/dev/null | tr '\n' ' ' || true)
    die 2 "NUMA node $NODE has no $SIZE_NAME hugepages directory ($SIZE_DIR); nodes: ${nodes:-none}"
fi

if [[ -n $MB ]]; then
    WANT=$(( (MB * 1024 + SIZE_KB - 1) / SIZE_KB ))
elif [[ -n $PAGES ]]; then
    WANT=$PAGES
else
    WANT=$DEFAULT_PAGES
fi

readnum() { local v; v=$(cat "$1" 2>/dev/null || echo 0); echo "${v//[^0-9]/}"; }

# ---- mount helpers ---------------------------------------------------------
# Prints "PAGESIZE_KB<TAB>DIR" for each hugetlbfs mount.
hugetlbfs_mounts() {
    [[ -r $MOUNTS ]] || return 0
    local dev dir fstype opts rest ps kb
    while read -r dev dir fstype opts rest; do
        [[ $fstype == hugetlbfs ]] || continue
        dir=$(printf '%b' "$dir")     # undo \040 escapes
        ps=""
        if [[ ,$opts, =~ ,pagesize=([^,]+), ]]; then ps=${BASH_REMATCH[1]}; fi
        if [[ -n $ps ]]; then
            kb=$(size_to_kb "$ps" 2>/dev/null || echo 0)
        else
            kb=$(default_size_kb)
        fi
        printf '%s\t%s\n' "$kb" "$dir"
    done < "$MOUNTS"
}

default_size_kb() {
    local v
    v=$(awk '/^Hugepagesize:/ {print $2}' /proc/meminfo 2>/dev/null || true)
    echo "${v:-2048}"
}

mount_for_size() { # kb -> first mount dir of that size, or nothing
    hugetlbfs_mounts | awk -F'\t' -v kb="$1" '$1 == kb {print $2; exit}'
}

mount_size_of_dir() { # dir -> kb, if dir is a hugetlbfs mount
    hugetlbfs_mounts | awk -F'\t' -v d="$1" '$2 == d {print $1; exit}'
}

default_mount_dir() {
    if [[ $SIZE_KB == 2048 ]]; then echo /dev/hugepages; else echo "/dev/hugepages-$SIZE_NAME"; fi
}

require_root() {
    [[ $(id -u) -eq 0 ]] || die 2 "must run as root (try: sudo $0 ...)"
}

# ---- modes -----------------------------------------------------------------
print_status() {
    local d kb nr free
    msg "page sizes supported: $(supported_sizes)"
    for d in "$GLOBAL_DIR"/hugepages-*kB; do
        [[ -d $d ]] || continue
        kb=${d##*/hugepages-}; kb=${kb%kB}
        nr=$(readnum "$d/nr_hugepages"); free=$(readnum "$d/free_hugepages")
        msg "all nodes  size $(kb_to_size "$kb"): reserved $nr, free $free"
    done
    local n
    for n in "$NODE_ROOT"/node[0-9]*; do
        [[ -d $n/hugepages ]] || continue
        for d in "$n"/hugepages/hugepages-*kB; do
            [[ -d $d ]] || continue
            kb=${d##*/hugepages-}; kb=${kb%kB}
            nr=$(readnum "$d/nr_hugepages"); free=$(readnum "$d/free_hugepages")
            msg "${n##*/}      size $(kb_to_size "$kb"): reserved $nr, free $free"
        done
    done
    local m found=0
    while IFS=$'\t' read -r mkb mdir; do
        [[ -n $mdir ]] || continue
        found=1
        msg "hugetlbfs mounted on $mdir (pagesize $(kb_to_size "$mkb"))"
    done < <(hugetlbfs_mounts)
    [[ $found == 1 ]] || msg "no hugetlbfs mounted"
}

do_check() {
    print_status
    local free rc=0 where
    free=$(readnum "$SIZE_DIR/free_hugepages")
    where=$([[ $NODE == all ]] && echo "all nodes" || echo "node $NODE")
    if (( free < WANT )); then
        err "only $free free $SIZE_NAME pages on $where, $WANT requested"
        rc=1
    else
        msg "ok: $free free $SIZE_NAME pages on $where (>= $WANT requested)"
    fi
    local m
    m=$(mount_for_size "$SIZE_KB")
    if [[ -z $m ]]; then
        err "no hugetlbfs with pagesize $SIZE_NAME is mounted"
        rc=1
    else
        msg "ok: hugetlbfs for $SIZE_NAME mounted on $m"
    fi
    exit $rc
}

do_reserve() {
    require_root
    local nr_file=$SIZE_DIR/nr_hugepages cur got where
    where=$([[ $NODE == all ]] && echo "all nodes" || echo "node $NODE")
    cur=$(readnum "$nr_file")
    if (( cur >= WANT )); then
        msg "$cur $SIZE_NAME pages already reserved on $where (>= $WANT asked), leaving as is"
    else
        echo "$WANT" > "$nr_file" 2>/dev/null || true
        got=$(readnum "$nr_file")
        if (( got < WANT )); then
            # Do not leave a huge partial reservation behind: restore the previous one.
            echo "$cur" > "$nr_file" 2>/dev/null || true
            die 1 "asked the kernel for $WANT $SIZE_NAME pages on $where but it gave only $got;" \
                "free memory (e.g. echo 3 > /proc/sys/vm/drop_caches; echo 1 > /proc/sys/vm/compact_memory)" \
                "and retry, or reserve at boot with kernel cmdline hugepagesz=$SIZE_NAME hugepages=$WANT" \
                "(reservation left at $cur)"
        fi
        msg "reserved $got $SIZE_NAME pages on $where (was $cur)"
    fi

    # Mount.
    local dir existing
    if [[ -n $MOUNT_DIR ]]; then
        dir=$MOUNT_DIR
    else
        existing=$(mount_for_size "$SIZE_KB")
        if [[ -n $existing ]]; then
            msg "hugetlbfs for $SIZE_NAME already mounted on $existing"
            return 0
        fi
        dir=$(default_mount_dir)
    fi
    local dsz
    dsz=$(mount_size_of_dir "$dir")
    if [[ -n $dsz ]]; then
        if [[ $dsz == "$SIZE_KB" ]]; then
            msg "hugetlbfs for $SIZE_NAME already mounted on $dir"
            return 0
        fi
        die 1 "$dir is already a hugetlbfs mount with pagesize $(kb_to_size "$dsz"), not $SIZE_NAME; use --mount DIR"
    fi
    mkdir -p "$dir"
    mount -t hugetlbfs -o "pagesize=$SIZE_NAME" nodev "$dir" \
        || die 1 "mount -t hugetlbfs -o pagesize=$SIZE_NAME nodev $dir failed"
    mkdir -p "$STATE_DIR"
    grep -qxF "$dir" "$STATE_FILE" 2>/dev/null || echo "$dir" >> "$STATE_FILE"
    msg "mounted hugetlbfs (pagesize=$SIZE_NAME) on $dir"
}

do_clear() {
    require_root
    local rc=0 nr_file=$SIZE_DIR/nr_hugepages cur got where
    where=$([[ $NODE == all ]] && echo "all nodes" || echo "node $NODE")

    # Unmount first what we mounted (files in them keep pages in use).
    local dirs=() d
    if [[ -n $MOUNT_DIR ]]; then
        dirs=("$MOUNT_DIR")
    elif [[ -r $STATE_FILE ]]; then
        while IFS= read -r d; do [[ -n $d ]] && dirs+=("$d"); done < "$STATE_FILE"
    fi
    local keep=()
    for d in "${dirs[@]}"; do
        local dsz
        dsz=$(mount_size_of_dir "$d")
        if [[ -z $dsz ]]; then
            msg "$d is not mounted (any more)"
            continue
        fi
        if [[ -z $MOUNT_DIR && $dsz != "$SIZE_KB" ]]; then
            keep+=("$d")   # another size, --clear for that size will handle it
            continue
        fi
        if [[ -n $(find "$d" -mindepth 1 -print -quit 2>/dev/null) ]]; then
            msg "not unmounting $d: it still holds files (in use by a DPDK process? remove them first):"
            find "$d" -mindepth 1 -maxdepth 1 | head -5 | sed "s/^/$PROG:   /"
            keep+=("$d"); rc=1
            continue
        fi
        if umount "$d"; then
            msg "unmounted $d"
        else
            msg "could not unmount $d (busy?)"; keep+=("$d"); rc=1
        fi
    done
    if [[ -r $STATE_FILE ]]; then
        if [[ -n $MOUNT_DIR ]]; then
            # keep entries other than MOUNT_DIR, plus MOUNT_DIR if it stayed
            local others=()
            while IFS= read -r d; do [[ -n $d && $d != "$MOUNT_DIR" ]] && others+=("$d"); done < "$STATE_FILE"
            keep+=("${others[@]}")
        fi
        if [[ ${#keep[@]} -gt 0 ]]; then
            printf '%s\n' "${keep[@]}" | sort -u > "$STATE_FILE"
        else
            rm -f "$STATE_FILE"
        fi
    fi
    [[ -z $MOUNT_DIR && ${#dirs[@]} -eq 0 ]] && msg "no hugetlbfs mounts made by this script to unmount"

    cur=$(readnum "$nr_file")
    echo 0 > "$nr_file" 2>/dev/null || true
    got=$(readnum "$nr_file")
    if (( got > 0 )); then
        msg "reservation of $SIZE_NAME pages on $where lowered from $cur to $got, not 0: pages still in use"
        rc=1
    else
        msg "reservation of $SIZE_NAME pages on $where set to 0 (was $cur)"
    fi
    exit $rc
}

case $MODE in
    check) do_check ;;
    reserve) do_reserve ;;
    clear) do_clear ;;
esac
