//! Command-line flags: `--config FILE` loads a file over the defaults; the
//! other flags override single keys on top of that.

use std::path::PathBuf;

use crate::config::{Config, ConfigError};

/// What the command line asked for.
#[derive(Debug, PartialEq)]
pub enum Command {
    /// Run the broker with this config.
    Run(Box<Config>),
    /// Print usage.
    Help,
    /// Print the version.
    Version,
}

/// Usage text.
pub const USAGE: &str = "\
Usage: warren [OPTIONS]
       warren ctl COMMAND ...   (the management API from the command line; warren ctl --help)

Options:
  --config FILE      TOML config file (keys override the defaults; see config/warren.toml)
  --bind ADDR        address to listen on (default 127.0.0.1)
  --port PORT        AMQP port (default 5672; 0 picks a free port)
  --data-dir DIR     data directory (default ./data)
  --tls-port PORT    AMQPS port (default 5671; serves only with [tls] cert_file and key_file)
  --management-port PORT  management HTTP API port (default 15672; 0: off)
  --prometheus-port PORT  Prometheus metrics port (default 15692; 0: off)
  --log-level LEVEL  tracing filter, e.g. info, debug, warren=trace
  -h, --help         print this help
  -V, --version      print the version
";

/// Parse arguments (without the program name).
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, ConfigError> {
    let mut args = args.into_iter();
    let mut config_file: Option<PathBuf> = None;
    let mut overrides: Vec<(String, String)> = Vec::new();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| ConfigError(format!("{name} needs a value")))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "--config" => config_file = Some(PathBuf::from(value("--config")?)),
            "--bind" => overrides.push(("bind".into(), value("--bind")?)),
            "--port" => overrides.push(("port".into(), value("--port")?)),
            "--data-dir" => overrides.push(("data_dir".into(), value("--data-dir")?)),
            "--tls-port" => overrides.push(("tls_port".into(), value("--tls-port")?)),
            "--management-port" => {
                overrides.push(("management_port".into(), value("--management-port")?))
            }
            "--prometheus-port" => {
                overrides.push(("prometheus_port".into(), value("--prometheus-port")?))
            }
            "--log-level" => overrides.push(("log_level".into(), value("--log-level")?)),
            other => {
                return Err(ConfigError(format!(
                    "unknown option `{other}` (see --help)"
                )))
            }
        }
    }
    let mut config = match &config_file {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    for (key, v) in overrides {
        match key.as_str() {
            "bind" => {
                config.bind = v.parse().map_err(|_| {
                    ConfigError(format!(
                        "invalid value for `--bind`: {v:?} is not an IP address"
                    ))
                })?
            }
            "port" => config.port = port_flag("--port", &v)?,
            "tls_port" => config.tls.listener.port = port_flag("--tls-port", &v)?,
            "management_port" => config.management_port = port_flag("--management-port", &v)?,
            "prometheus_port" => config.prometheus_port = port_flag("--prometheus-port", &v)?,
            "data_dir" => config.data_dir = PathBuf::from(v),
            _ => config.log_level = v,
        }
    }
    config.validate()?;
    Ok(Command::Run(Box::new(config)))
}

fn port_flag(flag: &str, v: &str) -> Result<u16, ConfigError> {
    v.parse().map_err(|_| {
        ConfigError(format!(
            "invalid value for `{flag}`: {v:?} is not a port number"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn flags_override_defaults() {
        let Command::Run(c) = parse(args(&["--port", "6000", "--data-dir=/tmp/x"])).unwrap() else {
            panic!("expected run");
        };
        assert_eq!(c.port, 6000);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        let Command::Run(c) =
            parse(args(&["--management-port", "0", "--prometheus-port=9999"])).unwrap()
        else {
            panic!("expected run");
        };
        assert_eq!((c.management_port, c.prometheus_port), (0, 9999));
        let Command::Run(c) = parse(args(&["--tls-port", "5999"])).unwrap() else {
            panic!("expected run");
        };
        assert_eq!(c.tls.listener.port, 5999);
        let e = parse(args(&["--management-port", "x"])).unwrap_err();
        assert!(e.0.contains("--management-port"), "{e}");
    }

    #[test]
    fn bad_port_is_named() {
        let e = parse(args(&["--port", "abc"])).unwrap_err();
        assert!(e.0.contains("--port"));
    }

    #[test]
    fn unknown_flag_is_refused() {
        assert!(parse(args(&["--nope"])).is_err());
    }

    #[test]
    fn missing_config_file_is_an_error() {
        let e = parse(args(&["--config", "/nonexistent/warren.toml"])).unwrap_err();
        assert!(e.0.contains("/nonexistent/warren.toml"));
    }
}
