//! Who changes whose password.
//!
//! - Single user: the user changes its own password. Simple, but between
//!   setSecret and finishSecret the database already has the new password
//!   while AWSCURRENT still holds the old one; clients must try AWSPENDING.
//! - Alternating users: a master user sets the password of whichever of
//!   `name` / `name_clone` is *not* current, so the credentials clients use
//!   keep working throughout, and old sessions are never cut off.

use crate::secret::{DbSecret, SecretError, alternate_username};

/// The strategy as configured (`ROTATION_STRATEGY`), before a secret is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrategyKind {
    SingleUser,
    AlternatingUsers,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Strategy {
    SingleUser,
    AlternatingUsers { master_arn: String },
}

impl Strategy {
    /// The configured strategy, or the one the secret implies: a secret
    /// naming a master secret (`masterarn`) rotates alternating users.
    pub fn resolve(kind: Option<StrategyKind>, secret: &DbSecret) -> Result<Self, SecretError> {
        match (kind, &secret.master_arn) {
            (Some(StrategyKind::SingleUser), _) | (None, None) => Ok(Strategy::SingleUser),
            (Some(StrategyKind::AlternatingUsers) | None, Some(arn)) => {
                Ok(Strategy::AlternatingUsers { master_arn: arn.clone() })
            }
            (Some(StrategyKind::AlternatingUsers), None) => Err(SecretError::Missing("masterarn")),
        }
    }

    /// The username the pending version carries.
    pub fn next_username(&self, current: &DbSecret) -> Result<String, SecretError> {
        match self {
            Strategy::SingleUser => Ok(current.username.clone()),
            Strategy::AlternatingUsers { .. } => alternate_username(&current.username),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(master: bool) -> DbSecret {
        let extra = if master { r#","masterarn":"arn:master""# } else { "" };
        DbSecret::parse(&format!(r#"{{"engine":"postgres","host":"h","username":"app","password":"p"{extra}}}"#))
            .expect("valid")
    }

    #[test]
    fn inferred_from_masterarn_unless_configured() {
        assert_eq!(Strategy::resolve(None, &secret(false)), Ok(Strategy::SingleUser));
        let alternating = Strategy::AlternatingUsers { master_arn: "arn:master".into() };
        assert_eq!(Strategy::resolve(None, &secret(true)), Ok(alternating.clone()));
        assert_eq!(Strategy::resolve(Some(StrategyKind::SingleUser), &secret(true)), Ok(Strategy::SingleUser));
        assert_eq!(
            Strategy::resolve(Some(StrategyKind::AlternatingUsers), &secret(false)),
            Err(SecretError::Missing("masterarn"))
        );
        assert_eq!(alternating.next_username(&secret(true)), Ok("app_clone".into()));
        assert_eq!(Strategy::SingleUser.next_username(&secret(true)), Ok("app".into()));
    }
}
