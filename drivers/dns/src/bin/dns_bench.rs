//! The DNS benchmark (`hack/bench/dnszone/run.sh`): writing N names into a zone on a real
//! BIND 9 with `phoenix-dns` as the DnsZone controller does (a TSIG-signed transfer, a
//! plan, one signed update per name), against `nsupdate` — the tool a user would pick —
//! doing the same in the same run: one process, one signed update per name. Also the
//! no-op reconcile (transfer + plan with nothing to change) at N names, and the delete of
//! all N.
//!
//! Usage: `dns-bench --server IP:PORT --secret BASE64 [--key NAME] [--names N] [--reps R]`
//! (the zones `phoenix.bench` and `nsupdate.bench` must accept the key for updates and
//! transfers; run.sh starts such a named).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use phoenix_dns::owner::{self, Desired};
use phoenix_dns::{Rfc2136Client, TsigKey};

type Error = Box<dyn std::error::Error>;

struct Args {
    server: SocketAddr,
    secret: String,
    key: String,
    names: usize,
    reps: usize,
}

fn args() -> Result<Args, Error> {
    let mut server = None;
    let mut secret = None;
    let mut key = "phoenix-key".to_string();
    let mut names = 500;
    let mut reps = 3;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--server" => server = Some(value.parse()?),
            "--secret" => secret = Some(value),
            "--key" => key = value,
            "--names" => names = value.parse()?,
            "--reps" => reps = value.parse()?,
            _ => return Err(format!("unknown flag {flag}").into()),
        }
    }
    Ok(Args {
        server: server.ok_or("--server IP:PORT is required")?,
        secret: secret.ok_or("--secret BASE64 is required")?,
        key,
        names,
        reps,
    })
}

fn desired(zone: &str, n: usize, third: u8) -> Desired {
    let mut d = BTreeMap::new();
    for i in 0..n {
        let ip: IpAddr = format!("10.{third}.{}.{}", i / 250, i % 250 + 1)
            .parse()
            .unwrap();
        d.insert(format!("host-{i}.{zone}"), BTreeSet::from([ip]));
    }
    d
}

/// One reconcile as the controller runs it; returns the number of updates sent.
async fn reconcile(c: &Rfc2136Client, zone: &str, want: &Desired) -> Result<usize, Error> {
    let current = c.read_zone(zone).await?;
    let plan = owner::plan(&current, "bench", want, 300);
    for change in &plan.changes {
        c.apply(zone, &change.prerequisites, &change.updates)
            .await?;
    }
    Ok(plan.changes.len())
}

/// `nsupdate` with one signed update per name (each `send` is one message), in one process.
fn nsupdate(a: &Args, zone: &str, lines: impl Iterator<Item = String>) -> Result<(), Error> {
    let mut script = format!(
        "server {} {}\nkey hmac-sha256:{} {}\nzone {zone}\n",
        a.server.ip(),
        a.server.port(),
        a.key,
        a.secret
    );
    for l in lines {
        script.push_str(&l);
        script.push_str("\nsend\n");
    }
    let mut child = Command::new("nsupdate")
        .arg("-v") // TCP, as phoenix-dns uses
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    child.stdin.take().unwrap().write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(format!("nsupdate: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let a = args()?;
    let client = Rfc2136Client::new(a.server, TsigKey::new(&a.key, "hmac-sha256", &a.secret)?);
    let n = a.names;
    let (mut p_create, mut p_noop, mut p_delete) = (Vec::new(), Vec::new(), Vec::new());
    let (mut b_create, mut b_delete) = (Vec::new(), Vec::new());
    for rep in 0..a.reps {
        let want = desired("phoenix.bench", n, (rep % 200) as u8 + 1);
        let t = Instant::now();
        let sent = reconcile(&client, "phoenix.bench", &want).await?;
        p_create.push(t.elapsed());
        assert_eq!(sent, n, "every name is created");
        let t = Instant::now();
        let sent = reconcile(&client, "phoenix.bench", &want).await?;
        p_noop.push(t.elapsed());
        assert_eq!(sent, 0, "converged");
        let t = Instant::now();
        reconcile(&client, "phoenix.bench", &Desired::new()).await?;
        p_delete.push(t.elapsed());

        // The baseline: the same names (A and the ownership TXT) by nsupdate.
        let lines = want.iter().map(|(name, ips)| {
            let ip = ips.iter().next().unwrap();
            let name = name.replace("phoenix.bench", "nsupdate.bench");
            format!(
                "update add {name} 300 A {ip}\nupdate add {name} 300 TXT \"heritage=phoenix,phoenix/owner=bench\""
            )
        });
        let t = Instant::now();
        nsupdate(&a, "nsupdate.bench", lines)?;
        b_create.push(t.elapsed());
        let names: Vec<String> = want
            .keys()
            .map(|n| n.replace("phoenix.bench", "nsupdate.bench"))
            .collect();
        let t = Instant::now();
        nsupdate(
            &a,
            "nsupdate.bench",
            names
                .iter()
                .map(|n| format!("update delete {n} A\nupdate delete {n} TXT")),
        )?;
        b_delete.push(t.elapsed());
    }
    let (pc, pn, pd, bc, bd) = (
        median(p_create),
        median(p_noop),
        median(p_delete),
        median(b_create),
        median(b_delete),
    );
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("names: {n}, reps: {} (medians)", a.reps);
    println!(
        "create  phoenix-dns {:8.1} ms   nsupdate {:8.1} ms   ratio {:.2}",
        ms(pc),
        ms(bc),
        ms(pc) / ms(bc)
    );
    println!(
        "delete  phoenix-dns {:8.1} ms   nsupdate {:8.1} ms   ratio {:.2}",
        ms(pd),
        ms(bd),
        ms(pd) / ms(bd)
    );
    println!(
        "no-op reconcile (AXFR + plan) {:8.1} ms = {:.3} of nsupdate's create",
        ms(pn),
        ms(pn) / ms(bc)
    );
    Ok(())
}
