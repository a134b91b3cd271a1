//! The demo's flags (HELP.txt describes them; `tests/demo.sh --help` prints the same file).

use std::path::PathBuf;
use std::time::Duration;

use e2e::{ALTERNATING_USERS, SINGLE_USER};

pub const HELP: &str = include_str!("HELP.txt");

#[derive(Debug, Clone)]
pub struct Args {
    pub rotations: u32,
    pub strategy: &'static str,
    pub interval: Duration,
    pub keep_running: bool,
    pub out: PathBuf,
}

#[derive(Debug)]
pub enum Command {
    Run(Args),
    Help,
}

/// `--flag value` and `--flag=value`; anything unknown is an error naming it.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut parsed = Args {
        rotations: 4,
        strategy: SINGLE_USER,
        interval: Duration::from_secs(5),
        keep_running: false,
        out: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/demo/rotation-timeline.svg"),
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag.to_owned(), Some(value.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline.clone().or_else(|| args.next()).ok_or_else(|| format!("{name} needs a value (see --help)"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--keep-running" if inline.is_none() => parsed.keep_running = true,
            "--rotations" => {
                let v = value("--rotations")?;
                parsed.rotations = v
                    .parse()
                    .ok()
                    .filter(|n| *n <= 1000)
                    .ok_or_else(|| format!("--rotations takes a number from 0 to 1000, not {v:?}"))?;
            }
            "--strategy" => {
                parsed.strategy = match value("--strategy")?.as_str() {
                    "single-user" => SINGLE_USER,
                    "alternating-users" => ALTERNATING_USERS,
                    other => return Err(format!("--strategy is single-user or alternating-users, not {other:?}")),
                }
            }
            "--interval" => {
                let v = value("--interval")?;
                let seconds: f64 = v
                    .parse()
                    .ok()
                    .filter(|s| (0.5..=600.0).contains(s))
                    .ok_or_else(|| format!("--interval takes seconds from 0.5 to 600, not {v:?}"))?;
                parsed.interval = Duration::from_secs_f64(seconds);
            }
            "--out" => parsed.out = PathBuf::from(value("--out")?),
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    if parsed.rotations == 0 && !parsed.keep_running {
        return Err("--rotations 0 only makes sense with --keep-running".into());
    }
    Ok(Command::Run(parsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Args, String> {
        match parse(args.iter().map(|s| (*s).to_owned()))? {
            Command::Run(a) => Ok(a),
            Command::Help => Err("help".into()),
        }
    }

    #[test]
    fn flags_and_their_mistakes() {
        let a = run(&["--rotations", "2", "--strategy=alternating-users", "--keep-running"]).expect("valid");
        assert_eq!((a.rotations, a.strategy, a.keep_running), (2, ALTERNATING_USERS, true));
        assert_eq!(run(&["--interval", "0.5"]).expect("valid").interval, Duration::from_millis(500));
        assert!(run(&["--rotations"]).expect_err("an error").contains("needs a value"));
        assert!(run(&["--strategy", "both"]).expect_err("an error").contains("single-user or alternating-users"));
        assert!(run(&["--rotatons", "3"]).expect_err("an error").contains("unknown argument \"--rotatons\""));
        assert!(run(&["--rotations", "0"]).expect_err("an error").contains("--keep-running"));
        assert_eq!(run(&["-h"]).expect_err("an error"), "help");
    }
}
