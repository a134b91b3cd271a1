//! The `sm-local` binary's command line: a configuration file, flags, or
//! both (flags win).

use std::path::PathBuf;
use std::time::Duration;

use crate::config::{Config, FunctionConfig};

pub const HELP: &str = "\
sm-local: a local Secrets Manager endpoint in front of moto that really rotates

Every Secrets Manager call (JSON 1.1, X-Amz-Target: secretsmanager.*) is passed
to moto, except what moto gets wrong for rotation: RotateSecret and
CancelRotateSecret are implemented as the service does them, and the rotation
function's four steps run in the real executable through a local Lambda Runtime
API. Lambda's Invoke API is served too. Point any SDK or the aws CLI at it with
--endpoint-url.

USAGE
  sm-local --moto URL [--function NAME=PATH ...] [options]
  sm-local --config FILE [options]

OPTIONS
  --config FILE            JSON configuration (relative paths are relative to it):
                             {\"listen\": \"127.0.0.1:4566\", \"moto\": \"http://127.0.0.1:5000\",
                              \"region\": \"us-east-1\", \"functions\": {\"rotation-fn\": {
                                \"path\": \"target/debug/bootstrap\",
                                \"environment\": {\"ROTATION_STRATEGY\": \"single-user\"},
                                \"timeout_seconds\": 30, \"memory_mb\": 128, \"handler\": \"bootstrap\"}}}
  --moto URL               moto's server, e.g. http://127.0.0.1:5000 (required)
  --listen ADDR            where to listen [default: 127.0.0.1:0, a free port]
  --region REGION          the functions' region and the default one [default: us-east-1]
  --account ID             the account in Lambda ARNs [default: 123456789012]
  --function NAME=PATH     a Lambda function: RotationLambdaARN ...:function:NAME runs PATH
  --env NAME:KEY=VALUE     an environment variable of function NAME
  --timeout NAME=SECONDS   function NAME's timeout [default: 30]
  --memory NAME=MB         function NAME's memory size [default: 128]
  --handler NAME=HANDLER   function NAME's handler (_HANDLER) [default: bootstrap]
  --quiet-functions        do not copy the functions' output to stderr
  -h, --help               this text

When ready, prints the endpoint's URL (http://ADDR) on one line of stdout; logs
go to stderr (RUST_LOG, default info). Request and response bodies are never
logged.

CONTROL API (for tests)
  POST   /_sm-local/faults               {\"operation\": \"PutSecretValue\", \"secret\": \"name or ARN\",
                                           \"action\": {\"type\": \"error\", \"code\": \"ThrottlingException\",
                                                      \"status\": 400} | {\"type\": \"hang\", \"ms\": 1500},
                                           \"times\": 1}
  GET    /_sm-local/faults               DELETE /_sm-local/faults
  GET    /_sm-local/calls[?function=NAME|client&operation=OP]     DELETE /_sm-local/calls
  GET    /_sm-local/rotations[?secret=ID]
  GET    /_sm-local/rotations/TOKEN[?wait=SECONDS]
  GET    /_sm-local/functions            GET /_sm-local/functions/NAME[/output]
";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run(Config),
    Help,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    #[error("{0} needs a value")]
    Missing(String),
    #[error("unknown option {0} (see --help)")]
    Unknown(String),
    #[error("{flag}: expected {expected}, got {got:?}")]
    Malformed { flag: &'static str, expected: &'static str, got: String },
    #[error("{flag}: no function named {name:?} (add --function {name}=PATH)")]
    NoSuchFunction { flag: &'static str, name: String },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, ArgsError> {
    let mut flags: Vec<(String, Option<String>)> = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--quiet-functions" => flags.push((arg, None)),
            _ if arg.starts_with("--") => {
                let (flag, value) = match arg.split_once('=') {
                    Some((flag, value)) => (flag.to_owned(), value.to_owned()),
                    None => {
                        let value = args.next().ok_or_else(|| ArgsError::Missing(arg.clone()))?;
                        (arg, value)
                    }
                };
                flags.push((flag, Some(value)));
            }
            _ => return Err(ArgsError::Unknown(arg)),
        }
    }

    let value_of = |flag: &str| flags.iter().rev().find(|(f, _)| f == flag).and_then(|(_, v)| v.clone());
    let mut config = match value_of("--config") {
        Some(path) => Config::from_file(&PathBuf::from(path))?,
        None => Config::new(""),
    };
    config.forward_function_output = true;
    // Functions first, so that the flags that tune one may come before it.
    for (flag, value) in &flags {
        if flag == "--function" {
            let value = value.as_deref().unwrap_or_default();
            let (name, path) = split(value, '=', "--function", "NAME=PATH")?;
            config.functions.retain(|f| f.name != name);
            config.functions.push(FunctionConfig::new(name, path));
        }
    }
    for (flag, value) in flags {
        let value = value.unwrap_or_default();
        match flag.as_str() {
            "--config" | "--function" => {}
            "--quiet-functions" => config.forward_function_output = false,
            "--moto" => config.moto = value.trim_end_matches('/').to_owned(),
            "--listen" => {
                config.listen = value.parse().map_err(|_| ArgsError::Malformed {
                    flag: "--listen",
                    expected: "an address such as 127.0.0.1:4566",
                    got: value.clone(),
                })?;
            }
            "--region" => config.region = value,
            "--account" => config.account = value,
            "--env" => {
                let (name, assignment) = split(&value, ':', "--env", "NAME:KEY=VALUE")?;
                let (key, val) = split(assignment, '=', "--env", "NAME:KEY=VALUE")?;
                function(&mut config, "--env", name)?.environment.insert(key.to_owned(), val.to_owned());
            }
            "--timeout" => {
                let (name, seconds) = split(&value, '=', "--timeout", "NAME=SECONDS")?;
                let seconds = number(seconds, "--timeout", "NAME=SECONDS")?;
                function(&mut config, "--timeout", name)?.timeout = Duration::from_secs(seconds);
            }
            "--memory" => {
                let (name, mb) = split(&value, '=', "--memory", "NAME=MB")?;
                let mb = number(mb, "--memory", "NAME=MB")?;
                function(&mut config, "--memory", name)?.memory_mb = u32::try_from(mb).unwrap_or(u32::MAX);
            }
            "--handler" => {
                let (name, handler) = split(&value, '=', "--handler", "NAME=HANDLER")?;
                function(&mut config, "--handler", name)?.handler = handler.to_owned();
            }
            _ => return Err(ArgsError::Unknown(flag)),
        }
    }
    config.validate()?;
    Ok(Command::Run(config))
}

fn split<'a>(
    value: &'a str,
    at: char,
    flag: &'static str,
    expected: &'static str,
) -> Result<(&'a str, &'a str), ArgsError> {
    value.split_once(at).filter(|(a, b)| !a.is_empty() && !b.is_empty()).ok_or_else(|| ArgsError::Malformed {
        flag,
        expected,
        got: value.to_owned(),
    })
}

fn number(text: &str, flag: &'static str, expected: &'static str) -> Result<u64, ArgsError> {
    text.parse().map_err(|_| ArgsError::Malformed { flag, expected, got: text.to_owned() })
}

fn function<'a>(config: &'a mut Config, flag: &'static str, name: &str) -> Result<&'a mut FunctionConfig, ArgsError> {
    config
        .functions
        .iter_mut()
        .find(|f| f.name == name)
        .ok_or_else(|| ArgsError::NoSuchFunction { flag, name: name.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Config, ArgsError> {
        match parse(args.iter().map(|a| (*a).to_owned()))? {
            Command::Run(config) => Ok(config),
            Command::Help => panic!("help"),
        }
    }

    #[test]
    fn flags_configure_functions() {
        let config = run(&[
            "--env",
            "fn:ROTATION_STRATEGY=single-user",
            "--moto",
            "http://127.0.0.1:5000",
            "--listen=127.0.0.1:4566",
            "--function",
            "fn=/bin/true",
            "--timeout",
            "fn=3",
            "--memory=fn=256",
            "--env",
            "fn:EXCLUDE_CHARACTERS=a=b",
        ])
        .expect("valid");
        assert_eq!(config.listen.port(), 4566);
        let f = &config.functions[0];
        assert_eq!((f.name.as_str(), f.timeout.as_secs(), f.memory_mb), ("fn", 3, 256));
        assert_eq!(f.environment["ROTATION_STRATEGY"], "single-user");
        assert_eq!(f.environment["EXCLUDE_CHARACTERS"], "a=b", "only the first '=' splits");
        assert!(config.forward_function_output);
    }

    #[test]
    fn mistakes_are_named() {
        assert_eq!(parse(["--help".to_owned()]), Ok(Command::Help));
        assert_eq!(run(&["--moto"]), Err(ArgsError::Missing("--moto".into())));
        assert_eq!(run(&["serve"]), Err(ArgsError::Unknown("serve".into())));
        assert_eq!(run(&["--mota", "x"]), Err(ArgsError::Unknown("--mota".into())));
        assert!(matches!(
            run(&["--moto", "http://m", "--env", "nofn:K=V"]),
            Err(ArgsError::NoSuchFunction { flag: "--env", .. })
        ));
        assert!(matches!(
            run(&["--moto", "http://m", "--function", "/bin/true"]),
            Err(ArgsError::Malformed { flag: "--function", .. })
        ));
        assert!(matches!(
            run(&["--moto", "http://m", "--function", "f=/bin/true", "--timeout", "f=soon"]),
            Err(ArgsError::Malformed { flag: "--timeout", .. })
        ));
        assert!(matches!(run(&["--function", "f=/bin/true"]), Err(ArgsError::Config(_))), "moto is required");
    }
}
