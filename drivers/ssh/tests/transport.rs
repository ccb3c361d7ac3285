//! The transport against one real OpenSSH server per test binary (tests/support): host keys,
//! login, commands, uploads, the shared session.
//!
//! Needs `sshd` and `ssh-keygen` (Debian's openssh-server; hack/install-deps.sh).

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use phoenix_ssh::{Credentials, Host, HostKeyPolicy, KnownHosts, SshError};
use support::{Sshd, keygen, known_hosts_line};

const T: Duration = Duration::from_secs(20);

/// The server shared by the tests of this binary; it ends with the process.
fn sshd() -> &'static Sshd {
    static SSHD: OnceLock<Sshd> = OnceLock::new();
    SSHD.get_or_init(|| {
        // A static is never dropped: the directories of earlier runs are removed here.
        let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        for e in std::fs::read_dir(&tmp).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("phoenix-ssh-sshd-")
                && !std::path::Path::new("/proc").join(pid).exists()
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        let dir = tmp.join(format!("phoenix-ssh-sshd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Sshd::start(&dir)
    })
}

/// A directory of the test's own, readable by the server's user (the test's user).
fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("phoenix-ssh-test")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
}

/// The shared server as a [`Host`], with `known_hosts` and accepting any host key as told.
fn host_with(known_hosts: Option<String>, accept_any: bool) -> Host {
    let s = sshd();
    let creds = Credentials::new("ops-ssh", &s.client_private, known_hosts).unwrap();
    let policy = creds.host_key_policy(accept_any).unwrap();
    Host::new("127.0.0.1", s.port, s.user.clone(), creds, policy)
}

fn host() -> Host {
    host_with(Some(sshd().known_hosts()), false)
}

#[tokio::test]
async fn commands_report_status_stdout_and_stderr_and_read_their_stdin() {
    let session = host().connect().await.unwrap();
    let out = session
        .exec("printf out; printf err >&2; cat; exit 3", b"-in", T)
        .await
        .unwrap();
    assert_eq!(out.status, Some(3));
    assert!(!out.success());
    assert_eq!(out.stdout, b"out-in");
    assert_eq!(out.stderr_lossy(), "err");
    let ok = session.exec("true", b"", T).await.unwrap();
    assert!(ok.success(), "{ok:?}");
    let killed = session.exec("kill -9 $$", b"", T).await.unwrap();
    assert_eq!(
        (killed.status, killed.signal.as_deref()),
        (None, Some("KILL"))
    );
    session.close().await;
}

#[tokio::test]
async fn a_command_past_its_timeout_is_reported_and_killed() {
    let dir = scratch();
    let marker = dir.path().join("still-running");
    let session = host().connect().await.unwrap();
    let started = Instant::now();
    let cmd = format!(
        "sleep 2; touch {}",
        phoenix_ssh::shell_quote(&marker.display().to_string())
    );
    let e = session
        .exec(&cmd, b"", Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(e, SshError::ExecTimeout { .. }), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!marker.exists(), "the command ran on after its timeout");
    // The session is still usable.
    assert!(session.exec("true", b"", T).await.unwrap().success());
}

#[tokio::test]
async fn uploads_replace_the_file_by_rename_with_its_mode() {
    let dir = scratch();
    let path = dir.path().join("dynamic.yml");
    let p = path.display().to_string();
    let session = host().connect().await.unwrap();
    let first: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    session.upload(&p, &first, 0o640, T).await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), first);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o640);

    // A reader of the old file keeps reading the old file: the new one was renamed over it,
    // not written into it.
    let old = std::fs::File::open(&path).unwrap();
    session.upload(&p, b"second\n", 0o600, T).await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"second\n");
    let mut was = Vec::new();
    std::io::Read::read_to_end(&mut { old }, &mut was).unwrap();
    assert_eq!(was, first);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec!["dynamic.yml"], "no temporary file left");

    // A missing directory fails, naming the path.
    let missing = dir.path().join("no/such/dir/file").display().to_string();
    let e = session.upload(&missing, b"x", 0o644, T).await.unwrap_err();
    match &e {
        SshError::UploadFailed { path, status, .. } => {
            assert_eq!(path, &missing);
            assert_ne!(*status, Some(0));
        }
        other => panic!("not an upload failure: {other}"),
    }
}

#[tokio::test]
async fn host_keys_not_known_for_the_host_are_refused_each_with_its_reason() {
    let s = sshd();
    let dir = scratch();
    let (_, other) = keygen(&dir.path().join("other"));

    let unknown = known_hosts_line(s.port + 1, &s.host_public);
    let e = host_with(Some(unknown), true).connect().await.unwrap_err();
    assert!(matches!(e, SshError::HostKeyUnknown { .. }), "{e}");

    let mismatch = known_hosts_line(s.port, &other);
    let e = host_with(Some(mismatch), true).connect().await.unwrap_err();
    assert!(matches!(e, SshError::HostKeyMismatch { .. }), "{e}");

    let revoked = format!("{}@revoked {}", s.known_hosts(), s.known_hosts());
    let e = host_with(Some(revoked), false).connect().await.unwrap_err();
    assert!(matches!(e, SshError::HostKeyRevoked { .. }), "{e}");
}

#[tokio::test]
async fn hashed_known_hosts_written_by_ssh_keygen_are_trusted() {
    let dir = scratch();
    let file = dir.path().join("known_hosts");
    std::fs::write(&file, sshd().known_hosts()).unwrap();
    let out = std::process::Command::new(support::program("ssh-keygen"))
        .arg("-H")
        .arg("-f")
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let hashed = std::fs::read_to_string(&file).unwrap();
    assert!(hashed.starts_with("|1|"), "{hashed}");
    let session = host_with(Some(hashed), false).connect().await.unwrap();
    assert!(session.exec("true", b"", T).await.unwrap().success());
}

#[tokio::test]
async fn a_host_with_several_keys_proves_the_one_that_is_known() {
    let s = sshd();
    // The server's ecdsa key only; unasked, the server would prove its ed25519 key.
    let ecdsa = known_hosts_line(s.port, &s.host_public_ecdsa);
    let session = host_with(Some(ecdsa), false).connect().await.unwrap();
    assert!(session.exec("true", b"", T).await.unwrap().success());
}

#[tokio::test]
async fn any_host_key_is_accepted_only_without_known_hosts_and_when_asked() {
    let session = host_with(None, true).connect().await.unwrap();
    assert!(session.exec("true", b"", T).await.unwrap().success());
    let creds = Credentials::new("ops-ssh", &sshd().client_private, None).unwrap();
    assert!(creds.host_key_policy(false).is_err());
    // known_hosts that name nothing trust nothing.
    let creds = Credentials::new("ops-ssh", &sshd().client_private, None).unwrap();
    let nothing = HostKeyPolicy::KnownHosts(KnownHosts::parse("# no hosts"));
    let e = Host::new(
        "127.0.0.1",
        sshd().port,
        sshd().user.clone(),
        creds,
        nothing,
    )
    .connect()
    .await
    .unwrap_err();
    assert!(matches!(e, SshError::HostKeyUnknown { .. }), "{e}");
}

#[tokio::test]
async fn a_key_the_server_does_not_authorise_is_rejected() {
    let s = sshd();
    let dir = scratch();
    let (stranger, _) = keygen(&dir.path().join("stranger"));
    let creds = Credentials::new("ops-ssh", &stranger, Some(s.known_hosts())).unwrap();
    let policy = creds.host_key_policy(false).unwrap();
    let e = Host::new("127.0.0.1", s.port, s.user.clone(), creds, policy)
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(e, SshError::AuthRejected { .. }), "{e}");
}

#[tokio::test]
async fn the_shared_session_is_reused_and_reopened_after_it_died() {
    let host = host();
    // $PPID of a command is the server's process for the connection.
    let conn = async || {
        let out = host.exec("echo $PPID", b"", T).await.unwrap();
        out.stdout_lossy().trim().to_string()
    };
    let first = conn().await;
    assert_eq!(conn().await, first, "one connection for both");

    let e = host.exec("kill -9 $PPID", b"", T).await.unwrap_err();
    assert!(
        matches!(e, SshError::ConnectionLost | SshError::Channel(_)),
        "{e}"
    );
    let second = conn().await;
    assert_ne!(second, first, "a new connection");
    host.close().await;
    assert_ne!(conn().await, second, "closed, then reopened");
}

#[tokio::test]
async fn an_unreachable_port_fails_to_connect() {
    let s = sshd();
    let port = std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let creds = Credentials::new("ops-ssh", &s.client_private, Some(s.known_hosts())).unwrap();
    let policy = creds.host_key_policy(false).unwrap();
    let e = Host::new("127.0.0.1", port, s.user.clone(), creds, policy)
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(e, SshError::Connect { .. }), "{e}");
}
