//! The `walletwatch` binary: parses the command line, installs the process-wide
//! pieces (TLS provider, signals, logging) and hands over to `ww-app`.

mod cli;
mod commands;
mod signals;
mod telemetry;

use std::process::ExitCode;

use clap::Parser as _;

/// jemalloc instead of the system allocator: with the system allocator's
/// per-thread arenas, the store's blocking threads left the daemon at twice
/// the memory per tracked wallet (docs/benchmarks.md, Many wallets).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    }
}
