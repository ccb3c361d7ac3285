//! Test support: a real OpenSSH server on 127.0.0.1 with a random port, its own host keys
//! (ed25519 and ecdsa), one authorised client key, for the test's own user.
//!
//! Needs `sshd` and `ssh-keygen` (Debian's openssh-server; hack/install-deps.sh). Also used
//! by controllers/gateway/tests/ssh.rs.
#![allow(dead_code)]

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// `name` from the system directories; panics with how to install it.
pub fn program(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} is not installed: run hack/install-deps.sh (installs Debian's openssh-server)");
}

/// A new ed25519 key pair at `path` (and `path.pub`): (private, public).
pub fn keygen(path: &Path) -> (String, String) {
    keygen_type(path, "ed25519")
}

/// A new key pair of `kind` (`ed25519`, `ecdsa`, `rsa`) at `path`: (private, public).
pub fn keygen_type(path: &Path, kind: &str) -> (String, String) {
    let out = Command::new(program("ssh-keygen"))
        .args(["-q", "-t", kind, "-N", "", "-C", "phoenix-test", "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen");
    assert!(out.status.success(), "ssh-keygen: {out:?}");
    let private = std::fs::read_to_string(path).unwrap();
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    (private, public)
}

/// A `known_hosts` line for `127.0.0.1:port` with the key of a `.pub` file's text.
pub fn known_hosts_line(port: u16, public: &str) -> String {
    let mut parts = public.split_whitespace();
    let (kind, data) = (parts.next().unwrap(), parts.next().unwrap());
    format!("[127.0.0.1]:{port} {kind} {data}\n")
}

/// An OpenSSH server on 127.0.0.1 with a random port, for the test's own user. It runs
/// under a shell that ends it when this process lets go of the shell's stdin: on drop, and
/// when the test process exits (so a server shared in a `static` does not outlive it).
pub struct Sshd {
    /// Port on 127.0.0.1.
    pub port: u16,
    /// `.pub` text of the ed25519 host key (the one a client is offered first).
    pub host_public: String,
    /// `.pub` text of the ecdsa host key.
    pub host_public_ecdsa: String,
    /// The authorised client key (OpenSSH format).
    pub client_private: String,
    /// Login user (the test's own).
    pub user: String,
    dir: PathBuf,
    keeper: Child,
    stdin: Option<ChildStdin>,
}

impl Sshd {
    /// Starts a server with its files in `dir`; waits until it accepts connections.
    pub fn start(dir: &Path) -> Sshd {
        let sshd = program("sshd");
        let (_, host_public) = keygen(&dir.join("host_key"));
        let (_, host_public_ecdsa) = keygen_type(&dir.join("host_key_ecdsa"), "ecdsa");
        let (client_private, client_public) = keygen(&dir.join("client_key"));
        std::fs::write(dir.join("authorized_keys"), client_public).unwrap();
        let port = TcpListener::bind(("127.0.0.1", 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_string();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nHostKey {hk}_ecdsa\nAuthorizedKeysFile {ak}\nPidFile none\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nMaxStartups 100\nAllowUsers {user}\nLogLevel ERROR\n",
            hk = dir.join("host_key").display(),
            ak = dir.join("authorized_keys").display(),
        );
        std::fs::write(dir.join("sshd_config"), config).unwrap();
        if rustix::process::geteuid().is_root() {
            // Privilege separation directory Debian's sshd expects.
            std::fs::create_dir_all("/run/sshd").unwrap();
        }
        let mut keeper = Command::new("/bin/sh")
            .args([
                "-c",
                r#""$0" -D -e -f "$1" </dev/null & pid=$!; read _; kill "$pid"; wait "$pid""#,
            ])
            .arg(sshd)
            .arg(dir.join("sshd_config"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn sshd");
        let stdin = keeper.stdin.take();
        let s = Sshd {
            port,
            host_public,
            host_public_ecdsa,
            client_private,
            user,
            dir: dir.to_path_buf(),
            keeper,
            stdin,
        };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "sshd did not start (see its stderr above)"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        s
    }

    /// `known_hosts` naming this server (`[127.0.0.1]:port`) with its ed25519 key.
    pub fn known_hosts(&self) -> String {
        known_hosts_line(self.port, &self.host_public)
    }

    /// The directory of its files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"stop\n");
        }
        let _ = self.keeper.wait();
    }
}
