//! The database as the README's first deployment sets it up, `web-app migrate`, and an
//! administrator's session kills.

use super::WebApp;
use crate::TestEnv;

/// The database the README's first-deployment SQL sets up.
pub const DBNAME: &str = "notes";
pub const OWNER_USER: &str = "app_owner";
pub const APP_USER: &str = "app";

/// The SQL block of web-app/README.md's "First deployment" section (the one after the
/// `<!-- first-deployment-sql -->` marker): tests run exactly what the README tells a DBA.
pub fn first_deployment_sql() -> String {
    let readme = include_str!("../../../web-app/README.md");
    let after_marker = &readme[readme.find("<!-- first-deployment-sql -->").expect("marker in the README")..];
    let start = after_marker.find("```sql\n").expect("sql block after the marker") + "```sql\n".len();
    let len = after_marker[start..].find("```").expect("end of the sql block");
    after_marker[start..start + len].to_owned()
}

/// What [`TestEnv::first_deployment`] created.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// The app's secret (`app`, DML only).
    pub app_arn: String,
    /// The schema owner's secret (`app_owner`), for `web-app migrate`.
    pub owner_arn: String,
}

impl TestEnv {
    /// A superuser session on the app's database.
    pub async fn superuser_on_app_db(&self) -> sqlx::PgConnection {
        use sqlx::Connection;
        let options = self.pg.options("postgres", self.pg.superuser_password(), DBNAME);
        sqlx::PgConnection::connect_with(&options).await.expect("superuser login to the app database")
    }

    /// The README's first deployment, on PostgreSQL 15's default privileges: database
    /// `notes`, the SQL block run as the master user, both passwords set (as SCRAM
    /// verifiers, like psql's `\password`), a secret for each login (the app's with
    /// `masterarn` for alternating users), nothing migrated yet.
    pub async fn first_deployment(&mut self, name: &str, app_password: &str, owner_password: &str) -> Deployment {
        self.pg.exec(&format!("CREATE DATABASE {DBNAME}")).await;
        let mut conn = self.superuser_on_app_db().await;
        let sql = first_deployment_sql();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{sql}"));
        let _ = sqlx::Connection::close(conn).await;
        self.pg.set_password(OWNER_USER, owner_password).await;
        self.pg.set_password(APP_USER, app_password).await;
        let mut owner = self.secret_json(OWNER_USER, owner_password);
        owner["dbname"] = DBNAME.into();
        let owner_arn = self.create_secret(&format!("{name}/owner"), &owner).await;
        let mut app = self.secret_json(APP_USER, app_password);
        app["dbname"] = DBNAME.into();
        if self.strategy() == crate::ALTERNATING_USERS {
            let mut master = self.secret_json("postgres", self.pg.superuser_password());
            master["dbname"] = DBNAME.into();
            let master_arn = self.create_secret(&format!("{name}/master"), &master).await;
            app["masterarn"] = master_arn.into();
        }
        let app_arn = self.create_secret(name, &app).await;
        Deployment { app_arn, owner_arn }
    }

    /// `web-app migrate` as the owner; panics unless it succeeds.
    pub async fn migrate(&self, deployment: &Deployment) {
        let vars = WebApp::env(self, &deployment.app_arn, &self.moto.endpoint(), &[]);
        let (code, output) = WebApp::migrate(&vars, &deployment.owner_arn).await;
        assert_eq!(code, Some(0), "web-app migrate failed:\n{output}");
    }

    /// `pg_terminate_backend` on every session the web app holds (verification logins
    /// included), as an administrator, a restart or a failover would end them. Returns
    /// how many there were.
    pub async fn terminate_app_sessions(&self) -> i64 {
        let mut conn = self.pg.superuser().await;
        let n: i64 = sqlx::query_scalar(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'web-app'",
        )
        .fetch_one(&mut conn)
        .await
        .expect("terminate the app's sessions");
        let _ = sqlx::Connection::close(conn).await;
        n
    }
}
