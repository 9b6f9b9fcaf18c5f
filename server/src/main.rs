//! The `signet` command.

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use signet_server::config::{CliOverrides, Config};

#[derive(Parser)]
#[command(name = "signet", version, about = "An OCI registry in which signatures are first-class")]
struct Cli {
    /// TOML configuration file (layered over the built-in defaults).
    #[arg(long, global = true, env = "SIGNET_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry.
    Serve {
        /// Address to listen on, e.g. 127.0.0.1:5000 (127.0.0.1:0 picks a free port).
        #[arg(long)]
        listen: Option<String>,
        /// Folder for the embedded defaults (SQLite metadata and blobs).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Print the effective configuration (the full default one without a file).
    Config,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Config => {
            let config = Config::load(cli.config.as_deref(), &CliOverrides::default())?;
            print!("{}", config.to_toml());
            Ok(())
        }
        Command::Serve { listen, data_dir } => {
            let config = Config::load(cli.config.as_deref(), &CliOverrides { listen, data_dir })?;
            signet_server::telemetry::init(&config.log);
            actix_web::rt::System::new().block_on(serve(config))
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let running = signet_server::app::start(config).await?;
    // Scripts and tests read the bound address from this line.
    println!("listening on {}", running.addr);
    std::io::stdout().flush()?;
    tracing::info!(addr = %running.addr, "signet is serving");
    running.server.await?;
    tracing::info!("signet stopped");
    Ok(())
}
