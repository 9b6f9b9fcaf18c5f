//! The `signet` command.

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use signet_server::config::{CliOverrides, Config};
use signet_server::state::AppState;

#[derive(Parser)]
#[command(
    name = "signet",
    version,
    about = "An OCI registry in which signatures are first-class"
)]
struct Cli {
    /// TOML configuration file (layered over the built-in defaults).
    #[arg(long, global = true, env = "SIGNET_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Copy an installation's metadata and blobs into the stores the target
    /// configuration names (e.g. SQLite + filesystem into PostgreSQL + S3), verifying
    /// every blob. Stop the source first; re-running copies only what is missing.
    Migrate {
        /// The source's configuration file (`SIGNET__` variables do not apply to it).
        #[arg(
            long,
            conflicts_with = "from_data_dir",
            required_unless_present = "from_data_dir"
        )]
        from_config: Option<PathBuf>,
        /// The source: an embedded installation's data folder.
        #[arg(long)]
        from_data_dir: Option<PathBuf>,
        /// The target's configuration file (default: `--config`); `SIGNET__` variables apply.
        #[arg(long)]
        to_config: Option<PathBuf>,
        /// The report as JSON.
        #[arg(long)]
        json: bool,
    },
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
    /// Show what is attached to a manifest, and to the indexes that cover it.
    Attachments {
        /// `<repository>@<digest>` or `<repository>:<tag>`.
        target: String,
        /// For an index: each child's attachments too.
        #[arg(long)]
        recursive: bool,
        /// JSON (the `_signet/attachments` shape) instead of a tree.
        #[arg(long)]
        json: bool,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Collect garbage once: unreferenced blobs, and with `[gc] delete_untagged`
    /// manifests no tag reaches. Safe while the server runs.
    Gc {
        /// Report what would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// The report as JSON.
        #[arg(long)]
        json: bool,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Write images, every platform and every attachment (cosign tags, referrers,
    /// atomic signatures), into an OCI image layout: a tar when OUT ends in `.tar`, a
    /// folder otherwise (only new blobs are written to an existing one).
    Export {
        /// `repo` (every tag), `repo:tag` or `repo@digest`.
        #[arg(required = true)]
        images: Vec<String>,
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        /// An earlier export (folder or tar): leave out the blobs it holds, for a
        /// destination that imported it (manifests are always written).
        #[arg(long)]
        since: Option<PathBuf>,
        /// The report as JSON.
        #[arg(long)]
        json: bool,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Store what an OCI image layout holds (a folder or a tar, from `signet export`,
    /// `skopeo copy ... oci:` or `oci-archive:`): every digest checked before anything
    /// is stored; a rerun copies only what is missing.
    Import {
        /// The layout: a folder or a tar.
        path: PathBuf,
        /// Put every repository under this prefix.
        #[arg(long, default_value = "")]
        prefix: String,
        /// The repository of entries that name only a tag (`skopeo copy ... oci:DIR:v1`).
        #[arg(long, default_value = "")]
        repository: String,
        /// The report as JSON.
        #[arg(long)]
        json: bool,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Apply the `[[retention.rules]]` once: delete the manifests no rule keeps (with
    /// their attachments; GC then reclaims their blobs). Safe while the server runs.
    Retention {
        /// Report what would be deleted, and the rules' answers; delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// The report as JSON.
        #[arg(long)]
        json: bool,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Check every invariant of the stores (blob bytes against their addresses,
    /// manifests against their derived rows, tags, upload sessions and staging) and
    /// print a report; exits non-zero when problems remain.
    Fsck {
        /// Fix what is safe: rebuild derived rows from manifest bytes, remove orphaned
        /// staging. Never deletes a blob or a manifest.
        #[arg(long)]
        repair: bool,
        /// The report as JSON.
        #[arg(long)]
        json: bool,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// The pull policy's verdict on one manifest, with every signature, attestation
    /// and SBOM behind it (its own and its indexes'); exits non-zero when the policy
    /// would refuse it.
    Verify {
        /// `<repository>@<digest>` or `<repository>:<tag>`.
        target: String,
        /// Judge as if the policy were `enforce` (a gate for CI under `audit` or `off`).
        #[arg(long)]
        enforce: bool,
        /// The verdict and evidence as JSON.
        #[arg(long)]
        json: bool,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Trust roots and the signature policy (`[trust]`).
    Trust {
        #[command(subcommand)]
        command: TrustCommand,
    },
    /// Mirror upstream registries (jobs from `[[sync.jobs]]`).
    Sync {
        #[command(subcommand)]
        command: SyncCommand,
    },
    /// The notifications outbox: recent events, where each endpoint stands, the events
    /// endpoints gave up on, and their redelivery.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
}

#[derive(Subcommand)]
enum EventsCommand {
    /// Recent events, oldest first.
    List {
        /// Events after this sequence number (default: the newest `limit`).
        #[arg(long)]
        after: Option<i64>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Each configured endpoint: its place in the events, its backlog, its dead letters.
    Status {
        #[arg(long)]
        json: bool,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Events an endpoint gave up on after `max_attempts` tries.
    Dead {
        #[arg(long)]
        endpoint: Option<String>,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Ask for dead letters to be delivered again (all of them, or those of `--endpoint`,
    /// or the sequence numbers given).
    Redeliver {
        #[arg(long)]
        endpoint: Option<String>,
        ids: Vec<i64>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum TrustCommand {
    /// Load every trust root (its key must parse) and print what each covers.
    Check,
}

#[derive(Subcommand)]
enum SyncCommand {
    /// Run one job now, against the stores directly: progress on stderr, a summary on
    /// stdout; exits non-zero when an item failed.
    Run {
        /// The job's `name`.
        job: String,
        /// The summary as JSON.
        #[arg(long)]
        json: bool,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

/// mimalloc, not the C library's allocator: a request allocates a few dozen small
/// blocks (headers, route segments, boxed middleware futures), and mimalloc's per-thread
/// free lists take a fraction of the instructions glibc's take for each.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let cli_config = cli.config;
    match cli.command {
        Command::Config => {
            let config = Config::load(cli_config.as_deref(), &CliOverrides::default())?;
            print!("{}", config.to_toml());
            Ok(())
        }
        Command::Trust {
            command: TrustCommand::Check,
        } => {
            let config = Config::load(cli_config.as_deref(), &CliOverrides::default())?;
            let trust = signet_server::verify::Trust::load(&config.trust)?;
            print!("{}", trust.describe());
            Ok(())
        }
        Command::Attachments {
            target,
            recursive,
            json,
            data_dir,
        } => print_with_stores(cli_config, data_dir, |state| async move {
            signet_server::commands::attachments::run(&state, &target, recursive, json).await
        }),
        Command::Verify {
            target,
            enforce,
            json,
            data_dir,
        } => {
            let served = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let verdict = served.clone();
            print_with_stores(cli_config, data_dir, |state| async move {
                let (text, ok) =
                    signet_server::commands::verify::run(&state, &target, enforce, json).await?;
                verdict.store(ok, std::sync::atomic::Ordering::SeqCst);
                Ok(text)
            })?;
            if served.load(std::sync::atomic::Ordering::SeqCst) {
                Ok(())
            } else {
                anyhow::bail!("verify: the policy refuses this manifest")
            }
        }
        Command::Gc {
            dry_run,
            json,
            data_dir,
        } => print_with_stores(cli_config, data_dir, |state| async move {
            signet_server::commands::gc::run(&state, dry_run, json).await
        }),
        Command::Export {
            images,
            output,
            since,
            json,
            data_dir,
        } => print_with_stores(cli_config, data_dir, |state| async move {
            signet_server::commands::transfer::export(
                &state,
                &images,
                &output,
                since.as_deref(),
                json,
            )
            .await
        }),
        Command::Import {
            path,
            prefix,
            repository,
            json,
            data_dir,
        } => print_with_stores(cli_config, data_dir, |state| async move {
            signet_server::commands::transfer::import(&state, &path, &prefix, &repository, json)
                .await
        }),
        Command::Retention {
            dry_run,
            json,
            data_dir,
        } => print_with_stores(cli_config, data_dir, |state| async move {
            signet_server::commands::retention::run(&state, dry_run, json).await
        }),
        Command::Fsck {
            repair,
            json,
            data_dir,
        } => {
            let remaining = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let left = remaining.clone();
            print_with_stores(cli_config, data_dir, |state| async move {
                let (text, n) = signet_server::commands::fsck::run(&state, repair, json).await?;
                left.store(n, std::sync::atomic::Ordering::SeqCst);
                Ok(text)
            })?;
            match remaining.load(std::sync::atomic::Ordering::SeqCst) {
                0 => Ok(()),
                n => anyhow::bail!("fsck: {n} problems remain"),
            }
        }
        Command::Sync {
            command:
                SyncCommand::Run {
                    job,
                    json,
                    data_dir,
                },
        } => print_with_stores(cli_config, data_dir, |state| async move {
            signet_server::commands::sync::run(&state, &job, json).await
        }),
        Command::Events { command } => match command {
            EventsCommand::List {
                after,
                limit,
                json,
                data_dir,
            } => print_with_stores(cli_config, data_dir, |state| async move {
                signet_server::commands::events::list(&state, after, limit, json).await
            }),
            EventsCommand::Status { json, data_dir } => {
                print_with_stores(cli_config, data_dir, |state| async move {
                    signet_server::commands::events::status(&state, json).await
                })
            }
            EventsCommand::Dead {
                endpoint,
                json,
                data_dir,
            } => print_with_stores(cli_config, data_dir, |state| async move {
                signet_server::commands::events::dead(&state, endpoint.as_deref(), json).await
            }),
            EventsCommand::Redeliver {
                endpoint,
                ids,
                data_dir,
            } => print_with_stores(cli_config, data_dir, |state| async move {
                signet_server::commands::events::redeliver(&state, endpoint.as_deref(), &ids).await
            }),
        },
        Command::Migrate {
            from_config,
            from_data_dir,
            to_config,
            json,
        } => {
            let config = Config::load(cli_config.as_deref(), &CliOverrides::default())?;
            signet_server::telemetry::init(&config.log);
            let source = match (from_config, from_data_dir) {
                (Some(file), _) => signet_server::commands::migrate::Source::Config(file),
                (None, Some(dir)) => signet_server::commands::migrate::Source::DataDir(dir),
                (None, None) => anyhow::bail!("--from-config or --from-data-dir is required"),
            };
            let target = to_config.or(cli_config);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let text = runtime.block_on(signet_server::commands::migrate::run(
                &source,
                target.as_deref(),
                json,
            ))?;
            print!("{text}");
            Ok(())
        }
        Command::Serve { listen, data_dir } => {
            let config = Config::load(cli_config.as_deref(), &CliOverrides { listen, data_dir })?;
            signet_server::telemetry::init(&config.log);
            actix_web::rt::System::new().block_on(serve(config))
        }
    }
}

/// Runs a subcommand that works on the stores directly (no server) and prints its output.
fn print_with_stores<F, Fut>(
    config_file: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    command: F,
) -> anyhow::Result<()>
where
    F: FnOnce(AppState) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<String>>,
{
    let cli = CliOverrides {
        listen: None,
        data_dir,
    };
    let config = Config::load(config_file.as_deref(), &cli)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let text = runtime.block_on(async {
        let state = AppState::open(std::sync::Arc::new(config)).await?;
        command(state).await
    })?;
    print!("{text}");
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let running = signet_server::app::start(config).await?;
    // Scripts and tests read the bound address from this line.
    println!("listening on {}", running.addr);
    std::io::stdout().flush()?;
    tracing::info!(addr = %running.addr, "signet is serving");
    running.server.await?;
    signet_server::maintenance::write_pulls(&running.state).await;
    tracing::info!("signet stopped");
    Ok(())
}
