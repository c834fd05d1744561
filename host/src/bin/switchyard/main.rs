//! The `switchyard` binary: argument parsing, logging set-up and wiring. Errors end here as one line
//! on stderr and exit code 2 (bad usage, bad files) or 1 (a failure while running).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod alloc;
mod check;
mod run;
mod test_cases;

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "A database proxy driven by a WebAssembly policy"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Run {
        /// The configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Policy tools.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Parse and validate a configuration file, load its policy, and report.
    Check {
        /// The configuration file (TOML).
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Classify a statement and run a policy on it; prints the classification and the decision
    /// as JSON. No database needed.
    Check(check::PolicyCheckArgs),
    /// Run a policy over a case file of statements and expected decisions; prints a diff per
    /// mismatch and exits 1 when any case does not match.
    Test(test_cases::PolicyTestArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are not errors.
            if !e.use_stderr() {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // One line, like every other error: clap's first line without its `error: ` prefix.
            let rendered = e.to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            eprintln!(
                "switchyard: {} (see --help)",
                first.trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Run { config } => run::run(&config).map_err(|e| (1, e)),
        Command::Config {
            command: ConfigCommand::Check { file },
        } => check::config_check(&file).map_err(|e| (2, e)),
        Command::Policy {
            command: PolicyCommand::Check(args),
        } => check::policy_check(args).map_err(|e| (2, e)),
        Command::Policy {
            command: PolicyCommand::Test(args),
        } => match test_cases::policy_test(args) {
            Ok(0) => Ok(()),
            Ok(code) => return ExitCode::from(code),
            Err(e) => Err((2, e)),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, error)) => {
            eprintln!("switchyard: {}", one_line(&error));
            ExitCode::from(code)
        }
    }
}

/// `error: cause: cause`, on one line, without a backtrace.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for (i, cause) in error.chain().enumerate() {
        let text = cause.to_string();
        if i > 0 {
            if line.contains(&text) {
                continue;
            }
            line.push_str(": ");
        }
        line.push_str(&text.replace('\n', " "));
    }
    line
}
