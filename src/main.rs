//! The `gantry` binary: parse the command line, run it, map errors to exit codes (0 success,
//! 1 runtime failure, 2 bad input: config, data, run folder or checkpoint, 130 stopped by a
//! signal after saving a checkpoint).

use clap::Parser;

fn main() {
    gantry::allocator::keep_freed_memory();
    let cli = gantry::cli::Cli::parse();
    let code = match gantry::cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            err.exit_code()
        }
    };
    std::process::exit(code);
}
