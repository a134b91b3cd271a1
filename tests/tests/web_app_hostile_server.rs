//! The web app against a server that holds the database's certificate and
//! asks for a cleartext password or an MD5 hash: the login guard in
//! `db-secret` covers the app's pool too, so the app gives nothing away and
//! says why it cannot start.

use std::time::Duration;

use e2e::web_app::WebApp;
use e2e::{Ask, HostileServer, TestEnv};
use serde_json::json;

const PASSWORD: &str = "Web-App-Passw0rd-never-sent";

#[tokio::test]
async fn the_app_never_answers_a_server_asking_for_a_weak_password_form() {
    for (ask, named) in [(Ask::Cleartext, "a cleartext password"), (Ask::Md5, "an MD5 password hash")] {
        let mut env = TestEnv::start().await;
        let hostile = HostileServer::start(env.pg.dir(), ask).await;
        let mut value = env.secret_json("app", PASSWORD);
        value["port"] = json!(hostile.port());
        let arn = env.create_secret("app-web-impostor", &value).await;
        let pinned = format!("127.0.0.1:{}", hostile.port());
        let vars = WebApp::env(&env, &arn, &env.moto.endpoint(), &[("APP_DB_ENDPOINTS", &pinned)]);
        let (code, output) = WebApp::run_to_exit(&vars, Duration::from_secs(40)).await;
        assert!(matches!(code, Some(c) if c != 0), "exit code {code:?}\n{output}");
        assert!(output.contains(named), "the reason is named: {output}");
        assert!(!hostile.seen().is_empty(), "the app did reach the impostor");
        assert!(hostile.seen().iter().all(|s| s.answer.is_empty()), "nothing answered the request");
        assert!(!hostile.received(PASSWORD) && !output.contains(PASSWORD));
        env.assert_no_leaks().await;
    }
}
