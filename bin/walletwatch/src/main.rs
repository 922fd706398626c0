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
    // Freed pages go back to the system on jemalloc's decay schedule from a
    // thread of its own; without it they are purged only when the arena
    // that freed them allocates again, and a daemon watching 100 000
    // wallets held 1.6 times the memory (docs/benchmarks.md, Many wallets).
    if cli.is_daemon()
        && let Err(error) = tikv_jemalloc_ctl::background_thread::write(true)
    {
        eprintln!("warning: jemalloc's background purging is unavailable ({error}); freed memory is returned later");
    }
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
