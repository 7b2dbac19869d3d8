//! reachd as a child process (the release binary beside the bench's own, `target/release/reachd`):
//! started on a given database with extra environment, its address read from its
//! "reachd listening on" line, killed with SIGKILL on [`Child::kill`] or drop.
//!
//! May depend on: the bench's shared helpers (`super`), std::process.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::Stdio;

use super::*;

pub struct Child {
    process: std::process::Child,
    exe: PathBuf,
    env: Vec<(String, String)>,
    pub base: String,
}

impl Child {
    /// Starts `reachd serve` on `database` (a file or a URL) with `extra` environment; its
    /// logs go to `log`.
    pub fn start(database: &str, extra: &[(&str, String)], log: PathBuf) -> anyhow::Result<Child> {
        let exe = std::env::current_exe()?.with_file_name("reachd");
        let mut env = vec![
            ("REACHD_LISTEN".to_string(), "127.0.0.1:0".to_string()),
            ("REACHD_DATABASE".to_string(), database.to_string()),
            ("REACHD_ACCOUNT_SID".to_string(), ACCOUNT_SID.to_string()),
            ("REACHD_AUTH_TOKEN".to_string(), AUTH_TOKEN.to_string()),
            ("REACHD_LOG".to_string(), "warn".to_string()),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let mut process = std::process::Command::new(&exe)
            .envs(env.iter().cloned())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| {
                format!(
                    "start {} (build it first: cargo build --release --bins)",
                    exe.display()
                )
            })?;
        let stdout = process.stdout.take().context("stdout")?;
        let mut lines = std::io::BufReader::new(stdout).lines();
        let mut addr = None;
        for line in lines.by_ref() {
            if let Some(a) = line?.strip_prefix("reachd listening on ") {
                addr = Some(a.to_string());
                break;
            }
        }
        let Some(addr) = addr else {
            let _ = process.kill();
            let _ = process.wait();
            anyhow::bail!(
                "reachd exited before listening: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        // Keep reading stdout so that the child never blocks (or fails) writing to it.
        std::thread::spawn(move || lines.for_each(drop));
        Ok(Child {
            process,
            exe,
            env,
            base: format!("http://{addr}"),
        })
    }

    /// An API key made by `reachd keys create` against the child's database.
    pub fn api_key(&self) -> anyhow::Result<ApiKey> {
        let out = std::process::Command::new(&self.exe)
            .envs(self.env.iter().cloned())
            .args(["keys", "create"])
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "keys create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let key: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let field = |name: &str| key[name].as_str().unwrap_or_default().to_string();
        Ok(ApiKey {
            sid: field("sid"),
            friendly_name: None,
            secret: field("secret"),
            date_created: 0,
        })
    }

    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// `kill -9`, and reap it.
    pub fn kill(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill();
    }
}
