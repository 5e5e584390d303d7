//! Data through the real binary: B runs `shipworm listen`, A runs `shipworm connect TICKET`,
//! each with a file on stdin whose checksum is known ([`Pipe`], [`Lab::start_pipe`],
//! [`Lab::pipe_transfer`]); and the lines the nodes print ([`Lab::wait_line`], [`line`]).

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use super::{Lab, NODE_PORT};

/// Writes `len` bytes derived from `seed` to `path`; returns their blake3 hash.
pub fn make_file(path: &Path, len: usize, seed: u8) -> blake3::Hash {
    let mut out = vec![0u8; len];
    blake3::Hasher::new_derive_key("shipworm lab")
        .update(&[seed])
        .finalize_xof()
        .fill(&mut out);
    std::fs::write(path, &out).unwrap();
    blake3::hash(&out)
}

/// The first line of `log` that starts with `prefix`, or "".
pub fn line<'a>(log: &'a str, prefix: &str) -> &'a str {
    log.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_default()
}

/// The last `n` lines of `log`.
pub fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The blake3 hash of the file at `path` (of nothing, if there is no file).
fn hash_of(path: &Path) -> blake3::Hash {
    blake3::hash(&std::fs::read(path).unwrap_or_default())
}

/// A `listen` (B) / `connect` (A) pair: where each runs, what it sends.
#[derive(Debug, Clone)]
pub struct Pipe<'a> {
    /// Host namespaces of A and B.
    pub hosts: [&'a str; 2],
    /// The rendezvous address each registers at (A also reaches B's through the ticket).
    pub rendezvous: [&'a str; 2],
    /// The UDP address both bind.
    pub bind: String,
    /// Bytes A sends to B.
    pub to_b: usize,
    /// Bytes B sends to A.
    pub to_a: usize,
    /// Global flags of A's and of B's `shipworm` (e.g. `--no-relay`).
    pub flags: [Vec<String>; 2],
}

impl<'a> Pipe<'a> {
    /// `len` bytes from A to B and 1 MiB back, both nodes on `[::]:NODE_PORT`, no extra flags.
    pub fn new(hosts: [&'a str; 2], rendezvous: [&'a str; 2], len: usize) -> Self {
        Self {
            hosts,
            rendezvous,
            bind: format!("[::]:{NODE_PORT}"),
            to_b: len,
            to_a: 1 << 20,
            flags: [Vec::new(), Vec::new()],
        }
    }

    /// The same global `flags` on both nodes.
    pub fn flags(mut self, flags: &[&str]) -> Self {
        let f: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
        self.flags = [f.clone(), f];
        self
    }
}

/// A started [`Pipe`]: the two children and what each must receive.
#[derive(Debug)]
pub struct Started {
    /// Lab child of B's `listen`.
    pub listener: usize,
    /// Lab child of A's `connect`.
    pub connector: usize,
    /// When A's `connect` started.
    pub at: Instant,
    /// B's ticket.
    pub ticket: String,
    out_b: PathBuf,
    out_a: PathBuf,
    hash_to_b: blake3::Hash,
    hash_to_a: blake3::Hash,
}

impl Started {
    /// Whether B got exactly what A sent.
    pub fn b_intact(&self) -> bool {
        hash_of(&self.out_b) == self.hash_to_b
    }

    /// Whether A got exactly what B sent.
    pub fn a_intact(&self) -> bool {
        hash_of(&self.out_a) == self.hash_to_a
    }
}

impl Lab {
    /// `--identity DIR/KEY --rendezvous RDV --bind BIND FLAGS... REST...`: a CLI node's arguments.
    pub fn node_args(
        &self,
        key: &str,
        rendezvous: &str,
        bind: &str,
        flags: &[String],
        rest: &[&str],
    ) -> Vec<String> {
        let mut v: Vec<String> = vec![
            "--identity".into(),
            self.dir.join(key).to_string_lossy().into_owned(),
            "--rendezvous".into(),
            rendezvous.into(),
            "--bind".into(),
            bind.into(),
        ];
        v.extend(flags.iter().cloned());
        v.extend(rest.iter().map(|s| s.to_string()));
        v
    }

    /// Waits for a line of log `log` that starts with `prefix` and returns it; panics naming the
    /// line and showing the log if none comes within `within`.
    pub fn wait_line(&self, log: &str, prefix: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let text = self.log(log);
            if let Some(l) = text.lines().find(|l| l.starts_with(prefix)) {
                return l.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no `{prefix}` in {log} within {within:?}:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts B's `listen` (log "b"), waits for its ticket, and starts A's `connect` (log "a").
    pub fn start_pipe(&mut self, p: &Pipe) -> Started {
        let (to_b, to_a) = (self.dir.join("to_b.bin"), self.dir.join("to_a.bin"));
        let hash_to_b = make_file(&to_b, p.to_b, 1);
        let hash_to_a = make_file(&to_a, p.to_a, 2);
        let (out_b, out_a) = (self.dir.join("b.out"), self.dir.join("a.out"));
        let b_args = self.node_args("b.key", p.rendezvous[1], &p.bind, &p.flags[1], &["listen"]);
        let b_args: Vec<&str> = b_args.iter().map(String::as_str).collect();
        let listener = self.run_cli(p.hosts[1], "b", &b_args, Some(&to_a), Some(&out_b));
        let ticket = self.wait_line("b", "sw1", Duration::from_secs(15));
        let a_args = self.node_args(
            "a.key",
            p.rendezvous[0],
            &p.bind,
            &p.flags[0],
            &["connect", &ticket],
        );
        let a_args: Vec<&str> = a_args.iter().map(String::as_str).collect();
        let at = Instant::now();
        let connector = self.run_cli(p.hosts[0], "a", &a_args, Some(&to_b), Some(&out_a));
        Started {
            listener,
            connector,
            at,
            ticket,
            out_b,
            out_a,
            hash_to_b,
            hash_to_a,
        }
    }

    /// Runs `p` to its end: A must connect within 15 s; then `during` runs while the data flows;
    /// both must exit successfully and each side must get exactly what the other sent. Returns
    /// A's and B's logs.
    pub fn pipe_transfer(&mut self, p: &Pipe, during: impl FnOnce(&mut Lab)) -> (String, String) {
        let s = self.start_pipe(p);
        let deadline = Instant::now() + Duration::from_secs(15);
        while !self.log("a").lines().any(|l| l.starts_with("connected: ")) {
            if Instant::now() >= deadline || self.wait_child(s.connector, Duration::ZERO).is_some()
            {
                let la = self.log("a");
                let said = la.lines().rfind(|l| l.starts_with("shipworm: "));
                panic!(
                    "A never connected ({}):\nA:\n{la}\nB:\n{}",
                    said.unwrap_or("no error within 15 s"),
                    self.log("b")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        during(self);
        let a = self.wait_child(s.connector, Duration::from_secs(180));
        let b = self.wait_child(s.listener, Duration::from_secs(30));
        let (la, lb) = (self.log("a"), self.log("b"));
        assert!(
            a.is_some_and(|s| s.success()) && b.is_some_and(|s| s.success()),
            "exit {a:?} / {b:?}\nA:\n{la}\nB:\n{lb}"
        );
        assert!(s.b_intact(), "A -> B data differs\nA:\n{la}\nB:\n{lb}");
        assert!(s.a_intact(), "B -> A data differs\nA:\n{la}\nB:\n{lb}");
        (la, lb)
    }

    /// Runs `p`, expecting no connection: A's exit status (`None` if still running after
    /// `within`), how long it ran, and its log.
    pub fn connect_attempt(
        &mut self,
        p: &Pipe,
        within: Duration,
    ) -> (Option<ExitStatus>, Duration, String) {
        let s = self.start_pipe(p);
        let status = self.wait_child(s.connector, within);
        (status, s.at.elapsed(), self.log("a"))
    }
}
