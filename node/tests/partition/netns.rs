//! A network of the test's own, and the faults it injects.
//!
//! [`enter`] moves the calling thread into a new, empty network namespace (`unshare(CLONE_NEWNET)`),
//! so everything the test starts afterwards (PostgreSQL, the nodes, `iptables`) and every socket it
//! opens lives there and nowhere else: rules on that namespace's loopback touch no other test and no
//! other process of the machine, and they vanish with the namespace. Each test runs on a thread of
//! its own (libtest), so tests never share a network.
//!
//! Faults are `iptables` rules on the namespace's `OUTPUT` chain (every packet between two loopback
//! addresses passes it once): a cut drops every packet from one address to another (one way), a
//! loss drops a random share of them (`-m statistic`). This kernel has no `netem` qdisc
//! (`CONFIG_NET_SCH_NETEM` is not set), so delays are not injected here.

use std::process::Command;

/// Moves this thread into a new network namespace with its loopback up. Needs root (CI runs as root).
pub fn enter() {
    if let Err(error) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
        panic!("unshare(CLONE_NEWNET) failed ({error}): the partition tests need root to make a network of their own");
    }
    run("ip", &["link", "set", "lo", "up"]);
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e} (.ci/run installs iptables and iproute2)"));
    assert!(out.status.success(), "{program} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// One way between two endpoints of the namespace: packets from `from` to `to`.
#[derive(Debug, Clone)]
pub struct Path {
    pub from: Endpoint,
    pub to: Endpoint,
}

/// An address, optionally narrowed to one TCP port on that side.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub ip: String,
    pub tcp_port: Option<u16>,
}

impl Endpoint {
    pub fn ip(ip: &str) -> Endpoint {
        Endpoint { ip: ip.to_owned(), tcp_port: None }
    }

    pub fn tcp(ip: &str, port: u16) -> Endpoint {
        Endpoint { ip: ip.to_owned(), tcp_port: Some(port) }
    }
}

impl Path {
    pub fn new(from: Endpoint, to: Endpoint) -> Path {
        Path { from, to }
    }

    /// Both ways between `a` and `b`.
    pub fn both(a: Endpoint, b: Endpoint) -> [Path; 2] {
        [Path::new(a.clone(), b.clone()), Path::new(b, a)]
    }

    fn matcher(&self) -> Vec<String> {
        let mut m = vec!["-s".to_owned(), self.from.ip.clone(), "-d".to_owned(), self.to.ip.clone()];
        if self.from.tcp_port.is_some() || self.to.tcp_port.is_some() {
            m.extend(["-p".to_owned(), "tcp".to_owned()]);
        }
        if let Some(port) = self.from.tcp_port {
            m.extend(["--sport".to_owned(), port.to_string()]);
        }
        if let Some(port) = self.to.tcp_port {
            m.extend(["--dport".to_owned(), port.to_string()]);
        }
        m
    }
}

/// Rules in force; [`Faults::heal`] removes them all (so does the end of the namespace).
#[derive(Default)]
pub struct Faults {
    rules: Vec<Vec<String>>,
}

impl Faults {
    /// Drops every packet on `paths`.
    pub fn cut(&mut self, paths: &[Path]) {
        for path in paths {
            let mut rule = path.matcher();
            rule.extend(["-j".to_owned(), "DROP".to_owned()]);
            self.add(rule);
        }
    }

    /// Drops a random `percent` of the packets on `paths`.
    pub fn lose(&mut self, paths: &[Path], percent: u32) {
        for path in paths {
            let mut rule = path.matcher();
            let probability = format!("{:.2}", f64::from(percent) / 100.0);
            for arg in ["-m", "statistic", "--mode", "random", "--probability", &probability, "-j", "DROP"] {
                rule.push(arg.to_owned());
            }
            self.add(rule);
        }
    }

    fn add(&mut self, rule: Vec<String>) {
        let mut args = vec!["-w", "5", "-A", "OUTPUT"];
        args.extend(rule.iter().map(String::as_str));
        run("iptables", &args);
        self.rules.push(rule);
    }

    /// Removes every rule this added.
    pub fn heal(&mut self) {
        for rule in self.rules.drain(..) {
            let mut args = vec!["-w", "5", "-D", "OUTPUT"];
            args.extend(rule.iter().map(String::as_str));
            run("iptables", &args);
        }
    }
}
