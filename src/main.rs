//! pgrepl's binary: parse, lock, call the library, print. No replication logic lives here.

mod cli;
mod commands;
mod progress;
mod render;
mod report;
mod status_view;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // As every Unix tool: `pgrepl logs pg0 | head` ends pgrepl quietly when head has read
    // enough (Rust ignores SIGPIPE, and printing to the closed pipe would panic).
    // SAFETY: no other thread exists yet; SIG_DFL installs no handler of ours.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        );
    }
    let cli = cli::Cli::parse();
    let filter = match cli.verbose {
        0 => "warn",
        1 => "pgrepl=debug,pgrepl_core=debug",
        _ => "pgrepl=trace,pgrepl_core=trace,tokio_postgres=debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PGREPL_LOG")
                .unwrap_or_else(|_| filter.into()),
        )
        .with_writer(std::io::stderr)
        .init();

    // The delayer enters a network namespace, which a thread does for itself: it runs
    // before any other thread exists.
    if let cli::Command::NetDelayer(a) = &cli.command {
        return commands::net::delayer(a);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            // One line, as every refusal is: the problem first, then the causes its message
            // does not already quote.
            let mut line = e.to_string();
            for cause in e.chain().skip(1).map(|c| c.to_string()) {
                if !line.contains(&cause) {
                    line = format!("{line}: {cause}");
                }
            }
            eprintln!("error: {line}");
            ExitCode::FAILURE
        }
    }
}
