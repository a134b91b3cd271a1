//! The endpoint's configuration: where moto is, where to listen, and the
//! Lambda functions it can invoke. Read and validated once, at start.
//!
//! A function is what Lambda would know of it: a name (the end of the
//! `RotationLambdaARN` Secrets Manager is given), the executable (`bootstrap`
//! of a `provided.al2023` function), its environment, timeout and memory
//! size. As on Lambda, the environment may not set the variables Lambda
//! reserves (credentials, region, `AWS_LAMBDA_*`, `_HANDLER`): the endpoint
//! sets those itself.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub const DEFAULT_REGION: &str = "us-east-1";
/// moto's default account.
pub const DEFAULT_ACCOUNT: &str = "123456789012";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_MEMORY_MB: u32 = 128;

/// Variables Lambda sets itself and refuses in a function's configuration.
const RESERVED: &[&str] = &[
    "_HANDLER",
    "_X_AMZN_TRACE_ID",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_EXECUTION_ENV",
    "AWS_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SECRET_KEY",
    "AWS_SESSION_TOKEN",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where the endpoint listens; port 0 picks a free one.
    pub listen: SocketAddr,
    /// moto's base URL, e.g. `http://127.0.0.1:5000`.
    pub moto: String,
    /// The region functions run in (their `AWS_REGION`) and the default for
    /// requests that carry none.
    pub region: String,
    /// The account in Lambda ARNs.
    pub account: String,
    pub functions: Vec<FunctionConfig>,
    /// Copy every line a function prints to the endpoint's stderr, prefixed
    /// with its name (CloudWatch, locally). The library keeps the lines
    /// either way.
    pub forward_function_output: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionConfig {
    pub name: String,
    pub path: PathBuf,
    pub environment: BTreeMap<String, String>,
    pub timeout: Duration,
    pub memory_mb: u32,
    /// The function's `handler` (its `_HANDLER`); `bootstrap` by default.
    pub handler: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("moto's URL must start with http:// (got {0:?})")]
    Moto(String),
    #[error("region must not be empty")]
    Region,
    #[error("function name {0:?} must be 1-64 letters, digits, '-' or '_'")]
    FunctionName(String),
    #[error("function {0:?} is configured twice")]
    Duplicate(String),
    #[error("function {name}: {path} is not an executable file")]
    Executable { name: String, path: String },
    #[error("function {name}: timeout must be 1-900 seconds")]
    Timeout { name: String },
    #[error("function {name}: memory size must be 128-10240 MB")]
    Memory { name: String },
    #[error("function {name}: environment variable {key} is reserved by Lambda")]
    Reserved { name: String, key: String },
    #[error("function {name}: {key:?} is not a valid environment variable name")]
    EnvKey { name: String, key: String },
    #[error("{0}")]
    File(String),
}

impl Config {
    /// Defaults: listen on a free loopback port, us-east-1, no functions.
    pub fn new(moto: impl Into<String>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            moto: moto.into().trim_end_matches('/').to_owned(),
            region: DEFAULT_REGION.to_owned(),
            account: DEFAULT_ACCOUNT.to_owned(),
            functions: Vec::new(),
            forward_function_output: false,
        }
    }

    pub fn function(mut self, function: FunctionConfig) -> Self {
        self.functions.push(function);
        self
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.moto.starts_with("http://") {
            return Err(ConfigError::Moto(self.moto.clone()));
        }
        if self.region.trim().is_empty() {
            return Err(ConfigError::Region);
        }
        let mut seen = std::collections::BTreeSet::new();
        for f in &self.functions {
            f.validate()?;
            if !seen.insert(f.name.as_str()) {
                return Err(ConfigError::Duplicate(f.name.clone()));
            }
        }
        Ok(())
    }

    /// Reads a JSON configuration file; relative paths in it are relative to
    /// the file. Unknown keys are refused.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::File(format!("cannot read {}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_json(&text, base).map_err(|e| match e {
            ConfigError::File(m) => ConfigError::File(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    pub fn from_json(text: &str, base: &Path) -> Result<Self, ConfigError> {
        let file: FileConfig = serde_json::from_str(text).map_err(|e| ConfigError::File(e.to_string()))?;
        let mut config = Config::new(file.moto.unwrap_or_default());
        if let Some(listen) = file.listen {
            config.listen =
                listen.parse().map_err(|_| ConfigError::File(format!("listen {listen:?} is not an address")))?;
        }
        if let Some(region) = file.region {
            config.region = region;
        }
        if let Some(account) = file.account {
            config.account = account;
        }
        for (name, f) in file.functions {
            let path = if f.path.is_absolute() { f.path } else { base.join(f.path) };
            let mut function = FunctionConfig::new(&name, path);
            function.environment = f.environment;
            if let Some(t) = f.timeout_seconds {
                function.timeout = Duration::from_secs(t);
            }
            if let Some(m) = f.memory_mb {
                function.memory_mb = m;
            }
            if let Some(h) = f.handler {
                function.handler = h;
            }
            config.functions.push(function);
        }
        Ok(config)
    }

    pub fn lambda_arn(&self, function: &str) -> String {
        format!("arn:aws:lambda:{}:{}:function:{function}", self.region, self.account)
    }
}

impl FunctionConfig {
    pub fn new(name: &str, path: impl Into<PathBuf>) -> Self {
        Self {
            name: name.to_owned(),
            path: path.into(),
            environment: BTreeMap::new(),
            timeout: DEFAULT_TIMEOUT,
            memory_mb: DEFAULT_MEMORY_MB,
            handler: "bootstrap".to_owned(),
        }
    }

    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.environment.insert(key.to_owned(), value.into());
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let name = &self.name;
        let name_ok =
            (1..=64).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok {
            return Err(ConfigError::FunctionName(name.clone()));
        }
        if !is_executable(&self.path) {
            return Err(ConfigError::Executable { name: name.clone(), path: self.path.display().to_string() });
        }
        if !(1..=900).contains(&self.timeout.as_secs()) || self.timeout.subsec_nanos() != 0 {
            return Err(ConfigError::Timeout { name: name.clone() });
        }
        if !(128..=10_240).contains(&self.memory_mb) {
            return Err(ConfigError::Memory { name: name.clone() });
        }
        for key in self.environment.keys() {
            if RESERVED.contains(&key.as_str()) || key.starts_with("AWS_LAMBDA_") {
                return Err(ConfigError::Reserved { name: name.clone(), key: key.clone() });
            }
            let key_ok = key.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !key_ok {
                return Err(ConfigError::EnvKey { name: name.clone(), key: key.clone() });
            }
        }
        Ok(())
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The configuration file's shape.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    moto: Option<String>,
    region: Option<String>,
    account: Option<String>,
    #[serde(default)]
    functions: BTreeMap<String, FileFunction>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFunction {
    path: PathBuf,
    #[serde(default)]
    environment: BTreeMap<String, String>,
    timeout_seconds: Option<u64>,
    memory_mb: Option<u32>,
    handler: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An executable every Debian machine has.
    const TRUE: &str = "/bin/true";

    #[test]
    fn a_file_with_a_function() {
        let text = r#"{
            "listen": "127.0.0.1:4566", "moto": "http://127.0.0.1:5000/",
            "functions": {"rotation-fn": {"path": "true", "environment": {"ROTATION_STRATEGY": "single-user"},
                          "timeout_seconds": 5, "memory_mb": 256}}
        }"#;
        let config = Config::from_json(text, Path::new("/bin")).expect("parses");
        assert_eq!(config.listen, "127.0.0.1:4566".parse().expect("addr"));
        assert_eq!(config.moto, "http://127.0.0.1:5000");
        let f = &config.functions[0];
        assert_eq!(f.path, PathBuf::from("/bin/true"), "relative to the file");
        assert_eq!(f.timeout, Duration::from_secs(5));
        assert_eq!(f.memory_mb, 256);
        assert_eq!(f.handler, "bootstrap");
        assert_eq!(f.environment["ROTATION_STRATEGY"], "single-user");
        config.validate().expect("valid");
        assert_eq!(config.lambda_arn("rotation-fn"), "arn:aws:lambda:us-east-1:123456789012:function:rotation-fn");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = Config::from_json(r#"{"moto": "http://x", "functionz": {}}"#, Path::new(".")).expect_err("typo");
        assert!(err.to_string().contains("functionz"), "{err}");
        let err = Config::from_json(r#"{"functions": {"f": {"path": "x", "timeout": 3}}}"#, Path::new("."))
            .expect_err("typo");
        assert!(err.to_string().contains("timeout"), "{err}");
    }

    #[test]
    fn invalid_functions_are_named() {
        let base = Config::new("http://127.0.0.1:5000");
        let check = |f: FunctionConfig| base.clone().function(f).validate();
        assert_eq!(check(FunctionConfig::new("f", TRUE)), Ok(()));
        assert_eq!(check(FunctionConfig::new("bad name", TRUE)), Err(ConfigError::FunctionName("bad name".into())));
        assert!(matches!(
            check(FunctionConfig::new("f", "/nonexistent/bootstrap")),
            Err(ConfigError::Executable { .. })
        ));
        let not_executable = std::env::temp_dir().join(format!("sm-local-config-test-{}", std::process::id()));
        std::fs::write(&not_executable, "#!/bin/sh\n").expect("temp file");
        std::fs::set_permissions(&not_executable, std::os::unix::fs::PermissionsExt::from_mode(0o644)).expect("chmod");
        let refused = check(FunctionConfig::new("f", &not_executable));
        let _ = std::fs::remove_file(&not_executable);
        assert!(matches!(refused, Err(ConfigError::Executable { .. })), "{refused:?}");
        assert!(matches!(
            check(FunctionConfig::new("f", TRUE).timeout(Duration::from_secs(901))),
            Err(ConfigError::Timeout { .. })
        ));
        assert!(matches!(
            check(FunctionConfig::new("f", TRUE).timeout(Duration::from_millis(1500))),
            Err(ConfigError::Timeout { .. })
        ));
        for key in ["AWS_ACCESS_KEY_ID", "AWS_REGION", "AWS_LAMBDA_FUNCTION_NAME", "_HANDLER"] {
            assert_eq!(
                check(FunctionConfig::new("f", TRUE).env(key, "x")),
                Err(ConfigError::Reserved { name: "f".into(), key: key.into() }),
                "{key}"
            );
        }
        assert!(matches!(check(FunctionConfig::new("f", TRUE).env("1X", "x")), Err(ConfigError::EnvKey { .. })));
        let twice = base.clone().function(FunctionConfig::new("f", TRUE)).function(FunctionConfig::new("f", TRUE));
        assert_eq!(twice.validate(), Err(ConfigError::Duplicate("f".into())));
        assert_eq!(Config::new("https://moto").validate(), Err(ConfigError::Moto("https://moto".into())));
    }
}
