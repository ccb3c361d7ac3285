#!/usr/bin/env bash
# Builds the Debian package of phoenix and phoenixctl: binaries, systemd units
# (deploy/systemd), the sysusers entry, /etc/phoenix/phoenix.env (a conffile), shell
# completions and the commands' --help as text (/usr/share/doc/phoenix/help).
#
#   hack/package-deb.sh [--profile release|dev] [--out DIR] [--fast]
#
# --profile dev packages the debug binaries (tests); --fast compresses with gzip -1 instead of
# xz. Prints the path of the .deb.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
out=target/debian
compress=(-Zxz)
while [ $# -gt 0 ]; do
  case $1 in
    --profile) profile=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --fast) compress=(-Zgzip -z1); shift ;;
    *) echo "hack/package-deb.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
case $profile in
  release) bindir=target/release ;;
  dev) bindir=target/debug ;;
  *) echo "hack/package-deb.sh: --profile is release or dev" >&2; exit 2 ;;
esac

cargo build --locked --profile "$profile" -p phoenix -p phoenixctl >&2
version=$(cargo metadata --format-version 1 --no-deps --locked \
  | python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "phoenix"))')
arch=$(dpkg --print-architecture)

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/root
install -d "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" "$root/usr/lib/sysusers.d" \
  "$root/etc/phoenix" "$root/usr/share/doc/phoenix/help" \
  "$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions" \
  "$root/usr/share/fish/vendor_completions.d"
install -m 0755 "$bindir/phoenix" "$bindir/phoenixctl" "$root/usr/bin/"
install -m 0644 deploy/systemd/phoenix.service deploy/systemd/phoenix-controller@.service "$root/lib/systemd/system/"
install -m 0644 deploy/systemd/phoenix.sysusers "$root/usr/lib/sysusers.d/phoenix.conf"
install -m 0640 deploy/systemd/phoenix.env "$root/etc/phoenix/phoenix.env"
install -m 0644 README.md "$root/usr/share/doc/phoenix/README.md"
cat > "$root/usr/share/doc/phoenix/copyright" <<COPY
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: phoenix
Source: https://github.com/thinkheads/phoenix

Files: *
License: Apache-2.0
 On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.
COPY
for bin in phoenix phoenixctl; do
  "$bindir/$bin" completion bash >"$root/usr/share/bash-completion/completions/$bin"
  "$bindir/$bin" completion zsh >"$root/usr/share/zsh/vendor-completions/_$bin"
  "$bindir/$bin" completion fish >"$root/usr/share/fish/vendor_completions.d/$bin.fish"
done
# Every command's --help, as the manual.
"$bindir/phoenix" --help >"$root/usr/share/doc/phoenix/help/phoenix.txt"
for cmd in $("$bindir/phoenix" --help | awk '/^Commands:/{on=1; next} /^$/{on=0} on && /^  [a-z]/ && $1 != "help" {print $1}'); do
  "$bindir/phoenix" "$cmd" --help >"$root/usr/share/doc/phoenix/help/phoenix-$cmd.txt"
done
"$bindir/phoenixctl" --help >"$root/usr/share/doc/phoenix/help/phoenixctl.txt"
for cmd in $("$bindir/phoenixctl" --help | awk '/^Commands:/{on=1; next} /^$/{on=0} on && /^  [a-z]/ && $1 != "help" {print $1}'); do
  "$bindir/phoenixctl" "$cmd" --help >"$root/usr/share/doc/phoenix/help/phoenixctl-$cmd.txt"
done

echo /etc/phoenix/phoenix.env >"$root/DEBIAN/conffiles"
install -m 0755 deploy/debian/postinst deploy/debian/prerm deploy/debian/postrm "$root/DEBIAN/"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" \
  -e "s/@DEPENDS@/libc6 (>= 2.36), adduser | systemd (>= 252)/" \
  deploy/debian/control.in >"$root/DEBIAN/control"

mkdir -p "$out"
deb=$out/phoenix_${version}_${arch}.deb
dpkg-deb --root-owner-group "${compress[@]}" --build "$root" "$deb" >&2
echo "$deb"
