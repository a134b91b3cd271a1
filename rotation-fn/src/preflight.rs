//! Pre-flight: would a rotation of this secret succeed right now? Checks
//! everything a rotation needs and writes nothing, to Secrets Manager or the
//! database.

use serde_json::Value;

use crate::{Deadline, RotationError, Rotator};

pub(crate) async fn run(_rotator: &Rotator, _secret_id: &str, _deadline: Deadline) -> Result<Value, RotationError> {
    Err(RotationError::Internal("pre-flight is not built yet".into()))
}
