//! `dcish`, the DCI distributed shell.

use std::process::ExitCode;

use clap::Parser;
use dci::shell::{files::Session, repl, run, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.file.is_some() && cli.command.is_some() {
        eprintln!("dcish: -f FILE runs the commands in FILE; give no command beside it");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dcish: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match &cli.command {
            Some(command) => match run(&cli, command, &mut Session::default()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("dcish: {e}");
                    ExitCode::FAILURE
                }
            },
            None if repl(&cli).await => ExitCode::SUCCESS,
            None => ExitCode::FAILURE,
        }
    })
}
