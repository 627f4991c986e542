#!/usr/bin/env bash
# Makes the base image `deploy/ci/Dockerfile` builds on, for machines that reach no container registry
# (CI here): Debian bookworm from the Debian mirror with `debootstrap --variant=minbase`, cut down to what the
# image runs, then `docker import`ed. Skipped when the image already exists (REALTIME_BASE_REBUILD=1 forces it).
#
# What the image runs, with their Debian dependencies: libc6 and libgcc-s1 (the binary links nothing else),
# curl (the HEALTHCHECK), dash as /bin/sh, coreutils and passwd (the Dockerfile's RUN: groupadd, useradd,
# mkdir, chown), base-files and base-passwd. Left out: the package manager (dpkg, apt, perl-base, debconf,
# tar) and the rest of minbase, PAM's modules (passwd needs them, groupadd and useradd do not link PAM),
# the SASL database plugin (libldap loads SASL plugins only for LDAP binds, which the image never makes),
# docs, man pages, translations and glibc's gconv modules. The ca-certificates bundle is copied as files
# (as a package it would bring openssl, debconf and perl).
# var/lib/dpkg/status lists exactly the packages whose files are in the image, so scanners can read it.
#
# Env: REALTIME_BASE_IMAGE (default realtime-base:bookworm), DEBIAN_MIRROR (default
# http://deb.debian.org/debian), REALTIME_BASE_REBUILD=1, DEBOOTSTRAP_DIR (a minbase tree made earlier
# by this script's debootstrap line, reused instead of running debootstrap; for iterating on the cut).
# Needs root, debootstrap, python3 and a Docker daemon.
set -euo pipefail

IMAGE="${REALTIME_BASE_IMAGE:-realtime-base:bookworm}"
SUITE=bookworm
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
DEBOOTSTRAP_TIMEOUT=1200
ROOTS=(libc6 libgcc-s1 curl dash coreutils passwd base-files base-passwd)
LEFT_OUT=(dpkg tar perl-base debconf ca-certificates libpam-modules libsasl2-modules-db)

fail() {
  echo "build-base: FAILED: $*" >&2
  exit 1
}

if docker image inspect "$IMAGE" >/dev/null 2>&1 && [[ "${REALTIME_BASE_REBUILD:-0}" != 1 ]]; then
  echo "build-base: $IMAGE exists ($(docker image inspect -f '{{.Size}}' "$IMAGE") bytes); kept"
  exit 0
fi
[[ $(id -u) -eq 0 ]] || fail "debootstrap needs root"
command -v debootstrap >/dev/null || fail "debootstrap is missing (apt-get install debootstrap)"
command -v python3 >/dev/null || fail "python3 is missing"
docker info >/dev/null 2>&1 || fail "no Docker daemon answers"

work="$(mktemp -d /tmp/realtime-base.XXXXXX)"
# debootstrap can leave /proc mounted in the tree (it did here): unmount whatever is under $work before
# removing it, and never cross into another file system while removing.
unmount_all() {
  awk -v w="$work" '$2 ~ "^" w {print $2}' /proc/mounts | sort -r | while read -r m; do umount -l "$m" || true; done
}
cleanup() {
  unmount_all
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

full="${DEBOOTSTRAP_DIR:-$work/full}"
if [[ -z "${DEBOOTSTRAP_DIR:-}" ]]; then
  echo "build-base: debootstrap --variant=minbase $SUITE from $MIRROR (a few minutes)"
  started=$SECONDS
  timeout "$DEBOOTSTRAP_TIMEOUT" debootstrap --variant=minbase --include=ca-certificates,curl \
    "$SUITE" "$full" "$MIRROR" >"$work/debootstrap.log" 2>&1 || {
    tail -20 "$work/debootstrap.log" >&2
    unmount_all
    fail "debootstrap failed or took over ${DEBOOTSTRAP_TIMEOUT}s (log above)"
  }
  unmount_all
  echo "build-base: debootstrap took $((SECONDS - started)) s"
fi
[[ -f "$full/var/lib/dpkg/status" ]] || fail "$full is not a debootstrap tree"

# The closure of ROOTS over Depends/Pre-Depends (the first installed alternative), less LEFT_OUT; the
# files those packages installed (directories resolved through the merged-/usr links, so bin/x is
# copied as usr/bin/x), less docs; and their status stanzas.
root="$work/root"
mkdir -p "$root/var/lib/dpkg"
python3 - "$full" "$root/var/lib/dpkg/status" "$work/files" "${ROOTS[*]}" "${LEFT_OUT[*]}" <<'PY'
import os, sys
full, status_out, files_out, roots, left_out = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(), set(sys.argv[5].split())
stanzas = {}
for text in open(f"{full}/var/lib/dpkg/status").read().split("\n\n"):
    fields, key = {}, None
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and key:
            fields[key] += "\n" + line
        elif ":" in line:
            key, value = line.split(":", 1)
            fields[key] = value.strip()
    if "Package" in fields and "installed" in fields.get("Status", ""):
        stanzas[fields["Package"]] = (fields, text.strip())
provides = {}
for name, (fields, _) in stanzas.items():
    for p in fields.get("Provides", "").split(","):
        if p.strip():
            provides.setdefault(p.split()[0], name)
def depends(fields):
    for field in ("Pre-Depends", "Depends"):
        for group in fields.get(field, "").split(","):
            for alt in group.split("|"):
                name = alt.strip().split(" ")[0].split(":")[0]
                if name in stanzas or name in provides:
                    yield name if name in stanzas else provides[name]
                    break
chosen, todo = set(), list(roots)
while todo:
    name = todo.pop()
    if name in chosen or name in left_out:
        continue
    if name not in stanzas:
        sys.exit(f"{name} is not installed in {full}")
    chosen.add(name)
    todo.extend(depends(stanzas[name][0]))
skip = ("/usr/share/doc/", "/usr/share/man/", "/usr/share/info/", "/usr/share/locale/", "/usr/share/lintian/",
        "/usr/lib/x86_64-linux-gnu/gconv/", "/usr/share/bash-completion/")
paths = set()
for name in sorted(chosen):
    arch = stanzas[name][0].get("Architecture", "all")
    for list_file in (f"{full}/var/lib/dpkg/info/{name}.list", f"{full}/var/lib/dpkg/info/{name}:{arch}.list"):
        if os.path.exists(list_file):
            break
    else:
        sys.exit(f"no file list for {name}")
    for path in open(list_file).read().split("\n"):
        if not path or path == "/.":
            continue
        parent = os.path.realpath(full + os.path.dirname(path))[len(full):] or "/"
        real = os.path.join(parent, os.path.basename(path))
        if any(real.startswith(s) or real + "/" == s for s in skip):
            continue
        paths.add(real.lstrip("/"))
with open(files_out, "w") as f:
    f.write("\0".join(sorted(paths)) + "\0")
with open(status_out, "w") as f:
    f.write("\n\n".join(stanzas[n][1] for n in sorted(chosen)) + "\n")
print(f"build-base: {len(chosen)} packages, {len(paths)} paths: {' '.join(sorted(chosen))}")
PY

tar -C "$full" --null --no-recursion -T "$work/files" -c | tar -C "$root" -x
# Not in any package's file list: the merged-/usr links, the generated account files, the CA bundle and
# its links, the linker cache, /bin/sh, and the empty system directories.
for link in bin lib lib64 sbin; do cp -a "$full/$link" "$root/$link"; done
cp -a "$full/usr/bin/sh" "$root/usr/bin/sh"
for f in passwd group shadow gshadow nsswitch.conf login.defs ld.so.cache; do
  [[ -e "$full/etc/$f" ]] && cp -a "$full/etc/$f" "$root/etc/$f"
done
mkdir -p "$root/etc/ssl" "$root/usr/share"
cp -a "$full/etc/ssl/certs" "$root/etc/ssl/certs"
cp -a "$full/usr/share/ca-certificates" "$root/usr/share/ca-certificates"
[[ -d "$full/etc/pam.d" ]] && cp -a "$full/etc/pam.d" "$root/etc/pam.d"
mkdir -p "$root"/{dev,proc,sys,run,root,home,var/tmp,var/log,tmp}
chmod 1777 "$root/tmp" "$root/var/tmp"
chmod 700 "$root/root"

tar -C "$root" --numeric-owner -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["/bin/sh"]' \
  --message "debootstrap --variant=minbase $SUITE, cut to ${ROOTS[*]} (deploy/ci/build-base.sh)" \
  - "$IMAGE" >/dev/null || fail "docker import"

# The image does what the Dockerfile and the HEALTHCHECK need of it.
docker run --rm --network none "$IMAGE" sh -c \
  'curl --version >/dev/null && groupadd --help >/dev/null && useradd --help >/dev/null && mkdir -p /tmp/x && chown 0:0 /tmp/x && test -s /etc/ssl/certs/ca-certificates.crt' \
  || fail "$IMAGE lacks curl, groupadd/useradd, coreutils or the CA bundle"
echo "build-base: $IMAGE: $(docker image inspect -f '{{.Size}}' "$IMAGE") bytes"
