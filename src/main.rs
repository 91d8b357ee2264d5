//! The `gantry` binary: parse the command line, run it, map errors to exit codes (0 success,
//! 1 runtime failure, 2 bad input: config, data or run folder).

use clap::Parser;

fn main() {
    let cli = gantry::cli::Cli::parse();
    if let Err(err) = gantry::cli::run(cli) {
        eprintln!("error: {err}");
        std::process::exit(err.exit_code());
    }
}
