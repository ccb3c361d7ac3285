#!/usr/bin/env bash
# The Debian package (hack/package-deb.sh) from the debug build: its contents, control data,
# that the packaged binaries run, that the completions and help are there, and that its systemd
# units pass `systemd-analyze verify` without a single complaint. phoenix.service's exposure
# (`systemd-analyze security --offline`) must stay at or below 2.0.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v systemd-analyze >/dev/null || { echo "hack/check-deb.sh: systemd-analyze is missing (Debian: systemd)" >&2; exit 1; }
command -v dpkg-deb >/dev/null || { echo "hack/check-deb.sh: dpkg-deb is missing (Debian: dpkg)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
deb=$(hack/package-deb.sh --profile dev --fast --out "$work")
fail() { echo "package $(basename "$deb"): $*" >&2; exit 1; }

dpkg-deb --info "$deb" >"$work/info"
for field in 'Package: phoenix' 'Architecture: ' 'Depends: ' 'Installed-Size: '; do
  grep -q "^ $field" "$work/info" || fail "control has no '$field'"
done
[ "$(dpkg-deb --field "$deb" Version)" = "$(./target/debug/phoenixctl version | awk '{print $2}')" ] \
  || fail "package version differs from phoenixctl version"
root=$work/root
dpkg-deb -x "$deb" "$root"
dpkg-deb -e "$deb" "$work/DEBIAN"
grep -qx /etc/phoenix/phoenix.env "$work/DEBIAN/conffiles" || fail "/etc/phoenix/phoenix.env is not a conffile"
for f in usr/bin/phoenix usr/bin/phoenixctl lib/systemd/system/phoenix.service \
  'lib/systemd/system/phoenix-controller@.service' usr/lib/sysusers.d/phoenix.conf \
  etc/phoenix/phoenix.env usr/share/doc/phoenix/copyright usr/share/doc/phoenix/help/phoenix-serve.txt \
  usr/share/doc/phoenix/help/phoenixctl-apply.txt usr/share/bash-completion/completions/phoenixctl \
  usr/share/bash-completion/completions/phoenix usr/share/zsh/vendor-completions/_phoenixctl \
  usr/share/fish/vendor_completions.d/phoenix.fish; do
  [ -s "$root/$f" ] || fail "no $f (or it is empty)"
done
[ "$(stat -c %a "$root/usr/bin/phoenix")" = 755 ] || fail "usr/bin/phoenix is not 0755"
[ "$(stat -c %a "$root/etc/phoenix/phoenix.env")" = 640 ] || fail "etc/phoenix/phoenix.env is not 0640"
"$root/usr/bin/phoenix" --version | grep -q '^phoenix ' || fail "the packaged phoenix does not run"
"$root/usr/bin/phoenixctl" version | grep -q '^phoenixctl ' || fail "the packaged phoenixctl does not run"
grep -q 'serve' "$root/usr/share/bash-completion/completions/phoenix" || fail "phoenix's bash completion lacks serve"
grep -q -- '--data-dir' "$root/usr/share/doc/phoenix/help/phoenix-serve.txt" || fail "phoenix-serve.txt lacks --data-dir"
grep -q '^u phoenix ' "$root/usr/lib/sysusers.d/phoenix.conf" || fail "sysusers.d does not create the phoenix user"
for script in postinst prerm postrm; do
  sh -n "$work/DEBIAN/$script" || fail "DEBIAN/$script does not parse"
done

# systemd-analyze verify checks that ExecStart's binary exists: point it at the extracted one.
units=$work/units
mkdir "$units"
sed "s#/usr/bin/phoenix #$root/usr/bin/phoenix #" "$root/lib/systemd/system/phoenix.service" >"$units/phoenix.service"
sed "s#/usr/bin/phoenix #$root/usr/bin/phoenix #" "$root/lib/systemd/system/phoenix-controller@.service" \
  >"$units/phoenix-controller@gateway.service"
grep -q "$root/usr/bin/phoenix serve" "$units/phoenix.service" || fail "phoenix.service does not run /usr/bin/phoenix serve"
complaints=$(systemd-analyze verify --man=no "$units/phoenix.service" "$units/phoenix-controller@gateway.service" 2>&1 || true)
[ -z "$complaints" ] || fail "systemd-analyze verify: $complaints"
exposure=$(systemd-analyze security --offline=true "$units/phoenix.service" 2>&1 \
  | sed -n 's/.*Overall exposure level for phoenix.service: \([0-9.]*\).*/\1/p')
[ -n "$exposure" ] || fail "systemd-analyze security printed no exposure level"
python3 -c "import sys; sys.exit(float('$exposure') > 2.0)" || fail "phoenix.service exposure $exposure > 2.0"
echo "package: $(basename "$deb") ok ($(du -h "$deb" | cut -f1)), phoenix.service exposure $exposure"
