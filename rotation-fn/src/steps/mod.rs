//! The four steps, one module each, all of the same shape: a `run` that
//! takes the step's context (and the operator's strategy where the step
//! depends on it) and says what it did.

pub(crate) mod create;
pub(crate) mod finish;
pub(crate) mod set;
pub(crate) mod test;

pub(crate) use crate::context::{Outcome, StepContext};

#[cfg(test)]
mod tests;
