//! How readiness is reported: the human line, the JSON line, and the
//! environment of `--then` CMD.
//!
//! Addresses are keyed by name. An unnamed address (the pipe protocol's,
//! or `readyfd notify --addr 127.0.0.1:80`) and a name used twice are keyed
//! by the address's position among all addresses, from `0`.

use std::collections::HashSet;

use readyfd::{Protocol, Readiness, Ready};
use serde::Serialize;
use serde::ser::SerializeMap;

use crate::term::{human, quoted};

/// One address with its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The name, or the position for an unnamed or repeated name.
    pub(crate) key: String,
    /// The address as a client would use it (`127.0.0.1:8080`, a path, text).
    pub(crate) address: String,
}

/// The addresses of a readiness, keyed as the module docs say, in the
/// child's order.
pub(crate) fn entries(ready: &Ready) -> Vec<Entry> {
    let mut used = HashSet::new();
    ready
        .addresses
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let key = if !e.name.is_empty() && !used.contains(&e.name) {
                e.name.clone()
            } else {
                i.to_string()
            };
            used.insert(key.clone());
            Entry {
                key,
                address: e.address.to_string(),
            }
        })
        .collect()
}

/// The environment variable for an address key: `READYFD_ADDR_` and the
/// key upper-cased, with every character other than an ASCII letter or
/// digit replaced by `_` (`http-alt` -> `READYFD_ADDR_HTTP_ALT`).
pub(crate) fn env_name(key: &str) -> String {
    let mut name = String::from("READYFD_ADDR_");
    name.extend(key.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        }
    }));
    name
}

/// The variables `--then` CMD gets: `READYFD_PID` (the pid readyfd
/// started, also its process group), `READYFD_MAIN_PID` (the pid the
/// program reported), `READYFD_ADDR` (the first address) and
/// `READYFD_ADDR_<NAME>` for each address (the first one wins when two
/// names map to the same variable).
pub(crate) fn then_env(r: &Readiness) -> Vec<(String, String)> {
    let mut env = vec![
        ("READYFD_PID".to_string(), r.spawned_pid.to_string()),
        ("READYFD_MAIN_PID".to_string(), r.ready.pid.to_string()),
    ];
    let entries = entries(&r.ready);
    if let Some(first) = entries.first() {
        env.push(("READYFD_ADDR".to_string(), first.address.clone()));
    }
    let mut seen = HashSet::new();
    for e in entries {
        let name = env_name(&e.key);
        if seen.insert(name.clone()) {
            env.push((name, e.address));
        }
    }
    env
}

/// The version of the `--json` lines' format, their first field
/// (`"format":1`). It changes only when a field is removed or changes
/// meaning; fields may be added within a version (the README's promise).
pub(crate) const JSON_FORMAT: u32 = 1;

/// The `--json` line's object.
#[derive(Debug, Serialize)]
struct JsonReady<'a> {
    format: u32,
    pid: u32,
    main_pid: u32,
    protocol: &'static str,
    addresses: Addresses<'a>,
    address: Option<&'a str>,
    status: Option<&'a str>,
    ready_ms: f64,
    /// The `--listen` sockets (only with `--listen`: a field added within
    /// format 1).
    #[serde(skip_serializing_if = "Pairs::is_empty")]
    listening: Pairs<'a>,
}

/// The `--json` line printed at once with `--listen`, before readiness.
#[derive(Debug, Serialize)]
struct JsonListening<'a> {
    format: u32,
    pid: u32,
    listening: Pairs<'a>,
}

/// `(key, address)` pairs as a JSON object, in order.
#[derive(Debug)]
struct Pairs<'a>(&'a [(String, String)]);

impl Pairs<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Pairs<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// `{"format":1,"pid":4121,"listening":{"http":"127.0.0.1:41234"}}`: the
/// `--listen` sockets, keyed as addresses are, printed with `--json` as
/// soon as PROGRAM is started.
pub(crate) fn listening_json_line(pid: u32, entries: &[(String, String)]) -> String {
    let line = JsonListening {
        format: JSON_FORMAT,
        pid,
        listening: Pairs(entries),
    };
    serde_json::to_string(&line).unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string()))
}

/// `my-server (pid 4121) is starting, listening on http=127.0.0.1:41234 ctl=/tmp/ctl.sock`.
pub(crate) fn listening_human_line(entries: &[(String, String)], pid: u32, name: &str) -> String {
    let list: Vec<String> = entries.iter().map(|(k, a)| format!("{k}={a}")).collect();
    format!(
        "{name} (pid {pid}) is starting, listening on {}",
        list.join(" ")
    )
}

/// The variables of `--then` CMD for the `--listen` sockets: `READYFD_PID`
/// first, then `READYFD_LISTEN` (the first socket's address) and
/// `READYFD_LISTEN_<NAME>` for each (NAME as for `READYFD_ADDR_<NAME>`).
pub(crate) fn listening_env(pid: u32, entries: &[(String, String)]) -> Vec<(String, String)> {
    let mut env = vec![("READYFD_PID".to_string(), pid.to_string())];
    if let Some((_, first)) = entries.first() {
        env.push(("READYFD_LISTEN".to_string(), first.clone()));
    }
    let mut seen = HashSet::new();
    for (key, address) in entries {
        let name = env_name(key).replacen("READYFD_ADDR_", "READYFD_LISTEN_", 1);
        if seen.insert(name.clone()) {
            env.push((name, address.clone()));
        }
    }
    env
}

/// The addresses as a JSON object in the child's order.
#[derive(Debug)]
struct Addresses<'a>(&'a [Entry]);

impl Serialize for Addresses<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for e in self.0 {
            map.serialize_entry(&e.key, &e.address)?;
        }
        map.end()
    }
}

/// One JSON object, one line: `{"format":1,"pid":..,"main_pid":..,"protocol":"native",
/// "addresses":{"http":"127.0.0.1:8080"},"address":"127.0.0.1:8080",
/// "status":"serving","ready_ms":12.5}`. `address` is the first address
/// (`null` without any), `status` the last status text (`null` without one),
/// `ready_ms` the time from start to readiness in milliseconds; with
/// `--listen`, `listening` maps the sockets' keys to their addresses.
pub(crate) fn json_line(
    r: &Readiness,
    protocol: Protocol,
    listening: &[(String, String)],
) -> String {
    let entries = entries(&r.ready);
    let line = JsonReady {
        format: JSON_FORMAT,
        pid: r.spawned_pid,
        main_pid: r.ready.pid,
        protocol: protocol.name(),
        addresses: Addresses(&entries),
        address: entries.first().map(|e| e.address.as_str()),
        status: r.ready.status.as_deref(),
        ready_ms: (r.elapsed.as_secs_f64() * 1e6).round() / 1e3,
        listening: Pairs(listening),
    };
    serde_json::to_string(&line).unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string()))
}

/// `my-server (pid 4121) is ready after 12.5ms (native): http=127.0.0.1:8080, status "serving"`.
pub(crate) fn human_line(r: &Readiness, name: &str, protocol: Protocol) -> String {
    let mut line = format!(
        "{name} (pid {}) is ready after {} ({protocol})",
        r.spawned_pid,
        human(r.elapsed)
    );
    if let Some(main) = r.pid_mismatch() {
        line.push_str(&format!(", main pid {main}"));
    }
    let entries = entries(&r.ready);
    if !entries.is_empty() {
        let list: Vec<String> = entries
            .iter()
            .map(|e| format!("{}={}", e.key, e.address))
            .collect();
        line.push_str(&format!(": {}", list.join(" ")));
    }
    if let Some(s) = &r.ready.status {
        line.push_str(&format!(", status {}", quoted(s)));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names() {
        assert_eq!(env_name("http"), "READYFD_ADDR_HTTP");
        assert_eq!(env_name("http-alt.v2"), "READYFD_ADDR_HTTP_ALT_V2");
        assert_eq!(env_name("0"), "READYFD_ADDR_0");
        assert_eq!(env_name("é"), "READYFD_ADDR__");
    }

    #[test]
    fn unnamed_and_repeated_names_are_keyed_by_position() {
        let ready = Ready::new(1)
            .address("http", "127.0.0.1:80".parse::<readyfd::Address>().unwrap())
            .address("", readyfd::Address::Text("x".into()))
            .address("http", readyfd::Address::Unix("/run/a".into()));
        let keys: Vec<_> = entries(&ready)
            .into_iter()
            .map(|e| (e.key, e.address))
            .collect();
        assert_eq!(
            keys,
            [
                ("http".to_string(), "127.0.0.1:80".to_string()),
                ("1".to_string(), "x".to_string()),
                ("2".to_string(), "/run/a".to_string()),
            ]
        );
    }
}
