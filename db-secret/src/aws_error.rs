//! What a Secrets Manager error code means, decided once for both binaries:
//! which failures a retry can cure, which need someone to change something.

/// The class of a Secrets Manager service error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AwsErrorKind {
    NotFound,
    AccessDenied,
    /// Rate limits: a retry after a backoff succeeds.
    Throttled,
    /// The service (or the way to it) failed: a retry can succeed.
    Unavailable,
    /// Anything else (invalid parameters, a version in the wrong state, …).
    Other,
}

impl AwsErrorKind {
    /// Classifies a service error by its code and, where the code says
    /// nothing (moto answers an IAM denial as a bare 403), its HTTP status.
    pub fn of(code: &str, status: Option<u16>) -> Self {
        match code {
            "ResourceNotFoundException" => Self::NotFound,
            "AccessDeniedException" | "AccessDenied" => Self::AccessDenied,
            "ThrottlingException" | "TooManyRequestsException" | "RequestLimitExceeded" => Self::Throttled,
            "InternalServiceError"
            | "InternalFailure"
            | "ServiceUnavailable"
            | "ServiceUnavailableException"
            | "RequestTimeout" => Self::Unavailable,
            _ if code.starts_with("Throttling") => Self::Throttled,
            _ => match status {
                Some(403) => Self::AccessDenied,
                Some(429) => Self::Throttled,
                Some(s) if s >= 500 => Self::Unavailable,
                _ => Self::Other,
            },
        }
    }

    pub fn is_transient(self) -> bool {
        matches!(self, Self::Throttled | Self::Unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_statuses() {
        assert_eq!(AwsErrorKind::of("ThrottlingException", Some(400)), AwsErrorKind::Throttled);
        assert_eq!(AwsErrorKind::of("InternalServiceError", Some(500)), AwsErrorKind::Unavailable);
        assert_eq!(AwsErrorKind::of("", Some(503)), AwsErrorKind::Unavailable);
        assert_eq!(AwsErrorKind::of("", Some(403)), AwsErrorKind::AccessDenied);
        assert_eq!(AwsErrorKind::of("ResourceNotFoundException", Some(400)), AwsErrorKind::NotFound);
        assert_eq!(AwsErrorKind::of("InvalidRequestException", Some(400)), AwsErrorKind::Other);
        assert!(AwsErrorKind::of("TooManyRequestsException", None).is_transient());
        assert!(!AwsErrorKind::of("AccessDeniedException", Some(400)).is_transient());
    }
}
