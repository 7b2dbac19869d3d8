//! The real binary as a child process: start it, read its address, kill or stop it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_reachd");

/// `reachd` with a clean environment pointing at `dir`.
pub fn reachd(dir: &Path) -> Command {
    reachd_on(dir, super::test_database(&dir.join("data")).as_os_str())
}

/// `reachd` with a clean environment in `dir`, on the given `database` (a file or a URL)
/// whatever `REACHD_TEST_DATABASE` says.
pub fn reachd_on(dir: &Path, database: &std::ffi::OsStr) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir)
        .env_remove("REACHD_ACCOUNT_SID")
        .env_remove("REACHD_AUTH_TOKEN")
        .env_remove("REACHD_COPY_TO")
        .env("REACHD_DATABASE", database)
        .env("REACHD_LISTEN", "127.0.0.1:0")
        .env("REACHD_LOG", "warn");
    cmd
}

/// The address of a "reachd listening on ADDR" line, plain or JSON (`log_format = "json"`).
fn listening_addr(line: &str) -> Option<String> {
    if let Some(addr) = line.strip_prefix("reachd listening on ") {
        return Some(addr.to_string());
    }
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let message = value["message"].as_str()?;
    message.strip_prefix("reachd listening on ")?;
    value["addr"].as_str().map(str::to_string)
}

/// A running `reachd serve`, killed and reaped on drop (also when a test panics).
pub struct Server {
    pub child: Child,
    pub lines: Vec<String>,
    pub addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `cmd` and waits for its "reachd listening on" line.
    pub fn start(cmd: Command) -> Server {
        Self::start_logging(cmd, Stdio::null())
    }

    /// Like [`Server::start`], with the server's logs (stderr) going to `logs`.
    pub fn start_logging(mut cmd: Command, logs: impl Into<Stdio>) -> Server {
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(logs)
            .spawn()
            .expect("spawn");
        let mut server = Server {
            child,
            lines: Vec::new(),
            addr: String::new(),
        };
        let stdout = server.child.stdout.take().expect("stdout");
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut reader = BufReader::new(stdout);
        loop {
            assert!(
                Instant::now() < deadline,
                "server did not start: {:?}",
                server.lines
            );
            let mut line = String::new();
            if reader.read_line(&mut line).expect("read") == 0 {
                panic!("server exited: {:?}", server.lines);
            }
            let line = line.trim_end().to_string();
            if let Some(addr) = listening_addr(&line) {
                server.addr = addr;
                server.lines.push(line);
                return server;
            }
            server.lines.push(line);
        }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `kill -9`.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(mut self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "graceful shutdown failed: {status}");
                return;
            }
            assert!(Instant::now() < deadline, "no exit 15 s after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Asserts a command succeeded (showing its stderr if not) and returns its stdout.
pub fn succeeded(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value printed after `key` on one of `lines` (first-start credentials).
pub fn value_of(lines: &[String], key: &str) -> String {
    lines
        .iter()
        .find_map(|l| l.trim().strip_prefix(key).map(|v| v.trim().to_string()))
        .unwrap_or_else(|| panic!("{key} not printed: {lines:?}"))
}
