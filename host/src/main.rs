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
        // The reader of our output went away (`host summary | head`): nothing
        // to say, and no one to say it to. 141 is what a shell reports for a
        // process ended by SIGPIPE.
        Err(e) if host::out::is_broken_pipe(&e) => std::process::ExitCode::from(141),
        Err(e) => {
            host::errln!("error: {}", describe(&e));
            std::process::ExitCode::FAILURE
        }
    }
}
