//! `warren ctl`: everyday operations through the management API (list
//! objects, declare and delete, users, permissions, policies, definitions
//! export and import, publish and get), for a shell or a script. Tables are
//! tab-separated with a header line; errors print the API's reason and
//! exit with 1 (usage errors with 2).

pub mod http;

use serde_json::{json, Value};

use http::Endpoint;

/// Usage text.
pub const USAGE: &str = "\
Usage: warren ctl [--url URL] [--user USER] [--password PASSWORD] [--vhost VHOST] COMMAND

Talks to the management API (default http://127.0.0.1:15672, guest/guest,
vhost /; WARREN_API_URL, WARREN_USER, WARREN_PASSWORD also set them).

Commands:
  list queues|exchanges|bindings|connections|channels|consumers|users|vhosts|permissions|policies
  declare queue NAME [--durable]        declare exchange NAME TYPE [--durable]
  delete queue|exchange|user|vhost|policy NAME
  purge QUEUE
  bind EXCHANGE QUEUE [ROUTING_KEY]
  add-user NAME PASSWORD [TAGS]         (TAGS comma-separated, e.g. administrator)
  add-vhost NAME
  set-permissions USER CONFIGURE WRITE READ
  set-policy NAME PATTERN DEFINITION [--priority N] [--apply-to queues|exchanges|all]
  close-connection NAME
  publish EXCHANGE ROUTING_KEY PAYLOAD
  get QUEUE [COUNT]                     (messages stay in the queue)
  export [FILE]                         (definitions; stdout without FILE)
  import FILE
";

/// The columns `list` prints for each kind.
const COLUMNS: &[(&str, &[&str])] = &[
    (
        "queues",
        &[
            "name",
            "messages",
            "messages_ready",
            "messages_unacknowledged",
            "consumers",
            "durable",
            "policy",
        ],
    ),
    (
        "exchanges",
        &["name", "type", "durable", "auto_delete", "internal"],
    ),
    (
        "bindings",
        &["source", "destination", "destination_type", "routing_key"],
    ),
    (
        "connections",
        &["name", "user", "vhost", "channels", "state"],
    ),
    (
        "channels",
        &[
            "name",
            "user",
            "prefetch_count",
            "messages_unacknowledged",
            "consumer_count",
        ],
    ),
    (
        "consumers",
        &[
            "consumer_tag",
            "queue.name",
            "ack_required",
            "prefetch_count",
        ],
    ),
    ("users", &["name", "tags"]),
    ("vhosts", &["name", "messages"]),
    (
        "permissions",
        &["user", "vhost", "configure", "write", "read"],
    ),
    (
        "policies",
        &[
            "vhost",
            "name",
            "pattern",
            "apply-to",
            "priority",
            "definition",
        ],
    ),
];

/// The options every command shares.
struct Ctl {
    api: Endpoint,
    vhost: String,
}

/// Run `warren ctl` with `args` (after `ctl`); the process exit code.
pub fn main(args: Vec<String>) -> u8 {
    match run(args) {
        Ok(()) => 0,
        Err(CtlError::Usage(why)) => {
            eprintln!("warren ctl: {why}\n\n{USAGE}");
            2
        }
        Err(CtlError::Failed(why)) => {
            eprintln!("warren ctl: {why}");
            1
        }
    }
}

enum CtlError {
    Usage(String),
    Failed(String),
}

fn usage(why: impl Into<String>) -> CtlError {
    CtlError::Usage(why.into())
}

fn run(args: Vec<String>) -> Result<(), CtlError> {
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    let mut url = env("WARREN_API_URL", "http://127.0.0.1:15672");
    let mut user = env("WARREN_USER", "guest");
    let mut password = env("WARREN_PASSWORD", "guest");
    let mut vhost = "/".to_string();
    let mut rest = Vec::new();
    let mut flags: Vec<(String, String)> = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .ok_or_else(|| usage(format!("{name} needs a value")))
        };
        match a.as_str() {
            "--url" => url = value("--url")?,
            "--user" => user = value("--user")?,
            "--password" => password = value("--password")?,
            "--vhost" => vhost = value("--vhost")?,
            "--priority" | "--apply-to" => flags.push((a.clone(), value(&a)?)),
            "--durable" => flags.push((a, String::new())),
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(());
            }
            _ => rest.push(a),
        }
    }
    let api = Endpoint::parse(&url, &user, &password).map_err(usage)?;
    let ctl = Ctl { api, vhost };
    let flag = |k: &str| flags.iter().find(|(f, _)| f == k).map(|(_, v)| v.clone());
    let words: Vec<&str> = rest.iter().map(String::as_str).collect();
    ctl.command(&words, &flag)
}

/// A path segment percent-encoded.
fn enc(segment: &str) -> String {
    crate::management::json::percent_encode(segment)
}

impl Ctl {
    fn command(
        &self,
        words: &[&str],
        flag: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), CtlError> {
        let v = enc(&self.vhost);
        match words {
            ["list", kind] => self.list(kind),
            ["declare", "queue", name] => {
                let body = json!({"durable": flag("--durable").is_some()});
                self.send("PUT", &format!("/queues/{v}/{}", enc(name)), Some(body))
            }
            ["declare", "exchange", name, kind] => {
                let body = json!({"type": kind, "durable": flag("--durable").is_some()});
                self.send("PUT", &format!("/exchanges/{v}/{}", enc(name)), Some(body))
            }
            ["delete", kind, name] => {
                let path = match *kind {
                    "queue" => format!("/queues/{v}/{}", enc(name)),
                    "exchange" => format!("/exchanges/{v}/{}", enc(name)),
                    "user" => format!("/users/{}", enc(name)),
                    "vhost" => format!("/vhosts/{}", enc(name)),
                    "policy" => format!("/policies/{v}/{}", enc(name)),
                    other => return Err(usage(format!("cannot delete a {other}"))),
                };
                self.send("DELETE", &path, None)
            }
            ["purge", queue] => self.send(
                "DELETE",
                &format!("/queues/{v}/{}/contents", enc(queue)),
                None,
            ),
            ["bind", exchange, queue, key @ ..] => {
                let body =
                    json!({"routing_key": key.first().copied().unwrap_or(""), "arguments": {}});
                let path = format!("/bindings/{v}/e/{}/q/{}", enc(exchange), enc(queue));
                self.send("POST", &path, Some(body))
            }
            ["add-user", name, password, tags @ ..] => {
                let body =
                    json!({"password": password, "tags": tags.first().copied().unwrap_or("")});
                self.send("PUT", &format!("/users/{}", enc(name)), Some(body))
            }
            ["add-vhost", name] => {
                self.send("PUT", &format!("/vhosts/{}", enc(name)), Some(json!({})))
            }
            ["set-permissions", user, configure, write, read] => {
                let body = json!({"configure": configure, "write": write, "read": read});
                self.send(
                    "PUT",
                    &format!("/permissions/{v}/{}", enc(user)),
                    Some(body),
                )
            }
            ["set-policy", name, pattern, definition] => {
                let definition: Value = serde_json::from_str(definition)
                    .map_err(|e| usage(format!("DEFINITION is not JSON: {e}")))?;
                let priority: i64 = match flag("--priority") {
                    Some(p) => p
                        .parse()
                        .map_err(|_| usage("--priority needs an integer"))?,
                    None => 0,
                };
                let apply_to = flag("--apply-to").unwrap_or_else(|| "all".into());
                let body = json!({"pattern": pattern, "definition": definition, "priority": priority, "apply-to": apply_to});
                self.send("PUT", &format!("/policies/{v}/{}", enc(name)), Some(body))
            }
            ["close-connection", name] => {
                self.send("DELETE", &format!("/connections/{}", enc(name)), None)
            }
            ["publish", exchange, key, payload] => {
                let exchange = if exchange.is_empty() {
                    "amq.default"
                } else {
                    exchange
                };
                let body = json!({"routing_key": key, "payload": payload, "payload_encoding": "string", "properties": {}});
                let out = self.call(
                    "POST",
                    &format!("/exchanges/{v}/{}/publish", enc(exchange)),
                    Some(body),
                )?;
                println!("routed: {}", out["routed"]);
                Ok(())
            }
            ["get", queue, count @ ..] => {
                let count: u64 = count
                    .first()
                    .map_or(Ok(1), |c| c.parse())
                    .map_err(|_| usage("COUNT must be a number"))?;
                let body =
                    json!({"count": count, "ackmode": "ack_requeue_true", "encoding": "auto"});
                let out = self.call(
                    "POST",
                    &format!("/queues/{v}/{}/get", enc(queue)),
                    Some(body),
                )?;
                print_table(
                    &out,
                    &[
                        "routing_key",
                        "exchange",
                        "redelivered",
                        "payload_bytes",
                        "payload",
                    ],
                );
                Ok(())
            }
            ["export"] => {
                let out = self.call("GET", "/definitions", None)?;
                println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
                Ok(())
            }
            ["export", file] => {
                let out = self.call("GET", "/definitions", None)?;
                let text = serde_json::to_string_pretty(&out).unwrap_or_default();
                std::fs::write(file, text)
                    .map_err(|e| CtlError::Failed(format!("cannot write {file}: {e}")))
            }
            ["import", file] => {
                let text = std::fs::read(file)
                    .map_err(|e| CtlError::Failed(format!("cannot read {file}: {e}")))?;
                let body: Value = serde_json::from_slice(&text)
                    .map_err(|e| CtlError::Failed(format!("{file} is not JSON: {e}")))?;
                self.send("POST", "/definitions", Some(body))
            }
            [] => Err(usage("a command is needed")),
            _ => Err(usage(format!("unknown command: {}", words.join(" ")))),
        }
    }

    fn list(&self, kind: &str) -> Result<(), CtlError> {
        let columns = COLUMNS
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, c)| *c)
            .ok_or_else(|| usage(format!("cannot list {kind}")))?;
        let path = match kind {
            "queues" | "exchanges" | "bindings" | "consumers" | "policies" => {
                format!("/{kind}/{}", enc(&self.vhost))
            }
            _ => format!("/{kind}"),
        };
        let out = self.call("GET", &path, None)?;
        print_table(&out, columns);
        Ok(())
    }

    /// A request whose answer is JSON.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, CtlError> {
        let bytes = body.map(|b| b.to_string().into_bytes());
        let (status, out) = self
            .api
            .request(method, path, bytes.as_deref())
            .map_err(CtlError::Failed)?;
        let value: Value = serde_json::from_slice(&out).unwrap_or(Value::Null);
        if status >= 400 {
            let reason = value["reason"]
                .as_str()
                .map_or_else(|| value.to_string(), str::to_string);
            return Err(CtlError::Failed(format!("{status}: {reason}")));
        }
        Ok(value)
    }

    /// A request whose answer is only its status.
    fn send(&self, method: &str, path: &str, body: Option<Value>) -> Result<(), CtlError> {
        self.call(method, path, body).map(|_| ())
    }
}

/// Print `items` (a JSON array) as a tab-separated table of `columns`
/// (dotted paths into each item).
fn print_table(items: &Value, columns: &[&str]) {
    println!("{}", columns.join("\t"));
    for item in items.as_array().map(Vec::as_slice).unwrap_or_default() {
        let cells: Vec<String> = columns
            .iter()
            .map(|c| {
                let v = c.split('.').try_fold(item, |v, k| v.get(k));
                match v {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Null) | None => String::new(),
                    Some(other) => other.to_string(),
                }
            })
            .collect();
        println!("{}", cells.join("\t"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(enc("/"), "%2F");
        assert_eq!(enc("a b.c-d"), "a%20b.c-d");
        assert_eq!(enc("é"), "%C3%A9");
    }
}
