//! Emergency rotation: the leaked credential stops working everywhere.

use std::time::Duration;

use serde_json::Value;

use crate::{Deadline, RotationError, Rotator};

pub(crate) async fn run(
    _rotator: &Rotator,
    _secret_id: &str,
    _fleet_wait: Duration,
    _deadline: Deadline,
) -> Result<Value, RotationError> {
    Err(RotationError::Internal("emergency rotation is not built yet".into()))
}
