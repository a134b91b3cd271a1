//! The database provisioner: the same binary, run by a deployment (a
//! CloudFormation custom resource, `_HANDLER=provision`), creates the logins a
//! new stack needs before the first rotation, so a first deploy works with no
//! manual SQL.
//!
//! Logged in as the master (AWSCURRENT of `MasterSecretArn`, a full or an
//! RDS-managed secret) into the application's database, over the same verified
//! TLS as rotations, it makes sure that:
//! - the owner role (the `OwnerSecretArn` secret's user) exists, can log in with
//!   that secret's AWSCURRENT password, and may create objects in schema
//!   `public`: schema changes (`web-app migrate`) run as this role, so every
//!   object belongs to it whichever alternating user is active;
//! - the application role (the base user of `AppSecretArn`) exists — created
//!   with AWSCURRENT's password, never changed afterwards: rotations own it —
//!   and gets DML, and only DML, on what the owner creates, through default
//!   privileges. `<app>_clone`, which the first alternating rotation creates as
//!   a member of `<app>`, inherits them.
//!
//! Every statement is idempotent; an Update runs the same steps, a Delete
//! does nothing (roles and data outlive the stack's resource). Passwords reach
//! the server only as SCRAM verifiers.

use std::sync::Arc;

use db_secret::{Connector, DbSecret, SecretError};
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};
use tracing::{Instrument as _, error, info, info_span};

use crate::config::DbConfig;
use crate::db::{self, Session};
use crate::deadline::Deadline;
use crate::error::{Credential, RotationError};
use crate::event::EventError;
use crate::sql;
use crate::stages::CURRENT;
use crate::store::{SecretStore, SecretsApi};
use crate::strategy::alternating::base_username;
use crate::strategy::{ServerFacts, set_password};

/// What the CDK Provider framework passes to its onEvent handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionEvent {
    pub request: Request,
    pub physical_id: Option<String>,
    pub master_arn: String,
    pub app_arn: String,
    pub owner_arn: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Create,
    Update,
    Delete,
}

impl ProvisionEvent {
    pub fn parse(value: &Value) -> Result<Self, EventError> {
        let request = match value.get("RequestType").and_then(Value::as_str) {
            Some("Create") => Request::Create,
            Some("Update") => Request::Update,
            Some("Delete") => Request::Delete,
            Some(other) => return Err(EventError::UnknownRequest(other.chars().take(20).collect())),
            None => return Err(EventError::Missing("RequestType")),
        };
        let properties = value.get("ResourceProperties").ok_or(EventError::Missing("ResourceProperties"))?;
        let property = |name: &'static str| {
            properties.get(name).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned)
        };
        Ok(Self {
            request,
            physical_id: value.get("PhysicalResourceId").and_then(Value::as_str).map(str::to_owned),
            master_arn: property("MasterSecretArn").ok_or(EventError::Missing("ResourceProperties.MasterSecretArn"))?,
            app_arn: property("AppSecretArn").ok_or(EventError::Missing("ResourceProperties.AppSecretArn"))?,
            owner_arn: property("OwnerSecretArn").ok_or(EventError::Missing("ResourceProperties.OwnerSecretArn"))?,
        })
    }
}

#[derive(Debug)]
pub struct Provisioner {
    store: SecretStore,
    connector: Connector,
    config: DbConfig,
}

impl Provisioner {
    pub fn new(api: Arc<dyn SecretsApi>, config: DbConfig) -> Self {
        let connector = Connector::new(config.tls, config.trust.clone(), "rotation-fn-provision");
        Self { store: SecretStore::new(api), connector, config }
    }

    pub async fn handle(&self, payload: &Value, deadline: Deadline) -> Result<Value, RotationError> {
        let event = ProvisionEvent::parse(payload).inspect_err(|e| error!(error = %e, "invalid provisioning event"))?;
        let span = info_span!("provision", request = ?event.request, app_secret = %event.app_arn);
        async {
            let result = self.run(&event, &deadline).await;
            match &result {
                Ok(v) => info!(physical_id = %v["PhysicalResourceId"], "provisioned"),
                Err(e) => error!(error = %e.report(), kind = e.kind(), "provisioning failed"),
            }
            result
        }
        .instrument(span)
        .await
    }

    async fn run(&self, event: &ProvisionEvent, deadline: &Deadline) -> Result<Value, RotationError> {
        if event.request == Request::Delete {
            let id = event.physical_id.clone().unwrap_or_else(|| "db-logins".into());
            return Ok(json!({ "PhysicalResourceId": id }));
        }
        let app = self.read(&event.app_arn, None, deadline).await?;
        let owner = self.read(&event.owner_arn, Some(&app), deadline).await?;
        let mut master = self.read(&event.master_arn, Some(&app), deadline).await?;
        // Grants on a database and its schema are made in that database.
        master.dbname = app.dbname.clone();
        let app_user = base_username(&app.username).to_owned();
        for (what, secret) in [("master", &master), ("owner", &owner)] {
            if !secret.same_server(&app) {
                return Err(inconsistent(&event.app_arn, format!("the {what} secret points at another server")));
            }
        }
        let names = [&master.username, &owner.username, &app_user];
        if names[0] == names[1] || names[0] == names[2] || names[1] == names[2] {
            return Err(inconsistent(
                &event.app_arn,
                "the master, owner and app users must be three different roles".into(),
            ));
        }

        let mut session = db::login(&self.connector, &master, Credential::Master, deadline).await?;
        let facts = ServerFacts::read(&mut session, deadline).await?;
        let (o, a, d) = (sql::quote_ident(&owner.username), sql::quote_ident(&app_user), sql::quote_ident(&app.dbname));

        if !role_exists(&mut session, &owner.username, deadline).await? {
            session.execute(&sql::create_login_role(&owner.username), deadline).await?;
            info!(role = %owner.username, "created the owner role");
        }
        set_password(&mut session, facts, &owner, deadline).await?;
        if role_exists(&mut session, &app_user, deadline).await? {
            info!(role = %app_user, "the app role exists; its password belongs to rotations and is left alone");
        } else {
            session.execute(&sql::create_login_role(&app_user), deadline).await?;
            let initial = app.with_credentials(app_user.clone(), app.password().clone());
            set_password(&mut session, facts, &initial, deadline).await?;
            info!(role = %app_user, "created the app role");
        }
        let statements = [
            format!("GRANT CONNECT ON DATABASE {d} TO {o}, {a}"),
            format!("GRANT USAGE, CREATE ON SCHEMA public TO {o}"),
            format!("GRANT USAGE ON SCHEMA public TO {a}"),
            // ALTER DEFAULT PRIVILEGES FOR ROLE needs membership in the owner.
            format!("GRANT {o} TO CURRENT_USER"),
            format!(
                "ALTER DEFAULT PRIVILEGES FOR ROLE {o} IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {a}"
            ),
            format!("ALTER DEFAULT PRIVILEGES FOR ROLE {o} IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {a}"),
        ];
        for statement in statements {
            session.execute(&statement, deadline).await?;
        }
        session.close().await;
        Ok(json!({
            "PhysicalResourceId": format!("db-logins/{}/{}/{}", app.dbname, app_user, owner.username),
            "Data": { "AppUsername": app_user, "OwnerUsername": owner.username },
        }))
    }

    /// AWSCURRENT of `arn`: a full secret, or (with `server`) a login for it.
    async fn read(&self, arn: &str, server: Option<&DbSecret>, deadline: &Deadline) -> Result<DbSecret, RotationError> {
        let credential = Credential::Current;
        let version = self
            .store
            .by_stage(arn, CURRENT, deadline)
            .await?
            .ok_or_else(|| RotationError::MissingVersion { arn: arn.to_owned(), credential, hint: "" })?;
        let invalid = |source| RotationError::InvalidSecret {
            arn: arn.to_owned(),
            credential,
            version: version.id.clone(),
            source,
        };
        let text = version.value.as_ref().ok_or_else(|| invalid(SecretError::NoSecretString))?;
        let secret = match server {
            None => DbSecret::parse(text.expose_secret()),
            Some(server) => DbSecret::parse_login_for(text.expose_secret(), server),
        }
        .map_err(invalid)?;
        self.config.tls.mode_for(&secret).map_err(|refused| RotationError::Refused {
            arn: arn.to_owned(),
            credential,
            version: version.id.clone(),
            detail: refused.to_string(),
        })?;
        Ok(secret)
    }
}

fn inconsistent(arn: &str, detail: String) -> RotationError {
    RotationError::Inconsistent { arn: arn.to_owned(), detail }
}

async fn role_exists(session: &mut Session, role: &str, deadline: &Deadline) -> Result<bool, RotationError> {
    session
        .run("checking whether a role exists", deadline, async |conn| {
            sqlx::query_scalar::<_, bool>(sql::ROLE_EXISTS).bind(role).fetch_one(conn).await
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_provider_frameworks_event() {
        let e = ProvisionEvent::parse(&json!({
            "RequestType": "Update", "PhysicalResourceId": "db-logins/app/app/app_owner",
            "ResourceProperties": {"ServiceToken": "arn:fn", "MasterSecretArn": "m", "AppSecretArn": "a", "OwnerSecretArn": "o"}
        }))
        .expect("valid");
        assert_eq!(
            (e.request, e.master_arn.as_str(), e.app_arn.as_str(), e.owner_arn.as_str()),
            (Request::Update, "m", "a", "o")
        );
        assert_eq!(e.physical_id.as_deref(), Some("db-logins/app/app/app_owner"));
        let missing =
            ProvisionEvent::parse(&json!({"RequestType": "Create", "ResourceProperties": {"MasterSecretArn": "m"}}));
        assert_eq!(missing, Err(EventError::Missing("ResourceProperties.AppSecretArn")));
        let rotation =
            ProvisionEvent::parse(&json!({"Step": "createSecret", "SecretId": "s", "ClientRequestToken": "t"}));
        assert_eq!(rotation, Err(EventError::Missing("RequestType")));
    }
}
