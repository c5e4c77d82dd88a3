//! Entry point: parse flags and settings, become the PID 1 reaper if needed, run, and map
//! failures to exit codes (2 for configuration, 1 for runtime failures).

#![deny(clippy::undocumented_unsafe_blocks)]

use std::collections::HashMap;
use std::process::ExitCode;

use fwatchdog::config::{self, Config, Layered, LogFormat, Lookup, Mode, ProcessEnv, SETTINGS};

enum Cli {
    Help,
    Version,
    RunHealthcheck,
    Run {
        flags: HashMap<String, String>,
        command: Option<Vec<String>>,
    },
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Cli, String> {
    let mut flags = HashMap::new();
    let mut command = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--" => {
                command = Some(args.by_ref().collect());
                break;
            }
            "-h" | "--help" | "-help" => return Ok(Cli::Help),
            "--version" | "-version" | "-V" => return Ok(Cli::Version),
            "--run-healthcheck" | "-run-healthcheck" => return Ok(Cli::RunHealthcheck),
            _ => {}
        }
        let Some(flag) = arg.strip_prefix("--") else {
            return Err(format!(
                "unexpected argument {arg:?} (put the function command after --)"
            ));
        };
        let (name, value) = match flag.split_once('=') {
            Some((n, v)) => (n.to_string(), v.to_string()),
            None => {
                let v = args
                    .next()
                    .ok_or_else(|| format!("--{flag} needs a value"))?;
                (flag.to_string(), v)
            }
        };
        let wanted = name.replace('-', "_");
        let setting = SETTINGS
            .iter()
            .find(|s| {
                s.name.eq_ignore_ascii_case(&wanted)
                    || s.aliases.iter().any(|a| a.eq_ignore_ascii_case(&wanted))
            })
            .ok_or_else(|| format!("unknown flag --{name} (see --help)"))?;
        // A flag counts for the setting and all its aliases, so it beats any env spelling.
        for n in std::iter::once(setting.name).chain(setting.aliases.iter().copied()) {
            flags.insert(n.to_string(), value.clone());
        }
    }
    Ok(Cli::Run { flags, command })
}

/// The system allocator with a small cache of freed blocks on the runtime's threads
/// (src/alloc.rs says why and how).
#[global_allocator]
static ALLOCATOR: fwatchdog::alloc::Cached = fwatchdog::alloc::Cached;

fn main() -> ExitCode {
    let cli = match parse_args(std::env::args().skip(1)) {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("fwatchdog: {e}");
            return ExitCode::from(2);
        }
    };
    let (flags, command) = match cli {
        Cli::Help => {
            print!("{}", config::help_text());
            return ExitCode::SUCCESS;
        }
        Cli::Version => {
            println!("fwatchdog {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Cli::RunHealthcheck => {
            let tmp = std::env::var_os("TMPDIR").unwrap_or_else(|| "/tmp".into());
            let lock = std::path::Path::new(&tmp).join(".lock");
            if lock.exists() {
                return ExitCode::SUCCESS;
            }
            eprintln!("fwatchdog: unhealthy: no lock file at {}", lock.display());
            return ExitCode::from(1);
        }
        Cli::Run { flags, command } => (flags, command),
    };
    let lookup = Layered {
        flags: &flags,
        base: &ProcessEnv,
    };
    let config = match Config::from_lookup(&lookup, command) {
        Ok(c) => c,
        Err(e) => {
            let json = lookup.get("log_format").is_some_and(|f| f.trim() == "json");
            fail(json, &e.to_string(), Some(&e.var));
            return ExitCode::from(2);
        }
    };
    let json_logs = config.log_format == LogFormat::Json;
    let inherited = match fwatchdog::server::listeners::inherited() {
        Ok(l) => l,
        Err(e) => {
            fail(json_logs, &e.to_string(), Some(&e.var));
            return ExitCode::from(2);
        }
    };
    fwatchdog::log::init(config.log_format);
    if let Err(e) = fwatchdog::process::reaper::become_init_if_pid1() {
        eprintln!("fwatchdog: cannot start as PID 1: {e}");
        return ExitCode::from(1);
    }
    // Settings given as flags reach the function's environment too, exactly as if they had
    // been set there (RAW_BODY in particular is the function's business as well as ours).
    // Still single-threaded here, so changing the environment is sound.
    for (name, value) in &flags {
        std::env::set_var(name, value);
    }
    // The proxy's own work per request is tiny next to the function behind it, and one
    // thread saves the cross-thread wake-ups that dominate its latency. Fork modes keep a
    // thread per core: spawning a process briefly blocks the thread that does it.
    // Worker mode too: its workers do the work, and die_with_the_watchdog ties each to the
    // thread that spawned it, which must live as long as the watchdog.
    let one_thread = matches!(config.mode, Mode::Http | Mode::Static | Mode::Worker);
    let mut builder = if one_thread {
        // This thread runs the runtime and lives as long as the process.
        fwatchdog::alloc::enable_on_this_thread();
        tokio::runtime::Builder::new_current_thread()
    } else {
        // Every pool thread keeps its own cache and gives it back when it exits.
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.on_thread_start(fwatchdog::alloc::enable_on_this_thread)
            .on_thread_stop(fwatchdog::alloc::disable_on_this_thread);
        b
    };
    // Log lines wait for the moment the thread would sleep (see `log::buffer`), and with
    // busy_poll the thread looks for new work a little longer first.
    builder
        .on_thread_park(|| {
            fwatchdog::log::buffer::flush();
            fwatchdog::busy_poll::park();
        })
        .on_thread_unpark(fwatchdog::busy_poll::unpark);
    // Quota and affinity both count (std reads the cgroup's cpu.max or cfs quota).
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let budget = fwatchdog::busy_poll::resolve(config.busy_poll, config.mode, cpus);
    let fds_before = (!budget.is_zero()).then(fwatchdog::busy_poll::open_fds);
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fwatchdog: cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(before) = fds_before {
        if !fwatchdog::busy_poll::enable(&before, budget) {
            eprintln!(
                "fwatchdog: busy_poll: cannot find the runtime's epoll descriptor; polling off"
            );
        }
    }
    let outcome = runtime.block_on(async {
        let listeners = fwatchdog::Listeners::bind(&config, inherited).await?;
        let stop =
            fwatchdog::stop_signals().map_err(|e| fwatchdog::RunError::Failed(e.to_string()))?;
        fwatchdog::run(listeners, config, stop).await
    });
    fwatchdog::log::buffer::flush();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let var = match &e {
                fwatchdog::RunError::Config(c) => Some(c.var.as_str()),
                fwatchdog::RunError::Failed(_) => None,
            };
            fail(json_logs, &e.to_string(), var);
            ExitCode::from(e.exit_code())
        }
    }
}

/// The one line a failed start (or run) leaves on stderr: plain text, or with
/// `log_format=json` a JSON object like every other line, so a log pipeline parsing JSON
/// keeps working. Either way it names the variable at fault.
fn fail(json: bool, msg: &str, var: Option<&str>) {
    if !json {
        eprintln!("fwatchdog: {msg}");
        return;
    }
    fwatchdog::log::fatal(msg, var).write();
}
