//! Real `redis-server` processes for tests: one server, or a 3-node Redis Cluster, on
//! probed free loopback ports, each in its own temporary folder, killed on `Drop`.
//!
//! Job: the one helper every test of the Redis store starts its servers with: the
//! library's unit tests (`store::redis`), the integration tests (`tests/it`) and the
//! revocation bench. Test support, not gateway code: hidden from the docs, never called
//! by the gateway itself.
//!
//! Invariants: a test never shares a server and never uses a fixed port; a missing
//! `redis-server` or `redis-cli` fails the test with the command that installs it,
//! never a silent skip; tests always run against the real server, never a mock.
//!
//! Why in the library: a `#[cfg(test)]` module is invisible to the integration tests
//! and benches, which link the library as built for them, and including a test file
//! with `#[path]` made the library build from the tests' tree. Plain `std` (blocking,
//! short), so any test, async or not, can use it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a starting server may take to answer PING.
const START_WITHIN: Duration = Duration::from_secs(10);

/// One `redis-server` on 127.0.0.1; `stop` and `restart` keep the port.
pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    cluster: bool,
    child: Option<Child>,
}

impl RedisServer {
    /// A plain server (no persistence) on a free port.
    pub fn start() -> Self {
        Self::start_kind(false)
    }

    fn start_kind(cluster: bool) -> Self {
        require("redis-server");
        for _ in 0..20 {
            let port = free_port(cluster);
            let mut server = Self {
                port,
                dir: tempfile::tempdir().expect("temp dir"),
                cluster,
                child: None,
            };
            if server.spawn() {
                return server;
            }
        }
        panic!("could not start redis-server on a free port after 20 tries");
    }

    /// Starts the process on `self.port`; false if it exited (port taken) instead.
    fn spawn(&mut self) -> bool {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.cluster {
            cmd.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "1000",
            ]);
        }
        let mut child = cmd.spawn().expect("spawn redis-server");
        let deadline = Instant::now() + START_WITHIN;
        while Instant::now() < deadline {
            if ping(self.port) {
                self.child = Some(child);
                return true;
            }
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("redis-server on port {} did not answer PING", self.port);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL: an outage, not a clean shutdown); the data is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes (`true`: SIGSTOP) or thaws (SIGCONT) the server: a registry that hangs
    /// instead of refusing connections.
    pub fn freeze(&self, frozen: bool) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let sig = if frozen { "STOP" } else { "CONT" };
        let ok = std::process::Command::new("kill")
            .args(["-s", sig, &pid])
            .status()
            .expect("kill");
        assert!(ok.success());
    }

    /// Starts it again on the same port (empty).
    pub fn restart(&mut self) {
        self.stop();
        if self.cluster {
            let _ = std::fs::remove_file(self.dir.path().join("nodes.conf"));
        }
        assert!(self.spawn(), "port {} was taken meanwhile", self.port);
    }

    /// `redis-cli -p PORT ARGS…`.
    pub fn cli(&self, args: &[&str]) -> Output {
        require("redis-cli");
        Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("run redis-cli")
    }

    /// `redis-cli` output as text, failing the test on a non-zero exit.
    pub fn cli_text(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Three cluster-enabled servers joined by `redis-cli --cluster create`, no replicas.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> Self {
        require("redis-cli");
        let nodes: Vec<RedisServer> = (0..3).map(|_| RedisServer::start_kind(true)).collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        assert!(out.status.success(), "cluster create failed: {out:?}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = nodes.iter().all(|n| {
                n.cli_text(&["cluster", "info"])
                    .contains("cluster_state:ok")
            });
            if ok {
                return Self { nodes };
            }
            assert!(Instant::now() < deadline, "cluster_state never became ok");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Seed URLs of every node.
    pub fn seeds(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }
}

fn require(program: &str) {
    let found = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "`{program}` is not installed; the Redis tests need it: run `make deps` \
         (or `sudo apt-get install redis-server redis-tools`)"
    );
}

/// A loopback port nobody listens on now. For a cluster node, port + 10000 (its
/// cluster bus) must be free too, so those come from 20000..30000.
fn free_port(cluster: bool) -> u16 {
    if !cluster {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
        return l.local_addr().expect("local addr").port();
    }
    let seed = u16::try_from(std::process::id() % 10_000).unwrap_or(0);
    for i in 0..10_000u16 {
        let port = 20_000 + (seed.wrapping_add(i.wrapping_mul(7919)) % 10_000);
        let a = TcpListener::bind(("127.0.0.1", port));
        let b = TcpListener::bind(("127.0.0.1", port + 10_000));
        if a.is_ok() && b.is_ok() {
            return port;
        }
    }
    panic!("no free port pair for a cluster node");
}

/// Whether a server answers `PING` on `port` now.
fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}
