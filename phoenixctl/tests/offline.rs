//! phoenixctl's offline commands, run as a user would: `apply --dry-run=client`, `explain`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn phoenixctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_phoenixctl"))
        .args(args)
        .output()
        .expect("phoenixctl runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn dry_run_prints_every_object_of_the_estate() {
    let dir = repo("manifests/examples/phoenix");
    let out = phoenixctl(&["apply", "-f", dir.to_str().unwrap(), "--dry-run=client"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 16, "{stdout}");
    for key in [
        "guest/nginx-gateway",
        "gateway/external",
        "mesh/internal",
        "stack/n8n",
        "certificateauthority/step-ca",
        "dnszone/prox-local",
    ] {
        assert!(
            stdout.contains(&format!("{key} checked (dry run)")),
            "{stdout}"
        );
    }
}

#[test]
fn dry_run_prints_defaulted_objects_as_yaml() {
    let file = repo("manifests/samples/guest.yaml");
    let out = phoenixctl(&[
        "apply",
        "-f",
        file.to_str().unwrap(),
        "--dry-run",
        "-o",
        "yaml",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("hostname: demo"),
        "defaults are applied:\n{stdout}"
    );
    assert!(stdout.contains("deletionPolicy: Delete"), "{stdout}");
}

#[test]
fn every_bad_manifest_fails_with_its_reason_and_a_validation_exit_code() {
    let dir = repo("api/tests/bad");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for file in files {
        let content = String::from_utf8_lossy(&std::fs::read(&file).unwrap()).into_owned();
        let out = phoenixctl(&["apply", "-f", file.to_str().unwrap(), "--dry-run=client"]);
        assert_eq!(
            out.status.code(),
            Some(3),
            "{}: {}",
            file.display(),
            text(&out.stderr)
        );
        assert!(
            out.stdout.is_empty(),
            "{}: nothing is printed as applied",
            file.display()
        );
        let stderr = text(&out.stderr);
        for expect in content.lines().filter_map(|l| l.strip_prefix("# expect: ")) {
            assert!(
                stderr.contains(expect),
                "{}: missing {expect:?} in\n{stderr}",
                file.display()
            );
        }
        assert!(stderr.contains("nothing was applied"), "{stderr}");
    }
}

#[test]
fn stdin_is_read_with_dash() {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_phoenixctl"))
        .args(["apply", "-f", "-", "--dry-run=client", "-o", "name"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Secret\nmetadata: {name: s}\n",
        )
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), "secret/s\n");
}

#[test]
fn missing_path_is_an_error_naming_it() {
    let out = phoenixctl(&["apply", "-f", "/nonexistent/x.yaml", "--dry-run=client"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).contains("/nonexistent/x.yaml: cannot read"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn explain_prints_type_and_documentation() {
    let out = phoenixctl(&["explain", "guest.spec.networks.ipv4"]);
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("FIELD:    Guest.spec.networks.ipv4"),
        "{stdout}"
    );
    assert!(stdout.contains("TYPE:     string"), "{stdout}");
    assert!(stdout.contains("dhcp"), "{stdout}");
    let out = phoenixctl(&["explain", "gateway"]);
    assert!(
        text(&out.stdout).contains("spec\t<object> (required)"),
        "{}",
        text(&out.stdout)
    );
    let out = phoenixctl(&["explain", "guest.spec.bogus"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(
        text(&out.stderr).contains("Guest has no field \"Guest.spec.bogus\""),
        "{}",
        text(&out.stderr)
    );
}
