use tch::Tensor;

use super::{Objective, Optimizer};
use crate::error::Result;

/// Adam as torch.optim.Adam computes it (no weight decay, no AMSGrad).
pub struct Adam {
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    steps: i32,
    /// First and second moment estimates, created at the first step.
    moments: Option<(Tensor, Tensor)>,
}

impl Adam {
    pub fn new(lr: f64) -> Self {
        Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            steps: 0,
            moments: None,
        }
    }
}

impl Optimizer for Adam {
    fn step(&mut self, x: &mut Tensor, objective: &mut Objective<'_>) -> Result<f64> {
        let (loss, grad) = objective(x)?;
        let (exp_avg, exp_avg_sq) = match &mut self.moments {
            Some(moments) => moments,
            None => self
                .moments
                .insert((grad.f_zeros_like()?, grad.f_zeros_like()?)),
        };
        self.steps += 1;
        let _ = exp_avg.f_lerp_(&grad, 1.0 - self.beta1)?;
        let _ = exp_avg_sq.f_mul_scalar_(self.beta2)?;
        let _ = exp_avg_sq.f_add_(&grad.f_square()?.f_mul_scalar(1.0 - self.beta2)?)?;

        let bias_correction1 = 1.0 - self.beta1.powi(self.steps);
        let bias_correction2 = 1.0 - self.beta2.powi(self.steps);
        let step_size = self.lr / bias_correction1;
        let denom = exp_avg_sq
            .f_sqrt()?
            .f_div_scalar(bias_correction2.sqrt())?
            .f_add_scalar(self.eps)?;
        let _ = x.f_sub_(&exp_avg.f_div(&denom)?.f_mul_scalar(step_size)?)?;
        Ok(loss)
    }
}
