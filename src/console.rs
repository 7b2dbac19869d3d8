//! The lines `reachd serve` prints for its operator outside the tracing logger: the address it
//! listens on, the credentials of a first start, a fatal error. Plain text by default; with
//! `log_format = "json"` each is one JSON object per line shaped like the logger's
//! (`timestamp`, `level`, `message`, then fields), so whatever reads the process output meets
//! no line it cannot parse. The message keeps the plain text ("reachd listening on ADDR"), so
//! scripts matching it work in both formats.
//!
//! May depend on: serde_json, chrono, config.

use serde_json::{Map, Value};

use crate::config::LogFormat;

/// Where and how operator lines are written.
#[derive(Debug, Clone, Copy)]
pub struct Console {
    json: bool,
}

impl Console {
    pub fn new(format: LogFormat) -> Self {
        Console {
            json: format == LogFormat::Json,
        }
    }

    pub fn is_json(&self) -> bool {
        self.json
    }

    /// An informational line on stdout.
    pub fn info(&self, message: &str, fields: &[(&str, &str)]) {
        println!("{}", self.render("INFO", message, fields));
    }

    /// An error line on stderr.
    pub fn error(&self, message: &str) {
        eprintln!("{}", self.render("ERROR", message, &[]));
    }

    /// The line as printed: `message` alone, or the JSON object.
    pub fn render(&self, level: &str, message: &str, fields: &[(&str, &str)]) -> String {
        if !self.json {
            return message.to_string();
        }
        let mut line = Map::new();
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        line.insert("timestamp".into(), Value::String(now));
        line.insert("level".into(), Value::String(level.into()));
        line.insert("message".into(), Value::String(message.into()));
        for (key, value) in fields {
            line.insert((*key).into(), Value::String((*value).into()));
        }
        line.insert("target".into(), Value::String("reachd".into()));
        Value::Object(line).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_are_objects_with_the_plain_message() {
        let line = Console::new(LogFormat::Json).render(
            "INFO",
            "reachd listening on 127.0.0.1:1",
            &[("addr", "127.0.0.1:1")],
        );
        let value: Value = serde_json::from_str(&line).expect("json");
        assert_eq!(value["message"], "reachd listening on 127.0.0.1:1");
        assert_eq!(value["addr"], "127.0.0.1:1");
        assert_eq!(value["level"], "INFO");
        assert!(!line.contains('\n'));
        let plain = Console::new(LogFormat::Pretty).render("INFO", "hello \"x\"", &[]);
        assert_eq!(plain, "hello \"x\"");
    }
}
