//! TLS: verified by default, never a silent fall-back to plain text, and
//! plain text only with the operator's permission: the secret can ask for it,
//! only the function's configuration can allow it.

use e2e::{TestEnv, Tls};
use serde_json::json;

const OLD: &str = "Initial-Passw0rd-for-app";

#[tokio::test]
async fn a_server_without_tls_is_refused_not_used_in_plain_text() {
    let mut env = TestEnv::start_with(Tls::Off).await;
    let arn = env.create_user_and_secret("app-no-tls", "app", OLD).await;
    let failure = env.rotate(&arn).await.expect_err("TLS required");
    assert_eq!(failure.step, "setSecret");
    assert_eq!(failure.error.error_type, "DatabaseTlsFailed", "{}", failure.error.error_message);
    assert!(!env.pg.server_log().contains("connection authorized: user=app"), "no plaintext session was opened");
    assert_eq!(env.pg.login("app", OLD).await, Ok(()), "the password did not change");
    env.assert_no_leaks().await;
}

#[tokio::test]
async fn a_secret_asking_for_plain_text_is_refused_unless_the_operator_allows_it() {
    let mut env = TestEnv::start_with(Tls::Off).await;
    env.pg.set_password("app", OLD).await;
    let mut value = env.secret_json("app", OLD);
    value["ssl"] = json!(false);
    let arn = env.create_secret("app-ssl-false", &value).await;
    let log_before = env.pg.server_log().len();

    // DB_TLS unset = verify-full: whoever wrote the secret cannot turn TLS off.
    let failure = env.rotate(&arn).await.expect_err("refused");
    assert_eq!((failure.step, failure.error.error_type.as_str()), ("createSecret", "InvalidSecret"));
    let message = &failure.error.error_message;
    assert!(message.contains("DB_TLS=allow-plaintext") && message.contains("permanent"), "{message}");
    let token = env.version_with(&arn, "AWSPENDING").await.expect("the placeholder");
    assert_eq!(env.version_value(&arn, &token).await, None, "no pending value written");
    assert!(!env.pg.server_log()[log_before..].contains("connection authorized"), "no login was even tried");

    // The operator's permission, in the function's configuration.
    env.restart_function(&[("DB_TLS", "allow-plaintext")]).await;
    env.resume(&arn, &token).await.expect("plaintext when the operator allows what the secret asks");
    let current = env.value(&arn, "AWSCURRENT").await.expect("current");
    assert_eq!(current["ssl"], json!(false), "the key is kept");
    assert_eq!(env.pg.login("app", current["password"].as_str().expect("pw")).await, Ok(()));
    env.assert_no_leaks().await;
}

#[tokio::test]
async fn db_tls_disable_is_the_operators_opt_out() {
    let mut env = TestEnv::start_with(Tls::Off).await;
    let arn = env.create_user_and_secret("app-db-tls-disable", "app", OLD).await;
    env.restart_function(&[("DB_TLS", "disable")]).await;
    env.rotate(&arn).await.expect("plaintext when the operator says so");
    env.assert_no_leaks().await;
}

#[tokio::test]
async fn a_certificate_from_an_untrusted_ca_is_refused() {
    let mut env = TestEnv::start().await;
    let arn = env.create_user_and_secret("app-untrusted", "app", OLD).await;
    // Without DB_CA_BUNDLE the platform's roots apply, and they do not know
    // the test CA: exactly what a man in the middle's certificate looks like.
    env.restart_without("DB_CA_BUNDLE").await;
    let failure = env.rotate(&arn).await.expect_err("untrusted certificate");
    assert_eq!(failure.error.error_type, "DatabaseTlsFailed", "{}", failure.error.error_message);
    let message = &failure.error.error_message;
    assert!(message.contains("AWSCURRENT") && message.contains("UnknownIssuer"), "{message}");
    assert!(message.contains("permanent"), "{message}");
    assert_eq!(env.pg.login("app", OLD).await, Ok(()));
    env.assert_no_leaks().await;
}

#[tokio::test]
async fn a_missing_ca_bundle_file_stops_the_function_at_start_with_its_name() {
    let mut env = TestEnv::start().await;
    let arn = env.create_user_and_secret("app-no-bundle", "app", OLD).await;
    env.restart_function(&[("DB_CA_BUNDLE", "/nonexistent/rds-ca.pem")]).await;
    let failure = env.rotate(&arn).await.expect_err("the function cannot start");
    assert_eq!((failure.step, failure.error.error_type.as_str()), ("createSecret", "Runtime.ExitError"));
    let output = env.function_output();
    assert!(output.contains("DB_CA_BUNDLE /nonexistent/rds-ca.pem is not readable"), "{output}");
    assert_eq!(env.pg.login("app", OLD).await, Ok(()));
}

#[tokio::test]
async fn a_ca_bundle_is_trusted_alone_not_beside_the_platforms_roots() {
    let mut env = TestEnv::start().await;
    let arn = env.create_user_and_secret("app-bundle-alone", "app", OLD).await;
    // The operator's bundle is another CA; the platform's store (through
    // SSL_CERT_FILE) knows the server's. As libpq's sslrootcert: the bundle
    // alone decides, so a public CA's certificate for the name is not enough.
    let other = env.scratch_dir().join("other-ca");
    std::fs::create_dir_all(&other).expect("dir");
    let status = std::process::Command::new("openssl")
        .current_dir(&other)
        .args(["req", "-x509", "-days", "2", "-subj", "/CN=another CA", "-keyout", "ca.key", "-out", "ca.crt"])
        .args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
        .args(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl");
    assert!(status.success());
    let platform = env.pg.ca_bundle().display().to_string();
    let bundle = other.join("ca.crt").display().to_string();
    env.restart_function(&[("DB_CA_BUNDLE", &bundle), ("SSL_CERT_FILE", &platform)]).await;
    let failure = env.rotate(&arn).await.expect_err("the bundle does not know the server's CA");
    assert_eq!(failure.error.error_type, "DatabaseTlsFailed", "{}", failure.error.error_message);
    assert!(failure.error.error_message.contains("UnknownIssuer"), "{}", failure.error.error_message);
    // The platform's roots alone (no bundle) do know it.
    env.restart_function(&[("SSL_CERT_FILE", &platform), ("DB_CA_BUNDLE", "")]).await;
    let token = env.version_with(&arn, "AWSPENDING").await.expect("placeholder");
    env.resume(&arn, &token).await.expect("trusted through the platform's store");
    env.assert_no_leaks().await;
}
