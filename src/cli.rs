//! The command line (clap): `serve` (the default), `init`, `migrate`, `check-config`, `backup`,
//! `copy-database`, `keys create|list|revoke`, `token`.
//!
//! May depend on: clap, config, db, app.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "reachd",
    version,
    about = "Self-hosted reachability server, wire-compatible with Twilio's Reachability Indicator"
)]
pub struct Cli {
    /// Configuration file (TOML); REACHD_* environment variables override it.
    #[arg(long, short = 'c', global = true, env = "REACHD_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Manage API keys (works against the database of a running server).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Validate the configuration (file and environment) and print it, secrets redacted.
    CheckConfig,
    /// Create or upgrade the database schema and print its version.
    Migrate,
    /// Write a commented configuration file with fresh account credentials.
    Init {
        /// Where to write it (refuses to overwrite an existing file).
        #[arg(default_value = "reachd.toml")]
        file: PathBuf,
    },
    /// Copy the database to FILE (a consistent snapshot, safe while the server runs).
    Backup {
        /// The new file (must not exist).
        file: PathBuf,
    },
    /// Copy a SQLite database into an empty PostgreSQL database (stop the server first).
    ///
    /// Copies every durable table value for value (account, API keys, services, users,
    /// bindings, credentials, events, webhook endpoints, deliveries and their attempts) and the
    /// id counters, in one transaction. Live sessions are not copied: clients reconnect.
    #[command(name = "copy-database")]
    CopyDatabase {
        /// The PostgreSQL database to fill (postgres://user:password@host:port/db); it must
        /// hold no reachd data. REACHD_COPY_TO keeps the password off the command line.
        #[arg(
            long,
            value_name = "URL",
            env = "REACHD_COPY_TO",
            hide_env_values = true
        )]
        to: String,
        /// The SQLite file to copy [default: the configured `database`].
        #[arg(long, value_name = "FILE")]
        from: Option<PathBuf>,
    },
    /// Mint a client access token (Twilio format) signed with an API key from the database.
    Token {
        /// The chat service (IS…) the token grants.
        #[arg(long)]
        service: String,
        /// The user identity.
        #[arg(long)]
        identity: String,
        /// Lifetime in seconds (at most 86400).
        #[arg(long, default_value_t = 3600)]
        ttl: i64,
        /// The API key (SK…) to sign with; default: the oldest live key.
        #[arg(long)]
        key: Option<String>,
        /// Optional endpoint_id for the chat grant.
        #[arg(long)]
        endpoint: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print {"sid", "secret"}; the secret is shown only here.
    Create {
        #[arg(long)]
        friendly_name: Option<String>,
    },
    /// List keys (without secrets).
    List,
    /// Revoke a key: Basic auth and access tokens signed with it stop working at once.
    Revoke { sid: String },
}
