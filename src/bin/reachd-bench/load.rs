//! Load generation for the HTTP scenarios: the same [`Target`] is driven either by `wrk` (an
//! independent load generator in its own process, with a Lua script per scenario from
//! `bench/`) or by the bench's own reqwest client. `--client auto` uses wrk when it is
//! installed.
//!
//! May depend on: the bench's shared helpers (`super`), tokio, reqwest, std::process (wrk).

use std::path::PathBuf;
use std::process::Command;

use super::*;

/// Which load generator drives HTTP scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Client {
    /// wrk when installed, else the bench's own client.
    Auto,
    /// wrk (Debian package `wrk`), one Lua script per scenario from `bench/`.
    Wrk,
    /// The bench's own reqwest client (shares the process, and the CPU, with reachd).
    Builtin,
}

/// Credentials a request carries.
#[derive(Debug, Clone)]
pub enum Auth {
    None,
    Basic(String, String),
    Bearer(String),
}

impl Auth {
    fn header(&self) -> Option<String> {
        use base64::Engine;
        match self {
            Auth::None => None,
            Auth::Basic(user, password) => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            )),
            Auth::Bearer(token) => Some(format!("Bearer {token}")),
        }
    }
}

/// One request of a target's rotation.
#[derive(Debug, Clone)]
pub struct Request {
    pub post: bool,
    pub path: String,
    pub auth: Auth,
}

/// What a measurement drives: requests to `base`, rotated over in order, and the wrk script
/// that sends them (`bench/<script>.lua`).
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub base: String,
    pub script: &'static str,
    pub requests: Arc<Vec<Request>>,
}

impl Target {
    /// An unauthenticated GET of one path.
    pub fn get(name: &str, base: &str, path: &str) -> Target {
        Target {
            name: name.into(),
            base: base.into(),
            script: "get",
            requests: Arc::new(vec![Request {
                post: false,
                path: path.into(),
                auth: Auth::None,
            }]),
        }
    }
}

/// The folder holding the wrk scripts.
pub fn scripts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench")
}

fn wrk_installed() -> bool {
    Command::new("wrk")
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("wrk"))
}

/// Clock ticks a second in `/proc` times (USER_HZ on Linux).
pub const TICKS_PER_SECOND: u64 = 100;

/// CPU time (user + system, clock ticks) in a `/proc/…/stat` line (a process's or a thread's).
pub fn stat_ticks(stat: &str) -> Option<u64> {
    // Fields after the command (which may hold spaces): state is field 3, utime 14.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// CPU time (user + system, clock ticks) of this process's tokio runtime threads, where the
/// builtin client runs (Linux; 0 elsewhere). The server's HTTP workers are actix threads of
/// their own and do not count.
fn runtime_ticks() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|name| name.starts_with("tokio-r"))
        })
        .filter_map(|task| std::fs::read_to_string(task.path().join("stat")).ok())
        .filter_map(|stat| stat_ticks(&stat))
        .sum()
}

/// Resolves `auto` to the generator that will be used.
pub fn resolve(client: Client) -> anyhow::Result<Client> {
    Ok(match client {
        Client::Auto if wrk_installed() => Client::Wrk,
        Client::Auto => {
            eprintln!(
                "reachd-bench: wrk is not installed (Debian package: wrk), so HTTP load comes \
                 from the bench's own client, which shares this process and its cores with the \
                 server: HTTP ratios flatter the server and are not comparable with wrk's \
                 (each measurement reports the client's CPU)"
            );
            Client::Builtin
        }
        Client::Wrk => {
            anyhow::ensure!(
                wrk_installed(),
                "wrk is not installed (Debian package: wrk)"
            );
            Client::Wrk
        }
        Client::Builtin => Client::Builtin,
    })
}

/// Runs `target` for `args.seconds` with `args.connections` connections.
pub async fn run(args: &Args, client: Client, target: &Target, scratch: &Path) -> Stats {
    let duration = Duration::from_secs_f64(args.seconds);
    match client {
        Client::Wrk => match run_wrk(args, target, scratch).await {
            Ok(stats) => stats,
            Err(e) => {
                eprintln!("wrk failed on {}: {e:#}", target.name);
                Stats::default()
            }
        },
        _ => {
            let request = builtin_request(target, args.connections);
            let (ticks, started) = (runtime_ticks(), std::time::Instant::now());
            let stats = load(args.connections, duration, request).await;
            let cores = runtime_ticks().saturating_sub(ticks) as f64
                / TICKS_PER_SECOND as f64
                / started.elapsed().as_secs_f64();
            let available = std::thread::available_parallelism().map_or(1, |n| n.get());
            eprintln!(
                "  (builtin client on {}: its runtime's threads used {cores:.2} of {available} \
                 cores, reachd's background tasks included)",
                target.name
            );
            stats
        }
    }
}

fn builtin_request(target: &Target, connections: usize) -> RequestFn {
    let urls: Vec<(bool, String, Option<String>)> = target
        .requests
        .iter()
        .map(|r| {
            (
                r.post,
                format!("{}{}", target.base, r.path),
                r.auth.header(),
            )
        })
        .collect();
    let urls = Arc::new(urls);
    Arc::new(move |c: &reqwest::Client, worker, i| {
        let (post, url, auth) = &urls[(worker + connections * i as usize) % urls.len()];
        let request = if *post { c.post(url) } else { c.get(url) };
        match auth {
            Some(value) => request.header("authorization", value),
            None => request,
        }
    })
}

/// The requests file a script rotates over: one request per line, `METHOD PATH AUTHORIZATION`
/// (the last field may be absent).
fn write_requests(target: &Target, scratch: &Path) -> anyhow::Result<PathBuf> {
    use std::io::Write;
    let path = scratch.join(format!("requests-{}.txt", target.script));
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
    for r in target.requests.iter() {
        let method = if r.post { "POST" } else { "GET" };
        match r.auth.header() {
            Some(auth) => writeln!(file, "{method} {} {auth}", r.path)?,
            None => writeln!(file, "{method} {}", r.path)?,
        }
    }
    file.flush()?;
    Ok(path)
}

async fn run_wrk(args: &Args, target: &Target, scratch: &Path) -> anyhow::Result<Stats> {
    let requests = write_requests(target, scratch)?;
    let script = scripts_dir().join(format!("{}.lua", target.script));
    let url = format!("{}{}", target.base, target.requests[0].path);
    let threads = args.wrk_threads.clamp(1, args.connections);
    let mut command = tokio::process::Command::new("wrk");
    command
        .current_dir(scripts_dir())
        .arg(format!("-t{threads}"))
        .arg(format!("-c{}", args.connections))
        .arg(format!("-d{}s", args.seconds.ceil().max(1.0) as u64))
        .args(["--timeout", "5s", "-s"])
        .arg(&script)
        .arg(&url)
        .arg("--")
        .arg(&requests)
        .arg(threads.to_string());
    let out = command.output().await.context("running wrk")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "wrk exited with {}: {}{}",
        out.status,
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    parse_wrk(&stdout).with_context(|| format!("no result line in wrk's output: {stdout}"))
}

/// Reads the `wrk-result key=value …` line the scripts' `done` prints.
fn parse_wrk(stdout: &str) -> Option<Stats> {
    let line = stdout.lines().find(|l| l.starts_with("wrk-result "))?;
    let field = |name: &str| -> Option<u64> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse::<f64>().ok())
            .map(|v| v as u64)
    };
    let requests = field("requests")?;
    let errors = field("errors")?;
    let duration_us = field("duration_us")?.max(1);
    let ok = requests.saturating_sub(field("status_errors")?);
    Some(Stats {
        requests: ok,
        errors,
        per_second: ok as f64 / (duration_us as f64 / 1e6),
        p50_us: field("p50_us")?,
        p99_us: field("p99_us")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_results_count_only_successes() {
        let stats = parse_wrk(
            "Running 5s test\nwrk-result requests=1000 errors=12 status_errors=10 duration_us=2000000 p50_us=100 p99_us=900\n",
        )
        .expect("parsed");
        assert_eq!(stats.requests, 990);
        assert_eq!(stats.errors, 12);
        assert_eq!(stats.per_second as u64, 495);
        assert_eq!((stats.p50_us, stats.p99_us), (100, 900));
        assert!(parse_wrk("no result").is_none());
    }
}
