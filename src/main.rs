//! The `reachd` binary: parses the command line, loads configuration (exit code 2 when it is
//! invalid) and runs the chosen command.
//!
//! May depend on: everything in the crate.

#![forbid(unsafe_code)]

use std::net::TcpListener;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use reachd::app::{self, AdminOpening, FirstRun};
use reachd::cli::{Cli, Command, KeysCommand};
use reachd::config::Config;
use reachd::console::Console;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Init { file }) = &cli.command {
        // A PostgreSQL database named by the environment (or a --config file) goes into the
        // new file; a SQLite path keeps the default.
        let postgres_url = Config::load(cli.config.as_deref())
            .ok()
            .map(|c| c.database.to_string_lossy().into_owned())
            .filter(|d| reachd::config::is_postgres_url(d));
        return match run_init(file, postgres_url.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("reachd: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("reachd: {e}");
            return ExitCode::from(2);
        }
    };
    let console = Console::new(config.log_format);
    let command = cli.command.unwrap_or(Command::Serve);
    let serving = matches!(command, Command::Serve);
    let result = match command {
        Command::Serve => serve(config, console),
        Command::Keys(command) => run_keys(&config, command),
        Command::CheckConfig => config
            .to_redacted_toml()
            .map(|text| {
                println!("# configuration is valid");
                print!("{text}");
            })
            .map_err(anyhow::Error::from),
        Command::Migrate => {
            app::open_admin(&config, AdminOpening::CreateOrMigrate).and_then(|db| {
                println!(
                    "database {} is at schema version {}",
                    db.describe(),
                    db.schema_version()?
                );
                Ok(())
            })
        }
        Command::Init { .. } => Ok(()),
        Command::Backup { file } => run_backup(&config, &file),
        Command::CopyDatabase { to, from } => run_copy_database(&config, &to, from.as_deref()),
        Command::Token {
            service,
            identity,
            ttl,
            key,
            endpoint,
        } => run_token(
            &config,
            &service,
            &identity,
            ttl,
            key.as_deref(),
            endpoint.as_deref(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Configuration that contradicts the database is a configuration error.
        Err(e) if e.downcast_ref::<app::AccountMismatch>().is_some() => {
            console.error(&format!("reachd: {e:#}"));
            ExitCode::from(2)
        }
        Err(e) if serving => {
            console.error(&format!("reachd: {e:#}"));
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("reachd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Config, console: Console) -> anyhow::Result<()> {
    reachd::logging::init(&config);
    app::raise_open_file_limit(config.http.max_connections);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(config.listen_addr())
            .with_context(|| format!("binding {}", config.listen))?;
        let running = app::start(config.clone(), listener).await?;
        let signals = app::ShutdownSignals::listen()?;
        let base = format!("http://{}", running.addr);
        if let Some(first) = &running.first_run {
            print_first_run(console, first, &base, &config);
        }
        let addr = running.addr.to_string();
        console.info(&format!("reachd listening on {addr}"), &[("addr", &addr)]);
        tracing::info!(addr = %running.addr, database = %config.database_description(), "reachd listening");
        running.wait(signals).await
    })
}

/// Shown once, on stdout, when the first start generated credentials (one JSON line in JSON
/// mode).
fn print_first_run(console: Console, first: &FirstRun, base: &str, config: &Config) {
    let heading = format!(
        "reachd: first start — generated credentials (stored in {}; shown only now)",
        config.database_description()
    );
    if console.is_json() {
        console.info(
            &heading,
            &[
                ("account_sid", &first.account_sid),
                ("auth_token", &first.auth_token),
                ("api_key_sid", &first.api_key_sid),
                ("api_key_secret", &first.api_key_secret),
            ],
        );
        return;
    }
    println!("{heading}:");
    println!("  account_sid    {}", first.account_sid);
    println!("  auth_token     {}", first.auth_token);
    println!("  api_key_sid    {}", first.api_key_sid);
    println!("  api_key_secret {}", first.api_key_secret);
    println!("Point twilio-python at this server:");
    println!(
        "  client = twilio.rest.Client(\"{}\", \"{}\")",
        first.account_sid, first.auth_token
    );
    println!(
        "  client.chat.base_url = \"{base}/chat\"; client.conversations.base_url = \"{base}/conversations\""
    );
}

/// `reachd init FILE`: fresh credentials in a new, owner-only config file.
fn run_init(file: &std::path::Path, postgres_url: Option<&str>) -> anyhow::Result<()> {
    let sid = reachd::domain::ids::new_sid(reachd::domain::ids::Prefix::Account);
    let token = reachd::domain::ids::random_hex(16);
    let text = reachd::config::init_file_text(&sid, &token, postgres_url);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut out = options.open(file).with_context(|| {
        format!(
            "creating {} (an existing file is never overwritten)",
            file.display()
        )
    })?;
    std::io::Write::write_all(&mut out, text.as_bytes())
        .with_context(|| format!("writing {}", file.display()))?;
    let written =
        Config::load_from(Some(file), std::iter::empty()).context("checking the written file")?;
    println!("wrote {} (mode 600) with a fresh account:", file.display());
    println!("  account_sid {sid}");
    println!("  it holds the auth token: keep it out of version control (reachd.toml is in");
    println!("  the project's .gitignore) and readable only by the server's user");
    warn_if_database_has_an_account(&written, &sid);
    println!("next:");
    println!("  reachd --config {} serve", file.display());
    println!(
        "  reachd --config {} keys create   # an API key for access tokens",
        file.display()
    );
    Ok(())
}

/// `init` writes a new account; a database already at the configured path belongs to another
/// one, and `serve` would refuse the pair: say so now, with the ways out.
fn warn_if_database_has_an_account(config: &Config, new_sid: &str) {
    if matches!(config.database_location(), reachd::config::DatabaseLocation::Sqlite(ref path) if !path.exists())
    {
        return;
    }
    if let Some(stored_sid) = app::stored_account_sid(config)
        && stored_sid != new_sid
    {
        println!(
            "note: {} already exists and belongs to account {stored_sid}; serving it with this \
             file's account {new_sid} is refused. Set `database` in the file to a new path to \
             start afresh, or keep using the existing account (drop account_sid and auth_token \
             from the file).",
            config.database_description()
        );
    }
}

/// `reachd backup FILE`: an online copy of the configured database.
fn run_backup(config: &Config, file: &std::path::Path) -> anyhow::Result<()> {
    let db = app::open_admin(config, AdminOpening::Existing)?;
    let report = db.backup(file)?;
    println!(
        "backed up {} to {}: {} bytes, schema version {}, {} users, {} events",
        db.describe(),
        file.display(),
        report.bytes,
        report.schema_version,
        report.users,
        report.events
    );
    Ok(())
}

/// `reachd copy-database --to URL [--from FILE]`: the SQLite database into an empty
/// PostgreSQL one.
fn run_copy_database(
    config: &Config,
    to: &str,
    from: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    use reachd::config::{DatabaseLocation, redact_url};
    let from = match (from, config.database_location()) {
        (Some(file), _) if reachd::config::is_postgres_url(&file.to_string_lossy()) => {
            anyhow::bail!("--from takes a SQLite file, not a URL")
        }
        (Some(file), _) => file.to_path_buf(),
        (None, DatabaseLocation::Sqlite(path)) => path,
        (None, DatabaseLocation::Postgres(url)) => anyhow::bail!(
            "the configured database is already PostgreSQL ({}); give the SQLite file to copy \
             with --from FILE",
            redact_url(&url)
        ),
    };
    let timeout = std::time::Duration::from_millis(config.storage.busy_timeout_ms.max(1_000));
    let report = reachd::storage::copy::sqlite_to_postgres(&from, to, timeout)?;
    let target = redact_url(to);
    println!(
        "copied {} (SQLite, schema version {}) to {target} (PostgreSQL, schema version {}) in \
         one transaction:",
        from.display(),
        report.source_version,
        report.target_version
    );
    println!("  {:<20} {:>10}", "table", "rows");
    for (table, rows) in &report.tables {
        println!("  {table:<20} {rows:>10}");
    }
    println!(
        "  event feed position {:>11} (the next event id is {})",
        report.feed_position,
        report.feed_position + 1
    );
    println!(
        "not copied: {} ({} rows), live presence state: clients reconnect to the new server, \
         and users stored online are reported offline at its first start until they do",
        reachd::storage::copy::SESSIONS,
        report.sessions_left
    );
    println!(
        "next: start reachd with database = {target} (REACHD_DATABASE); {} stays as it was",
        from.display()
    );
    Ok(())
}

fn run_token(
    config: &Config,
    service: &str,
    identity: &str,
    ttl: i64,
    key: Option<&str>,
    endpoint: Option<&str>,
) -> anyhow::Result<()> {
    let db = app::open_admin(config, AdminOpening::Existing)?;
    let account_sid = match &config.account_sid {
        Some(sid) => sid.clone(),
        None => db
            .account_sid()?
            .context("no account yet: start the server once or set REACHD_ACCOUNT_SID")?,
    };
    let key = match key {
        Some(sid) => db
            .live_api_key(sid)?
            .with_context(|| format!("no live API key {sid}"))?,
        None => db
            .first_live_api_key()?
            .context("no live API key: run `reachd keys create`")?,
    };
    let now = chrono::Utc::now().timestamp();
    let token = reachd::tokens::mint(
        &account_sid,
        &key.sid,
        &key.secret,
        service,
        identity,
        ttl,
        endpoint,
        now,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("{token}");
    Ok(())
}

fn run_keys(config: &Config, command: KeysCommand) -> anyhow::Result<()> {
    let db = app::open_admin(config, AdminOpening::Existing)?;
    match command {
        KeysCommand::Create { friendly_name } => {
            let key = db.create_api_key(friendly_name.as_deref())?;
            println!(
                "{}",
                serde_json::json!({"sid": key.sid, "secret": key.secret})
            );
        }
        KeysCommand::List => {
            for (key, revoked) in db.list_api_keys()? {
                let line = serde_json::json!({
                    "sid": key.sid,
                    "friendly_name": key.friendly_name,
                    "date_created": reachd::domain::time::rfc3339_ms(key.date_created),
                    "revoked": revoked,
                });
                println!("{line}");
            }
        }
        KeysCommand::Revoke { sid } => {
            if !db.revoke_api_key(&sid)? {
                anyhow::bail!("no live API key {sid}");
            }
            // Running servers trust a live key for at most API_KEY_TTL: once this returns, the
            // key is refused everywhere.
            std::thread::sleep(
                reachd::storage::cache::API_KEY_TTL + std::time::Duration::from_millis(100),
            );
            println!("revoked {sid}");
        }
    }
    Ok(())
}
