//! The application layer: one operation per use case, each owning every step it takes across
//! the storage port, the presence engine and the realtime hub, so that no caller (an HTTP
//! handler, a WebSocket message, a future CLI command) can perform half of a use case.
//!
//! Handlers parse input, call one operation of [`Reachability`] and render its result. Plain
//! reads and single-step writes stay on the storage port; any write that must be followed by
//! a presence or hub step lives here (the test `handlers_never_take_a_step_of_a_use_case`
//! below keeps `src/api` from calling those steps itself).
//!
//! May depend on: domain (model, rules, the `Store` port), presence, realtime. Never on a web
//! framework (actix) or a database driver (rusqlite).

mod bindings;
mod services;
mod sessions;
mod users;

use std::sync::Arc;
use std::time::Duration;

use crate::domain::store::Store;
use crate::presence::Presence;
use crate::realtime::Hub;

pub use sessions::SocketConnection;

/// How long an HTTP session open or close waits for its change to be committed.
pub const COMMIT_WAIT: Duration = Duration::from_secs(10);

/// The use cases of reachd; cheap to clone.
#[derive(Clone)]
pub struct Reachability {
    store: Arc<dyn Store>,
    presence: Presence,
    hub: Hub,
}

impl Reachability {
    pub fn new(store: Arc<dyn Store>, presence: Presence, hub: Hub) -> Self {
        Reachability {
            store,
            presence,
            hub,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// The steps use cases are made of: a handler calling one of them directly could forget
    /// the others (a service update without reconfiguring presence, a user deletion that
    /// leaves their sessions live, a socket that never leaves the hub).
    const STEPS: &[&str] = &[
        "store().update_service(",
        "store.update_service(",
        "store().set_presence_settings(",
        "store.set_presence_settings(",
        "store().delete_service(",
        "store.delete_service(",
        "store().delete_user(",
        "store.delete_user(",
        "store().register_binding(",
        "store.register_binding(",
        "store().ensure_user(",
        "store.ensure_user(",
        "presence.configure(",
        "presence.forget_user(",
        "presence.forget_service(",
        "presence.open(",
        "presence.close(",
        "presence.release(",
        "hub.register(",
        "hub.unregister(",
        "hub.note_service(",
    ];

    fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        let entries = std::fs::read_dir(dir).expect("src/api is readable");
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    #[test]
    fn handlers_never_take_a_step_of_a_use_case() {
        let api = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api");
        let mut files = Vec::new();
        rust_files(&api, &mut files);
        assert!(files.len() > 10, "found the handlers");
        let mut found = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(&file).expect("a readable source file");
            // Method chains are split over lines: compare without any whitespace.
            let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
            for step in STEPS {
                if compact.contains(step) {
                    found.push(format!("{}: {step}", file.display()));
                }
            }
        }
        assert!(
            found.is_empty(),
            "call the use case in src/usecases instead: {found:#?}"
        );
    }
}
