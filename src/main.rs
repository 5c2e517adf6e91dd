//! The `warren` binary: parse flags and config, set up logging, serve until
//! SIGINT/SIGTERM; SIGHUP reloads the TLS certificates.

use std::process::ExitCode;

use tracing_subscriber::EnvFilter;
use warren::cli::{self, Command};
use warren::server::BindError;
use warren::Server;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("ctl") {
        return ExitCode::from(warren::ctl::main(args.skip(1).collect()));
    }
    let config = match cli::parse(args) {
        Ok(Command::Run(c)) => *c,
        Ok(Command::Help) => {
            print!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("warren {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("warren: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = EnvFilter::try_new(&config.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
    // Every connection and every durable queue holds file descriptors; the
    // usual soft limit (1024) is far below what a broker needs.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(limit = n, "open file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open file limit"),
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if config.worker_threads > 0 {
        builder.worker_threads(config.worker_threads);
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("warren: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        // Taken over before the (possibly long) recovery: SIGHUP's default
        // action would kill the process, and certificate rotation tools
        // may send it at any time.
        #[cfg(unix)]
        let hangups = hangup_signals();
        let server = match Server::bind(config.clone()).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("warren: {e}");
                return match e {
                    BindError::Config(_) => ExitCode::from(2),
                    BindError::Other(_) => ExitCode::FAILURE,
                };
            }
        };
        match server.local_addr() {
            Ok(addr) => tracing::info!(%addr, "warren listening"),
            Err(e) => tracing::warn!(error = %e, "listening on an unknown address"),
        }
        // After the AMQP line: scripts take the first `addr=` as its port.
        for l in server.listeners().iter().skip(1) {
            tracing::info!(addr = %l.addr, protocol = l.protocol, "listening");
        }
        if config.tls_port().is_none() && config.tls.listener.port != 5671 {
            tracing::warn!("a TLS port is set but [tls] has no cert_file: no AMQPS listener");
        }
        #[cfg(unix)]
        if let Some(hangups) = hangups {
            tokio::spawn(reload_on_sighup(hangups, server.tls_reloader()));
        }
        let shutdown = server.shutdown_token();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down");
            shutdown.cancel();
        });
        server.run().await;
        ExitCode::SUCCESS
    })
}

/// SIGHUP as a stream (None, logged, if it cannot be had).
#[cfg(unix)]
fn hangup_signals() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP: no certificate reload");
            None
        }
    }
}

/// Reload the TLS certificates on each SIGHUP.
#[cfg(unix)]
async fn reload_on_sighup(mut hup: tokio::signal::unix::Signal, reloader: warren::tls::Reloader) {
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading TLS certificates");
        reloader.reload().await;
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
