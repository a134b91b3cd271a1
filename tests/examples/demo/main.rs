//! The local demo: a throwaway PostgreSQL 15 with TLS, moto behind the
//! project's Secrets Manager endpoint (sm-local, in this process), the real
//! `bootstrap` as the rotation function and the real web app, deployed as
//! its README says (first-deployment SQL, `web-app migrate` as the owner),
//! serving clients while RotateSecret rotates its login.
//!
//! The story, as it prints:
//! 1. start-up, each part with its time;
//! 2. a steady baseline of the clients' rate and latency;
//! 3. one line per rotation, growing as it happens: each step's time, the
//!    moment the app switched its new connections to the new version (and
//!    why), the running count of requests answered and failed;
//! 4. with `--keep-running`, an aws CLI command to rotate by hand from
//!    another shell; the endpoint's rotation records are watched, so those
//!    rotations show like the others;
//! 5. on the way out (the end, or Ctrl-C at any moment): a running rotation
//!    let finish, then the clients, the web app, the function processes,
//!    moto and PostgreSQL stopped in that order, by PID (the leak check runs
//!    while Secrets Manager still answers); the temporary directories
//!    removed; the summary and the timeline picture (SVG).
//!
//! It prints identifiers, users, times and counts, never a password.
#![allow(clippy::print_stdout)]

mod args;
mod console;
mod load;
mod timeline;
mod watch;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use e2e::web_app::{DBNAME, Deployment, FAST_CYCLING, Metrics, WebApp};
use e2e::{ALTERNATING, PROVISIONER, SINGLE, SINGLE_TWIN, TestEnv, Tls};
use sm_local::RotationStatus;

use crate::args::{Args, Command};
use crate::console::{Console, Interrupt, Interrupted};
use crate::load::{Load, Stats};
use crate::timeline::{Clock, Timeline};
use crate::watch::{Event, RotationWatch, SwitchWatch};

const SECRET: &str = "demo/app";
/// Enough traffic to see, little enough that the two cores still time the
/// product rather than the queue in front of it.
const CLIENTS: usize = 8;
const PACE: Duration = Duration::from_millis(2);
/// How often the demo looks at the endpoint's records and the app's log.
const TICK: Duration = Duration::from_millis(5);
/// How long a rotation's line waits for the app to switch to its version.
const SWITCH_WAIT: Duration = Duration::from_secs(15);
/// How long stopping lets a rotation in flight finish.
const ROTATION_GRACE: Duration = Duration::from_secs(5);

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match args::parse(std::env::args().skip(1)) {
        Ok(Command::Run(args)) => args,
        Ok(Command::Help) => {
            print!("{}", args::HELP);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("demo: {e}");
            return ExitCode::from(2);
        }
    };
    let console = Console::default();
    let interrupt = match Interrupt::install(console.clone()) {
        Ok(interrupt) => interrupt,
        Err(e) => {
            eprintln!("demo: cannot catch Ctrl-C ({e}); not starting anything");
            return ExitCode::FAILURE;
        }
    };
    let mut demo = Demo::new(args, console, interrupt);
    let outcome = demo.run().await;
    let stopped = demo.stop().await;
    demo.summary(&outcome, stopped);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Stop::Interrupted) => ExitCode::from(130),
        Err(Stop::Failed(_)) => ExitCode::FAILURE,
    }
}

/// Why the story ended early.
#[derive(Debug)]
enum Stop {
    Interrupted,
    Failed(String),
}

impl From<Interrupted> for Stop {
    fn from(_: Interrupted) -> Self {
        Stop::Interrupted
    }
}

/// Everything the demo started, each part `None` until it runs.
struct Demo {
    args: Args,
    console: Console,
    interrupt: Interrupt,
    clock: Clock,
    /// What was going on (for "interrupted during …").
    phase: String,
    env: Option<TestEnv>,
    deployment: Option<Deployment>,
    app: Option<WebApp>,
    load: Option<Load>,
    load_started: Option<f64>,
    rotations: RotationWatch,
    switches: SwitchWatch,
    bootstrap: PathBuf,
}

/// What stopping found and did, for the summary.
#[derive(Default)]
struct Stopped {
    stats: Option<Arc<Stats>>,
    load_window: Option<(f64, f64)>,
    metrics: Option<Metrics>,
    leaks: Vec<&'static str>,
    leak_check: bool,
    /// How many `ALTER ROLE … PASSWORD` statements the server logged, and
    /// the last one cut after the start of its verifier.
    password_statements: (usize, Option<String>),
    processes: Vec<String>,
    removed: Vec<String>,
    left: Vec<String>,
}

impl Demo {
    fn new(args: Args, console: Console, interrupt: Interrupt) -> Demo {
        Demo {
            args,
            console,
            interrupt,
            clock: Clock::start(),
            phase: "start-up".into(),
            env: None,
            deployment: None,
            app: None,
            load: None,
            load_started: None,
            rotations: RotationWatch::new(SECRET),
            switches: SwitchWatch::default(),
            bootstrap: PathBuf::new(),
        }
    }

    fn say(&self, text: &str) {
        self.console.line(text);
    }

    async fn run(&mut self) -> Result<(), Stop> {
        self.start_stack().await?;
        self.start_app().await?;
        self.start_clients();
        self.phase = "the baseline before the first rotation".into();
        self.pause(Some(self.args.interval)).await?;
        self.baseline();
        if self.args.rotations > 0 {
            self.preflight().await?;
            let strategy = self.args.strategy;
            self.say(&format!(
                "\n==> {} ({strategy}): RotateSecret at the endpoint (what `aws secretsmanager rotate-secret` sends), {:.1} s apart",
                count(self.args.rotations as usize, "rotation"),
                self.args.interval.as_secs_f64()
            ));
            self.say("    #n token     each step as the function ran it │ when the app's new connections moved to the new version │ clients so far");
        }
        for n in 1..=self.args.rotations {
            self.rotate().await?;
            self.phase = format!("the steady load after rotation #{n}");
            self.pause(Some(self.args.interval)).await?;
        }
        if self.args.keep_running {
            self.by_hand().await?;
        }
        Ok(())
    }

    async fn start_stack(&mut self) -> Result<(), Stop> {
        let canonical = |p: PathBuf| p.canonicalize().unwrap_or(p);
        self.bootstrap = canonical(e2e::process::bootstrap_path());
        let web_app = canonical(e2e::web_app::web_app_path());
        self.say(
            "==> starting PostgreSQL 15 (TLS, scram-sha-256, statement log), moto, and the Secrets Manager endpoint",
        );
        let started = Instant::now();
        let env = TestEnv::start_full(Tls::On, self.args.strategy).await;
        self.say(&format!(
            "    PostgreSQL 127.0.0.1:{} (pid {}), moto {} (pid {}), endpoint (sm-local) {} in this process  [{:.1} s]",
            env.pg.port(),
            pid(env.pg.pid()),
            env.moto.endpoint(),
            pid(env.moto.pid()),
            env.endpoint.endpoint(),
            started.elapsed().as_secs_f64()
        ));
        self.say(&format!(
            "    rotation function {} (ROTATION_STRATEGY={}): {} ({})",
            env.function(),
            self.args.strategy,
            self.bootstrap.display(),
            build_kind(&self.bootstrap)
        ));
        self.say(&format!("    web app: {} ({})", web_app.display(), build_kind(&web_app)));
        if build_kind(&self.bootstrap) != "release build" || build_kind(&web_app) != "release build" {
            self.say("    (not the release build: times are several times the product's; `bash tests/demo.sh` runs the release build)");
        }
        self.env = Some(env);
        self.interrupt.check()?;
        Ok(())
    }

    fn env(&self) -> &TestEnv {
        self.env.as_ref().expect("started")
    }

    /// The app's environment: the endpoint (not moto) as Secrets Manager,
    /// connections that cycle in seconds, credential events at info and
    /// everything else at warn (a log that grows with requests would grow
    /// without bound in a demo that keeps running).
    fn app_vars(&self, deployment: &Deployment) -> Vec<(String, String)> {
        let env = self.env();
        let mut extra: Vec<(&str, &str)> = FAST_CYCLING.to_vec();
        extra.push(("RUST_LOG", "warn,web_app::credentials=info"));
        WebApp::env(env, &deployment.app_arn, &env.endpoint.endpoint(), &extra)
    }

    async fn start_app(&mut self) -> Result<(), Stop> {
        self.say("\n==> first deployment, as web-app/README.md tells a DBA: database notes, roles app_owner (schema) and app (DML only)");
        let started = Instant::now();
        let app_password = format!("Demo-{}", uuid::Uuid::new_v4().simple());
        let owner_password = format!("Demo-{}", uuid::Uuid::new_v4().simple());
        let env = self.env.as_mut().expect("started");
        let deployment = env.first_deployment(SECRET, &app_password, &owner_password).await;
        // Every statement that can carry a password (CREATE/ALTER ROLE) is
        // DDL and stays in the statement log; the app's DML would make the
        // log grow by about 0.5 MB/s for as long as the demo runs.
        env.pg
            .exec(&format!(
                "ALTER DATABASE {DBNAME} SET log_statement = 'ddl'; ALTER DATABASE {DBNAME} SET log_duration = off"
            ))
            .await;
        let master = if self.args.strategy == e2e::ALTERNATING_USERS {
            format!(", {SECRET}/master (the superuser: alternating users clone app with it)")
        } else {
            String::new()
        };
        self.say(&format!(
            "    secrets {SECRET} (app) and {SECRET}/owner (app_owner){master}  [{:.1} s]",
            started.elapsed().as_secs_f64()
        ));
        self.say(&format!(
            "    the statement log keeps every role statement; in {DBNAME}, DDL only (not a line per request)"
        ));
        self.deployment = Some(deployment.clone());
        self.interrupt.check()?;

        let vars = self.app_vars(&deployment);
        let started = Instant::now();
        let (code, output) = WebApp::migrate(&vars, &deployment.owner_arn).await;
        if code != Some(0) {
            return Err(Stop::Failed(format!("web-app migrate exited with {code:?}:\n{output}")));
        }
        self.say(&format!(
            "    web-app migrate with {SECRET}/owner: the notes table, owned by app_owner  [{:.1} s]",
            started.elapsed().as_secs_f64()
        ));
        self.interrupt.check()?;

        let started = Instant::now();
        let app = WebApp::spawn(&vars).await;
        let (user, version) = app.whoami().await;
        self.say(&format!(
            "\n==> web app (pid {}) serving http://{}; admin http://{}/metrics; logged in as {user}, version {}  [{:.1} s]",
            pid(app.pid()),
            app.addr(),
            app.admin_addr(),
            short(&version),
            started.elapsed().as_secs_f64()
        ));
        self.say("    Secrets Manager is the endpoint; connections live 2-4 s and DescribeSecret runs every second (defaults: 5 min, 60 s),");
        self.say("    so each rotation shows within a second or two");
        self.app = Some(app);
        self.interrupt.check()?;
        Ok(())
    }

    fn start_clients(&mut self) {
        let app = self.app.as_ref().expect("serving");
        let load = Load::start(app.addr(), app.admin_addr(), CLIENTS, PACE, self.clock);
        self.load_started = Some(self.clock.now());
        self.say(&format!(
            "    {CLIENTS} clients create, list and read notes and ask /whoami, {} ms apart each, from now to the end",
            PACE.as_millis()
        ));
        self.load = Some(load);
    }

    fn stats(&self) -> Option<&Arc<Stats>> {
        self.load.as_ref().map(|l| &l.stats)
    }

    /// The clients' rate and latency so far, before any rotation.
    fn baseline(&self) {
        let (Some(stats), Some(from)) = (self.stats(), self.load_started) else { return };
        let to = self.clock.now();
        // The first moments are the pool's warm-up, not the steady state.
        let from = from + (self.args.interval.as_secs_f64() / 5.0).min(0.5);
        let h = stats.histogram(from, to);
        let rate = h.count() as f64 / (to - from).max(0.1);
        self.say(&format!(
            "    baseline: {rate:.0} requests/s, p50 ≈ {}, p99 ≈ {}",
            ms_text(h.quantile_ms(0.5)),
            ms_text(h.quantile_ms(0.99))
        ));
    }

    /// Looks at the endpoint's rotation records and the app's log.
    fn poll(&mut self) -> Vec<Event> {
        let Some(env) = &self.env else { return Vec::new() };
        let events = self.rotations.poll(&env.endpoint, &self.clock);
        if let Some(app) = &self.app {
            self.switches.poll(&app.output(), &self.clock);
        }
        events
    }

    async fn sleep(&mut self, d: Duration) -> Result<(), Interrupted> {
        tokio::select! {
            () = tokio::time::sleep(d) => Ok(()),
            () = self.interrupt.wait() => Err(Interrupted),
        }
    }

    /// Waits `d` (for ever with `None`) or until Ctrl-C, following any
    /// rotation of the secret that somebody else starts meanwhile.
    async fn pause(&mut self, d: Option<Duration>) -> Result<(), Stop> {
        let until = d.map(|d| Instant::now() + d);
        loop {
            for event in self.poll() {
                if let Event::Started(r) = event
                    && !self.rotations.rotations[r].by_demo
                {
                    let phase = self.phase.clone();
                    self.follow(r).await?;
                    self.phase = phase;
                }
            }
            if until.is_some_and(|u| Instant::now() >= u) {
                return Ok(());
            }
            self.sleep(TICK).await?;
        }
    }

    /// The function's pre-flight on the app secret, once, as its table: would
    /// the first rotation succeed? (It writes nothing; README "Pre-flight".)
    async fn preflight(&mut self) -> Result<(), Stop> {
        let arn = self.deployment.as_ref().expect("deployed").app_arn.clone();
        let started = Instant::now();
        let env = self.env.as_mut().expect("started");
        let answer = env.invoke(&serde_json::json!({"Operation": "preflight", "SecretId": arn})).await;
        self.say("\n==> pre-flight: would a rotation succeed now? (the function checks, writes nothing)");
        let table = match answer {
            Ok(table) => table,
            Err(e) => {
                self.say(&format!("    the pre-flight failed: {}: {}", e.error_type, e.error_message));
                return Ok(());
            }
        };
        let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
        for row in table["checks"].as_array().into_iter().flatten() {
            let status = text(&row["status"]).to_uppercase();
            self.say(&format!("    {status:<4}  {:<40} {}", text(&row["check"]), text(&row["detail"])));
            if let Some(fix) = row["fix"].as_str() {
                self.say(&format!("          {:<40} fix: {fix}", ""));
            }
        }
        let ready = if table["ready"] == true { "ready" } else { "NOT ready" };
        self.say(&format!(
            "    {ready}: {} failed, {} warning(s)  [{:.1} s]",
            table["failed"],
            table["warnings"],
            started.elapsed().as_secs_f64()
        ));
        self.interrupt.check()?;
        Ok(())
    }

    /// One RotateSecret through the endpoint, followed to its end.
    async fn rotate(&mut self) -> Result<(), Stop> {
        let env = self.env();
        let arn = self.deployment.as_ref().expect("deployed").app_arn.clone();
        let token = env.rotate_secret(&arn, env.function()).await;
        self.rotations.started_by_demo(&token);
        loop {
            self.poll();
            if let Some(r) = self.rotations.rotations.iter().position(|m| m.token == token) {
                return self.follow(r).await;
            }
            self.sleep(TICK).await?;
        }
    }

    /// Prints rotation `r`'s line as it happens: steps as they end, then
    /// the app's switch to its version, then the clients' counts.
    async fn follow(&mut self, r: usize) -> Result<(), Stop> {
        let mark = &self.rotations.rotations[r];
        self.phase = format!("rotation #{}", mark.number);
        let who = if mark.by_demo { "" } else { "(by hand) " };
        self.console.part(&format!("    #{} {} {who} ", mark.number, mark.short()));
        let mut printed = 0;
        let mut ended: Option<Instant> = None;
        loop {
            self.poll();
            let mark = &self.rotations.rotations[r];
            while let Some(step) = mark.steps.get(printed).filter(|s| s.end.is_some()) {
                self.console.part(&step_text(step, printed == 0));
                printed += 1;
            }
            if mark.status.is_some() {
                if ended.is_none() {
                    ended = Some(Instant::now());
                    self.console.part(&outcome_text(mark));
                    if mark.status != Some(RotationStatus::Succeeded) {
                        break;
                    }
                }
                if let Some(s) = self.switches.switches.iter().find(|s| s.version == mark.token) {
                    let line = format!(" │ app → {} at +{:.2} s ({})", s.user, s.at - mark.started, s.why);
                    self.console.part(&line);
                    break;
                }
                if ended.is_some_and(|e| e.elapsed() > SWITCH_WAIT) {
                    self.console.part(" │ the app has not switched yet");
                    break;
                }
            }
            if self.sleep(TICK).await.is_err() {
                self.console.end_if_open(" …");
                return Err(Stop::Interrupted);
            }
        }
        let (ok, failed) = self.stats().map_or((0, 0), |s| s.counts());
        self.console.end(&format!(" │ {ok} answered, {failed} failed"));
        self.learn_passwords().await;
        Ok(())
    }

    /// The clients look for every stored password in every response.
    async fn learn_passwords(&mut self) {
        let Some(env) = self.env.as_mut() else { return };
        let passwords = env.known_passwords().await;
        if let Some(load) = &self.load {
            load.stats.watch_for(passwords);
        }
    }

    /// `--keep-running`: the command to rotate by hand, then follow until Ctrl-C.
    async fn by_hand(&mut self) -> Result<(), Stop> {
        self.phase = "--keep-running".into();
        let env = self.env();
        let aws = e2e::process::tool("aws");
        let aws = std::path::absolute(&aws).ok().filter(|p| p.exists()).unwrap_or(aws);
        let lambda = if self.args.rotations == 0 {
            format!(" --rotation-lambda-arn {}", env.lambda_arn(env.function()))
        } else {
            String::new()
        };
        let command = format!(
            "AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing {} secretsmanager rotate-secret --endpoint-url {} --region {} --secret-id {SECRET}{lambda}",
            aws.display(),
            env.endpoint.endpoint(),
            e2e::moto::REGION,
        );
        // An operator's emergency rotation is a direct invocation of the function.
        let emergency = format!(
            "AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing {} lambda invoke --endpoint-url {} --region {} \
             --function-name {} --payload '{{\"Operation\":\"emergency-rotation\",\"SecretId\":\"{SECRET}\"}}' /dev/stdout",
            aws.display(),
            env.endpoint.endpoint(),
            e2e::moto::REGION,
            env.function(),
        );
        let app = self.app.as_ref().expect("serving");
        let admin = app.admin_addr();
        self.say("\n==> everything stays up until Ctrl-C. To rotate by hand, paste this into another shell:");
        self.say(&format!("    {command}"));
        self.say("    or, as if the password had leaked (rotate now, end every session that logged in with it):");
        self.say(&format!("    {emergency}"));
        self.say(&format!(
            "    every rotation of {SECRET} shows here as it happens; the app: http://{}/notes, http://{admin}/whoami, http://{admin}/metrics",
            app.addr()
        ));
        self.pause(None).await
    }

    /// Stops everything that was started, in order, each by its PID: a
    /// rotation in flight may end first (under load, so that its picture is
    /// whole), then the clients, the web app, the function processes, moto,
    /// PostgreSQL; then the temporary directories go.
    async fn stop(&mut self) -> Stopped {
        let mut stopped = Stopped::default();
        self.poll();
        if let (Some(r), Some(env)) = (self.rotations.running(), &self.env) {
            let mark = &self.rotations.rotations[r];
            let grace = ROTATION_GRACE.as_secs();
            self.say(&format!(
                "    #{} {} is running: it may end first (at most {grace} s)",
                mark.number,
                mark.short()
            ));
            env.endpoint.wait_rotation(&mark.token, ROTATION_GRACE).await;
            self.poll();
            let mark = &self.rotations.rotations[r];
            let steps: String = mark.steps.iter().enumerate().map(|(i, s)| step_text(s, i == 0)).collect();
            let outcome = if mark.status.is_some() { outcome_text(mark) } else { " … still running".to_owned() };
            self.say(&format!("    #{} {}  {steps}{outcome}", mark.number, mark.short()));
        }
        if let Some(load) = self.load.take() {
            stopped.stats = Some(load.stop().await);
            stopped.load_window = self.load_started.map(|from| (from, self.clock.now()));
        }
        if let Some(mut app) = self.app.take() {
            stopped.metrics =
                app.admin_get("/metrics").await.ok().filter(|a| a.status == 200).map(|a| Metrics::parse(&a.body));
            let pid = pid(app.pid());
            let code = app.terminate().await;
            self.switches.poll(&app.output(), &self.clock);
            let exit = code.map_or_else(|| "killed".to_owned(), |c| format!("exit {c}"));
            stopped.processes.push(format!("web-app {pid} (SIGTERM, {exit})"));
            if let Some(env) = self.env.as_mut() {
                let passwords = env.known_passwords().await;
                let metrics = stopped.metrics.as_ref().map(|m| m.text.clone()).unwrap_or_default();
                if passwords.iter().any(|p| app.output().contains(p.as_str())) {
                    stopped.leaks.push("the web app's log");
                }
                if passwords.iter().any(|p| metrics.contains(p.as_str())) {
                    stopped.leaks.push("the web app's metrics");
                }
            }
        }
        if let Some(stats) = &stopped.stats
            && stats.leaks.load(Ordering::Relaxed) > 0
        {
            stopped.leaks.push("responses to the clients");
        }
        let Some(mut env) = self.env.take() else { return stopped };
        if self.deployment.is_some() {
            // Panics naming the place if a password leaked into the server's
            // statement log, the functions' output, moto's log, the endpoint's
            // records or any error.
            env.assert_no_leaks().await;
            stopped.leak_check = true;
            stopped.password_statements = password_statements(&env.pg.server_log());
        }
        let functions: Vec<String> = [SINGLE, SINGLE_TWIN, ALTERNATING, PROVISIONER]
            .iter()
            .filter_map(|f| env.pid(f).map(|pid| format!("{f} {pid} (SIGKILL, as Lambda ends a sandbox)")))
            .collect();
        env.endpoint.stop().await;
        stopped.processes.extend(functions);
        let moto = pid(env.moto.pid());
        env.moto.stop().await;
        stopped.processes.push(format!("moto {moto} (SIGKILL)"));
        let postgres = pid(env.pg.pid());
        env.pg.stop().await;
        stopped.processes.push(format!("PostgreSQL {postgres} (SIGINT: fast shutdown)"));
        let dirs = [
            (env.pg.dir().to_owned(), "the CA key, the superuser's password file, the statement log"),
            (env.moto.log_path().to_owned(), "moto's log"),
            (env.scratch_dir().to_owned(), "the processes' private socket directories"),
        ];
        drop(env);
        for (path, what) in dirs {
            if path.exists() {
                stopped.left.push(format!("{} ({what})", path.display()));
            } else {
                stopped.removed.push(format!("{} ({what})", path.display()));
            }
        }
        stopped
    }

    fn summary(&self, outcome: &Result<(), Stop>, stopped: Stopped) {
        let how = match outcome {
            Ok(()) => "done".to_owned(),
            Err(Stop::Interrupted) => format!("interrupted during {}", self.phase),
            Err(Stop::Failed(why)) => format!("stopped: {why}"),
        };
        self.say(&format!("\n==> summary ({how}, {:.1} s in all)", self.clock.now()));
        self.rotation_summary();
        if let (Some(stats), Some((from, to))) = (&stopped.stats, stopped.load_window) {
            let (ok, failed) = stats.counts();
            let h = stats.histogram(from, to + 1.0);
            self.say(&format!(
                "    clients: {ok} requests answered, {failed} failed in {:.1} s ({:.0}/s); p50 ≈ {}, p99 ≈ {}; database users seen: {}",
                to - from,
                (ok + failed) as f64 / (to - from).max(0.001),
                ms_text(h.quantile_ms(0.5)),
                ms_text(h.quantile_ms(0.99)),
                stats.users().join(", ")
            ));
            for failure in stats.failures() {
                self.say(&format!("      failed: {failure}"));
            }
        } else {
            self.say("    clients: none (stopped before the web app served)");
        }
        if let Some(m) = &stopped.metrics {
            self.say(&format!(
                "    the app's Secrets Manager calls: {} DescribeSecret (its change check), {} GetSecretValue",
                m.secretsmanager("DescribeSecret"),
                m.secretsmanager("GetSecretValue")
            ));
        }
        if let (n @ 1.., Some(example)) = &stopped.password_statements {
            self.say(&format!(
                "    the statement log has {n} ALTER ROLE … PASSWORD statements (deployment, rotations), each with a SCRAM verifier: {example}"
            ));
        }
        if !stopped.leaks.is_empty() {
            self.say(&format!("    A PASSWORD LEAKED into: {} (a bug: please report it)", stopped.leaks.join(", ")));
        } else if stopped.leak_check {
            self.say("    no password in the statement log, the function's or the app's output, moto's log, the endpoint's records,");
            self.say("    the app's metrics or its responses");
        }
        self.picture(&stopped);
        if !stopped.processes.is_empty() {
            self.say(&format!("    stopped, in order: {}", stopped.processes.join(", ")));
        }
        for dir in &stopped.removed {
            self.say(&format!("    removed {dir}"));
        }
        for dir in &stopped.left {
            self.say(&format!("    NOT REMOVED: {dir}"));
        }
    }

    fn rotation_summary(&self) {
        let all = &self.rotations.rotations;
        if all.is_empty() {
            self.say("    rotations: none");
            return;
        }
        let count = |s: RotationStatus| all.iter().filter(|r| r.status == Some(s)).count();
        let unfinished = all.iter().filter(|r| r.status.is_none()).count();
        let failed = count(RotationStatus::Failed) + count(RotationStatus::Cancelled);
        let succeeded: Vec<_> = all.iter().filter(|r| r.status == Some(RotationStatus::Succeeded)).collect();
        let steps = e2e::STEPS
            .iter()
            .map(|name| {
                let times: Vec<f64> =
                    succeeded.iter().filter_map(|r| r.steps.iter().find(|s| s.name == *name)?.ms()).collect();
                format!("{name} {}", ms_text(median(&times)))
            })
            .collect::<Vec<_>>()
            .join(", ");
        let totals: Vec<f64> = succeeded.iter().filter_map(|r| r.total_ms()).collect();
        let by_hand = all.iter().filter(|r| !r.by_demo).count();
        let by_hand = if by_hand > 0 { format!(" ({by_hand} by hand)") } else { String::new() };
        self.say(&format!(
            "    rotations: {} succeeded, {failed} failed, {unfinished} unfinished{by_hand}; median {}: {steps}",
            succeeded.len(),
            ms_text(median(&totals))
        ));
        for r in all.iter().filter(|r| r.error.is_some()) {
            self.say(&format!("      #{} {}: {}", r.number, r.short(), r.error.as_deref().unwrap_or_default()));
        }
        let delays: Vec<f64> = all
            .iter()
            .filter_map(|r| Some(self.switches.switches.iter().find(|s| s.version == r.token)?.at - r.started))
            .collect();
        let refused = self.switches.switches.iter().filter(|s| s.why != "change check").count();
        if !self.switches.switches.is_empty() {
            self.say(&format!(
                "    the app switched logins {} ({} by its change check, {refused} after a refused login), {} s after RotateSecret (median)",
                match self.switches.switches.len() {
                    1 => "once".to_owned(),
                    n => format!("{n} times"),
                },
                self.switches.switches.len() - refused,
                median(&delays).map_or_else(|| "-".to_owned(), |d| format!("{d:.2}"))
            ));
        }
    }

    fn picture(&self, stopped: &Stopped) {
        let (Some(stats), Some(load)) = (&stopped.stats, stopped.load_window) else {
            self.say("    picture: none (no client ran)");
            return;
        };
        let timeline = Timeline {
            title: format!(
                "{SECRET}: {} rotations ({}) while {CLIENTS} clients use the web app ({})",
                self.rotations.rotations.len(),
                self.args.strategy,
                build_kind(&self.bootstrap)
            ),
            load,
            buckets: stats.buckets(),
            rotations: self.rotations.rotations.clone(),
            switches: self.switches.switches.clone(),
        };
        let out = &self.args.out;
        let drawn = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or(Ok(()), std::fs::create_dir_all)
            .map_err(|e| e.to_string())
            .and_then(|()| timeline::draw(&timeline, out).map_err(|e| e.to_string()));
        match drawn {
            Ok(()) => {
                let path = std::fs::canonicalize(out).unwrap_or_else(|_| out.clone());
                self.say(&format!("    picture: {}", path.display()));
            }
            Err(e) => self.say(&format!("    picture: not drawn ({e})")),
        }
    }
}

/// `create 21 ms` (`, set 48 ms` after the first), `FAILED` when it failed.
fn step_text(step: &timeline::StepMark, first: bool) -> String {
    let failed = if step.ok == Some(true) { "" } else { " FAILED" };
    let sep = if first { "" } else { ", " };
    let name = step.name.trim_end_matches("Secret");
    step.ms().map_or_else(|| format!("{sep}{name} …"), |ms| format!("{sep}{name} {ms:.0} ms{failed}"))
}

/// ` = 107 ms`, or how and where a rotation failed.
fn outcome_text(mark: &timeline::RotationMark) -> String {
    match mark.status {
        Some(RotationStatus::Succeeded) => format!(" = {:.0} ms", mark.total_ms().unwrap_or(0.0)),
        Some(status) => format!(" ended {status:?}: {}", mark.error.as_deref().unwrap_or("no error recorded")),
        None => String::new(),
    }
}

/// How many `ALTER ROLE … PASSWORD` statements a server log holds, and the
/// last one, cut right after `SCRAM-SHA-256$4096:` (a verifier holds no
/// password, but there is no need to print one either).
fn password_statements(log: &str) -> (usize, Option<String>) {
    let statements: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split_once("statement: ").map(|(_, s)| s))
        .filter(|s| s.starts_with("ALTER ROLE ") && s.contains(" PASSWORD "))
        .collect();
    let example = statements.last().map(|s| match s.find("SCRAM-SHA-256$") {
        Some(i) => format!("{}…'", &s[..(i + "SCRAM-SHA-256$4096:".len()).min(s.len())]),
        None => "(not a SCRAM verifier!)".to_owned(),
    });
    (statements.len(), example)
}

/// `1 rotation`, `2 rotations`.
fn count(n: usize, what: &str) -> String {
    if n == 1 { format!("1 {what}") } else { format!("{n} {what}s") }
}

fn pid(pid: Option<u32>) -> String {
    pid.map_or_else(|| "?".to_owned(), |p| p.to_string())
}

fn short(id: &str) -> &str {
    &id[..8.min(id.len())]
}

fn ms_text(ms: Option<f64>) -> String {
    match ms {
        None => "-".to_owned(),
        Some(ms) if ms < 10.0 => format!("{ms:.1} ms"),
        Some(ms) => format!("{ms:.0} ms"),
    }
}

fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// `release build` or `debug build`, from where cargo put the binary.
fn build_kind(path: &Path) -> &'static str {
    if path.components().any(|c| c.as_os_str() == "release") {
        "release build"
    } else if path.components().any(|c| c.as_os_str() == "debug") {
        "debug build"
    } else {
        "build of unknown profile"
    }
}
