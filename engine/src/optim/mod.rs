//! Optimisers over the pastiche's pixels, each matching its torch.optim namesake.
//!
//! One call to [`Optimizer::step`] is one iteration: one Adam step, or one L-BFGS
//! iteration (torch.optim.LBFGS's `step` with `max_iter=1`). The render clamps the
//! pixels to [0, 1] between iterations, which is why an iteration is never longer.

mod adam;
mod lbfgs;

pub use adam::Adam;
pub use lbfgs::{Lbfgs, LbfgsConfig};

use pastiche_spec::{OptimizerKind, OptimizerSpec};
use tch::{Device, Tensor};

use crate::checkpoint::OptimizerState;
use crate::error::Result;

/// Evaluates the objective at a point: its value and its gradient there.
pub type Objective<'a> = dyn FnMut(&Tensor) -> Result<(f64, Tensor)> + 'a;

pub trait Optimizer {
    /// Moves `x` in place by one iteration and returns the objective's value at `x`
    /// before the move.
    fn step(&mut self, x: &mut Tensor, objective: &mut Objective<'_>) -> Result<f64>;

    /// A copy of everything the next steps depend on, on the host (for a
    /// [`Checkpoint`](crate::checkpoint::Checkpoint)).
    fn state(&self) -> Result<OptimizerState>;

    /// Takes up `state`, as [`state`](Self::state) gave it, with its tensors
    /// placed on `device`; `state` has passed [`check_state`].
    fn restore(&mut self, state: &OptimizerState, device: Device) -> Result<()>;
}

/// Whether `state` is a state of the optimiser `spec` names over `numel`
/// pixels: what [`Optimizer::restore`] needs is there, with the right sizes.
pub fn check_state(
    spec: &OptimizerSpec,
    state: &OptimizerState,
    numel: i64,
) -> std::result::Result<(), String> {
    match spec.kind {
        OptimizerKind::Adam => adam::check_state(state, numel),
        OptimizerKind::Lbfgs => lbfgs::check_state(state, numel, spec.history_size),
    }
}

/// That `name` is a float tensor of `numel` values.
fn check_tensor(state: &OptimizerState, name: &str, numel: i64) -> std::result::Result<(), String> {
    let tensor = state.tensor(name)?;
    if tensor.kind != tch::Kind::Float || tensor.numel() != numel {
        return Err(format!(
            "{name} is {:?} {:?}, not {numel} floats",
            tensor.kind, tensor.shape
        ));
    }
    Ok(())
}

/// A count kept as a number: whole and not negative.
fn count(state: &OptimizerState, name: &str) -> std::result::Result<u64, String> {
    let value = state.number(name)?;
    if value >= 0.0 && value.fract() == 0.0 && value < 2f64.powi(53) {
        Ok(value as u64)
    } else {
        Err(format!("{name} = {value} is not a count"))
    }
}

pub fn build(spec: &OptimizerSpec) -> Box<dyn Optimizer + Send> {
    match spec.kind {
        OptimizerKind::Adam => Box::new(Adam::new(spec.lr)),
        OptimizerKind::Lbfgs => Box::new(Lbfgs::new(LbfgsConfig {
            lr: spec.lr,
            history_size: spec.history_size,
            line_search: spec.line_search,
            ..LbfgsConfig::default()
        })),
    }
}
