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
//!
//! Anchored: the event's secrets and the database must be the ones the stack
//! configured ([`Anchors`]); the owner is never the master, the app role or
//! its clone; a role that exists is reset only when it provably is this
//! stack's (the owner secret logs in as it), so an Update never touches an
//! unrelated role or undoes an owner rotation in progress.

use std::sync::Arc;

use db_secret::{Connector, DbSecret, SecretError};
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};
use tracing::{Instrument as _, error, info, info_span};

use crate::db_config::DbConfig;
use crate::deadline::Deadline;
use crate::error::{Credential, RotationError};
use crate::event::EventError;
use crate::guard::{CURRENT, PENDING};
use crate::roles;
use crate::session;
use crate::sql;
use crate::store::{SecretStore, SecretsApi};
use crate::strategy::ServerFacts;
use crate::strategy::alternating::{CLONE_SUFFIX, base_username};

/// What the CDK Provider framework passes to its onEvent handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProvisionEvent {
    pub request: Request,
    pub physical_id: Option<String>,
    pub master_arn: String,
    pub app_arn: String,
    pub owner_arn: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Request {
    Create,
    Update,
    Delete,
}

impl ProvisionEvent {
    pub(crate) fn parse(value: &Value) -> Result<Self, EventError> {
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

/// What the stack configured the provisioner for (environment variables the
/// CDK app sets): an event naming other secrets, or an app secret naming
/// another database, is refused. Unset values are not checked (local use).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Anchors {
    /// `PROVISION_MASTER_SECRET_ARN`, `PROVISION_APP_SECRET_ARN`,
    /// `PROVISION_OWNER_SECRET_ARN`.
    pub master_arn: Option<String>,
    pub app_arn: Option<String>,
    pub owner_arn: Option<String>,
    /// `PROVISION_DATABASE`: the only database grants are made in.
    pub database: Option<String>,
}

impl Anchors {
    pub fn from_env() -> Self {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Self {
        let set = |key: &str| var(key).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        Self {
            master_arn: set("PROVISION_MASTER_SECRET_ARN"),
            app_arn: set("PROVISION_APP_SECRET_ARN"),
            owner_arn: set("PROVISION_OWNER_SECRET_ARN"),
            database: set("PROVISION_DATABASE"),
        }
    }

    /// The event's secrets are the configured ones.
    fn check(&self, event: &ProvisionEvent) -> Result<(), String> {
        for (name, expected, got) in [
            ("MasterSecretArn", &self.master_arn, &event.master_arn),
            ("AppSecretArn", &self.app_arn, &event.app_arn),
            ("OwnerSecretArn", &self.owner_arn, &event.owner_arn),
        ] {
            if expected.as_ref().is_some_and(|e| e != got) {
                return Err(format!("ResourceProperties.{name} is not the secret this provisioner is configured for"));
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
pub struct Provisioner {
    store: SecretStore,
    connector: Connector,
    config: DbConfig,
    anchors: Anchors,
}

impl Provisioner {
    pub fn new(api: Arc<dyn SecretsApi>, config: DbConfig, anchors: Anchors) -> Self {
        let connector = Connector::new(config.tls, config.trust.clone(), "rotation-fn-provision");
        Self { store: SecretStore::new(api), connector, config, anchors }
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
        self.anchors.check(event).map_err(|detail| inconsistent(&event.app_arn, detail))?;
        let app = self.read(&event.app_arn, None, deadline).await?;
        if self.anchors.database.as_ref().is_some_and(|d| *d != app.dbname) {
            return Err(inconsistent(
                &event.app_arn,
                format!("the app secret names database {:?}, not PROVISION_DATABASE", app.dbname),
            ));
        }
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
        let app_clone = format!("{app_user}{CLONE_SUFFIX}");
        let names = [&master.username, &owner.username, &app_user];
        if names[0] == names[1] || names[0] == names[2] || names[1] == names[2] || owner.username == app_clone {
            return Err(inconsistent(
                &event.app_arn,
                "the master, owner and app users (and the app's clone) must be different roles".into(),
            ));
        }
        // An owner role that exists already is this stack's only if the owner
        // secret logs in as it: the provisioner never resets the password of
        // a role it cannot prove is its own (another stack's, a DBA's), and
        // never undoes a rotation of the owner secret in progress.
        let mut owner_logs_in = false;
        match session::login(&self.connector, &owner, Credential::Current, deadline).await {
            Ok(session) => {
                session.close().await;
                owner_logs_in = true;
            }
            Err(RotationError::Database { failure, .. }) if failure.is_auth() => {}
            Err(other) => return Err(other),
        }

        let mut session = session::login(&self.connector, &master, Credential::Master, deadline).await?;
        let facts = ServerFacts::read(&mut session, deadline).await?;
        let (o, a, d) = (sql::quote_ident(&owner.username), sql::quote_ident(&app_user), sql::quote_ident(&app.dbname));

        if !roles::exists(&mut session, &owner.username, deadline).await? {
            // One statement: a crash cannot leave a role without its password.
            let verifier = verifier_for(&owner, facts, deadline).await?;
            session.execute(&sql::create_login_role_with_password(&owner.username, &verifier), deadline).await?;
            info!(role = %owner.username, "created the owner role");
        } else if !owner_logs_in {
            session.close().await;
            let pending = self.store.by_stage(&event.owner_arn, PENDING, deadline).await?;
            let detail = if pending.is_some_and(|v| v.value.is_some()) {
                "the owner secret has a rotation in progress (AWSPENDING); provisioning again after it finishes \
                 leaves the database on the password the secret will hold"
            } else {
                "role exists but the owner secret's AWSCURRENT does not log in as it: it is not this stack's \
                 role, and its password is not reset; drop it, or set its password to the secret's"
            };
            return Err(RotationError::Refused {
                arn: event.owner_arn.clone(),
                credential: Credential::Current,
                version: owner.username.clone(),
                detail: detail.into(),
            });
        }
        if roles::exists(&mut session, &app_user, deadline).await? {
            info!(role = %app_user, "the app role exists; its password belongs to rotations and is left alone");
        } else {
            let initial = app.with_credentials(app_user.clone(), app.password().clone());
            let verifier = verifier_for(&initial, facts, deadline).await?;
            session.execute(&sql::create_login_role_with_password(&app_user, &verifier), deadline).await?;
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
            Some(app) => self.config.parse_login_beside(text.expose_secret(), app),
        }
        .map_err(invalid)?;
        self.config.admit(&secret).map_err(|detail| RotationError::Refused {
            arn: arn.to_owned(),
            credential,
            version: version.id.clone(),
            detail,
        })?;
        Ok(secret)
    }
}

async fn verifier_for(secret: &DbSecret, facts: ServerFacts, deadline: &Deadline) -> Result<String, RotationError> {
    crate::scram::verifier_off_runtime(secret.password().clone(), facts.scram_iterations, deadline).await
}

fn inconsistent(arn: &str, detail: String) -> RotationError {
    RotationError::Inconsistent { arn: arn.to_owned(), detail }
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
