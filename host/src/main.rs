//! `host`: the command-line entry point.
use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = host::cli::Cli::parse();
    match host::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
