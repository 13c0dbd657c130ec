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
use tch::Tensor;

use crate::error::Result;

/// Evaluates the objective at a point: its value and its gradient there.
pub type Objective<'a> = dyn FnMut(&Tensor) -> Result<(f64, Tensor)> + 'a;

pub trait Optimizer {
    /// Moves `x` in place by one iteration and returns the objective's value at `x`
    /// before the move.
    fn step(&mut self, x: &mut Tensor, objective: &mut Objective<'_>) -> Result<f64>;
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
