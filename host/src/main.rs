//! `host`: the command-line entry point.
use clap::Parser;

/// The error and its causes on one line, skipping a cause whose text the
/// message already carries (thiserror messages often embed their source).
fn describe(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg
}

fn main() -> std::process::ExitCode {
    let cli = host::commands::Cli::parse();
    match host::commands::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            std::process::ExitCode::FAILURE
        }
    }
}
